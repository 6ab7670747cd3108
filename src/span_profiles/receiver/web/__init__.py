"""Web: the receiver over HTTP (Starlette on uvicorn).

* :mod:`.app`: :func:`~.app.create_app`, the one place the app is built;
* :mod:`.ingest`: the push and legacy ingest endpoints (body limits, gzip, the Connect errors);
* :mod:`.ui`: the pages and the JSON API;
* :mod:`.pages`: the Jinja2 templates, and the self-contained page files the CLI writes;
* :mod:`.protocol`: the guard in front of uvicorn's h11 protocol (slow and noisy clients);
* :mod:`.server`: :class:`~.server.Receiver`, uvicorn serving the app;
* ``static/``, ``templates/``: the vendored front-end, the page scripts and the templates.
"""
