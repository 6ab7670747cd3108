"""The built-in sampler for CPython 3.14+ (see :mod:`.sampler`).

Everything the sampler process imports (``child``, ``stacks``, ``ptrace``, ``ring``,
``attribution``, and :mod:`span_profiles._samplers.pprof`) uses the standard library only, and
this package imports nothing at all: the sampler process loads these modules without importing
``span_profiles`` itself (see :func:`launch.command`).
"""
