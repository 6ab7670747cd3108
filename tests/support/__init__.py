"""What the tests share, in one place; no test module imports another.

* :mod:`.servers`: real servers in subprocesses, ports, the agent's environment;
* :mod:`.app_servers`, :mod:`.examples`, :mod:`.routing`: run an app or an example under a real
  server with the real agent, and check each request's profile;
* :mod:`.apps`: the apps those servers run (Starlette, FastAPI, Flask, Django, a CPU burner);
* :mod:`.asgi`, :mod:`.asgi_client`, :mod:`.wsgi_client`, :mod:`.otel_parity`: label probes,
  in-process ASGI/WSGI drivers, the OTel parity comparisons;
* :mod:`.checkpoints`, :mod:`.labels`: label checkpoints inside the code under test;
* :mod:`.cpu`, :mod:`.logs`, :mod:`.profiler`, :mod:`.placement`: small fixtures' parts;
* :mod:`.receiver`, :mod:`.known_shares`, ``data/``, ``speedscope/``: receiver uploads, stores of
  known shares, captured agent uploads and the speedscope schema.
"""
