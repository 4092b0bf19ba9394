"""Timing and memory measurement.

Timing (a careful timeit, no dependency):

* Each (scenario, implementation) loop is first run once and checked, then
  calibrated: ``n`` doubles until one run takes a measurable time, then ``n`` is
  scaled so that one *sample* (one call of ``loop(n)``) lasts about
  ``sample_time``.  Calibration doubles as warm-up.
* Samples are then taken *interleaved*: in each of ``rounds`` rounds every
  implementation runs one sample, the starting implementation rotating from
  round to round, so drift of the machine (frequency, a neighbour's compile job)
  hits every column alike.  The floor is interleaved in the same way with the
  scenario it is compared with.
* The per-operation time of a sample is its duration / ``n``; a cell reports
  the minimum (default) or median over rounds; all samples go to the JSON output.
* The cyclic GC stays enabled (the cost of GC-tracked objects is part of an
  implementation's cost); a full collection runs before each scenario.

Memory: ``tracemalloc`` traces the allocations made while ``N`` pending
Deferreds are created and kept alive; the traced growth divided by ``N`` is the
size of one.  The list holding them is allocated before tracing starts.  Only
allocations through Python's allocators (``PyObject_*``/``PyMem_*``) are seen;
a C core that called ``malloc`` directly would look smaller than it is.
"""

import gc
import statistics
import time
import tracemalloc

from .scenarios import MEMORY_CALLBACKS, make_pending

_clock = time.perf_counter


class Cell:
    """The measurement of one scenario for one implementation."""

    def __init__(self):
        self.loops = 0
        self.samples = []  # seconds per operation
        self.error = None

    @property
    def min(self):
        return min(self.samples) if self.samples else None

    @property
    def median(self):
        return statistics.median(self.samples) if self.samples else None

    def value(self, stat):
        return self.min if stat == "min" else self.median


def _time(loop, n):
    t0 = _clock()
    loop(n)
    return _clock() - t0


def calibrate(loop, sample_time):
    """The loop count for which one run of ``loop`` lasts about ``sample_time``."""
    n = 1
    while True:
        elapsed = _time(loop, n)
        if elapsed >= sample_time / 4 or n >= 1 << 30:
            break
        # Jump towards the target when the first runs are far too short.
        if elapsed > 0:
            n = max(n * 2, min(n * 64, int(n * sample_time / 4 / elapsed)))
        else:
            n *= 64
    return max(1, round(n * sample_time / elapsed)) if elapsed > 0 else n


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


def run_group(scenarios, impls, rounds, sample_time):
    """Time ``scenarios`` for every implementation in ``impls`` (a dict name -> class),
    all interleaved in the same rounds.

    Usually a group is one scenario; the floor is grouped with the scenario it is
    compared with, so that the multiple divides figures taken at the same time.
    Returns ``[(scenario, {name: Cell})]``; for a scenario that does not use a
    Deferred (the floor) the dict has the single key ``"floor"``.
    """
    out = []
    targets = []  # (cell, loop), in round-robin order
    for scenario in scenarios:
        if scenario.per_implementation:
            loops = {name: scenario.make(D) for name, D in impls.items()}
        else:
            loops = {"floor": scenario.make(None)}
        cells = {}
        for name, loop in loops.items():
            cell = cells[name] = Cell()
            try:
                scenario.check(loop(1))
                cell.loops = calibrate(loop, sample_time)
            except Exception as e:
                cell.error = _describe(e)
                continue
            targets.append((cell, loop))
        out.append((scenario, cells))

    gc.collect()
    for r in range(rounds):
        k = r % len(targets) if targets else 0
        for cell, loop in targets[k:] + targets[:k]:
            if cell.error:
                continue
            try:
                elapsed = _time(loop, cell.loops)
            except Exception as e:
                cell.error = _describe(e)
                continue
            cell.samples.append(elapsed / cell.loops)
    return out


def measure_memory(D, callbacks, n, repeats):
    """Bytes traced per pending Deferred of class ``D`` with ``callbacks`` callbacks;
    the minimum over ``repeats`` measurements."""
    # Warm up: first-use allocations (method caches, shared dict keys, ...) are
    # not per-Deferred costs.
    warm = [make_pending(D, callbacks) for _ in range(100)]
    del warm
    results = []
    was_tracing = tracemalloc.is_tracing()
    for _ in range(repeats):
        holder = [None] * n
        indices = list(range(n))
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in indices:
                holder[i] = make_pending(D, callbacks)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            if not was_tracing:
                tracemalloc.stop()
        results.append((after - before) / n)
        del holder
    gc.collect()
    return min(results)


def run_memory(impls, n, repeats):
    """``{callbacks: {name: bytes or error string}}`` for MEMORY_CALLBACKS."""
    out = {}
    for callbacks in MEMORY_CALLBACKS:
        row = out[callbacks] = {}
        for name, D in impls.items():
            try:
                row[name] = measure_memory(D, callbacks, n, repeats)
            except Exception as e:
                row[name] = _describe(e)
    return out
