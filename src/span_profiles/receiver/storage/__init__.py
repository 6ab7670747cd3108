"""Storage: the SQLite database, written by one writer and read by anyone.

* :mod:`.schema`: the tables, the schema version, where the database lives, read-only connections;
* :mod:`.migrations`: older schema versions brought up to date when opened for writing;
* :mod:`.rollups`: the aggregates written with every profile, that the views read;
* :mod:`.writer`: :class:`~.writer.ProfileStore`, which stores uploads in one transaction each;
* :mod:`.retention`: :class:`~.retention.Retention`, the maximum age and size the writer keeps.

Reading is :mod:`span_profiles.receiver.query`'s job, on its own connections.
"""
