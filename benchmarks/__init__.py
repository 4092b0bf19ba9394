"""Side-by-side benchmarks of Twisted's Deferred, cdeferred's C core and its
pure-Python reference, timed in one process and interleaved.

Run ``python -m benchmarks.run`` from the repository root (``--help`` for options);
see ``benchmarks/README.md`` for what each scenario measures.
"""
