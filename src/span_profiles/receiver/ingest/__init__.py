"""Ingest: the bytes of an upload, decoded, checked against the limits and validated.

* :mod:`.decode`: Pyroscope's ``PushRequest`` and pprof codecs (protobuf), gzip within a budget;
* :mod:`.legacy`: the legacy ``/ingest`` upload of 0.x agents, as the same
  :class:`~span_profiles.receiver.model.Series`;
* :mod:`.limits`: :class:`~.limits.Limits`, what one request may hold and how long it may take;
* :mod:`.validate`: the rules a request passes before anything of it is stored;
* :mod:`.errors`: why a request is refused, with its HTTP status and Connect code.

Nothing here touches HTTP or the database: :mod:`span_profiles.receiver.web.ingest` reads the
body and hands the series to :mod:`span_profiles.receiver.storage`.
"""
