"""Wall-clock span profiles: where each request's time went, on CPU and waiting.

A request's wall profile holds the time from its span's start to its end, by stack: on CPU with
the CPU stack; suspended with its tasks' await chains (``Pool.acquire``, ``Lock.acquire``, an
HTTP client's send, ``asyncio.sleep``); its worker threads blocked in I/O or sleep with their
stacks. Pushed as a second profile type (series ``__name__=wall``, sample type
``wall``/``nanoseconds``) beside the CPU profile, with the same labels, settings and exit flush.

Where the samples come from is each sampler's part (one contract, no second producer):

* the built-in sampler (CPython 3.14+) reads them in its own process:
  :mod:`span_profiles._samplers.builtin.wall` (every task's await chain from
  ``get_all_awaited_by()``, blocked worker threads, the CPU samples it already takes);
* with pyroscope-io (CPython 3.10-3.14) an in-process producer does:
  :mod:`.inprocess` (request tasks walked from their event loop, the on-CPU part timed from the
  label changes the per-step hooks already make, worker threads via ``sys._current_frames()``).

Both weigh samples by elapsed time through one :class:`.account.Account`, so that a request's
wall total is its duration; both bound the work per read at any number of tasks. This package
imports nothing heavy: the built-in sampler's process imports :mod:`.account`.
"""
