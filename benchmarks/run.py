"""Run the benchmarks: ``python -m benchmarks.run`` (or ``python benchmarks/run.py``)
from the repository root.

Times every scenario for Twisted's Deferred, cdeferred's C core and its
pure-Python reference in one process, interleaved, and prints microseconds per
operation, the Twisted/C and Twisted/Py ratios, their geometric means, the floor
multiple and memory per pending Deferred.  See benchmarks/README.md.
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import harness, report  # noqa: E402
from benchmarks.implementations import IMPLEMENTATIONS, SKIPPED, TITLES, versions  # noqa: E402
from benchmarks.scenarios import (  # noqa: E402
    FLOOR_COMPARED, FLOOR_KEY, SCENARIOS, SCENARIOS_BY_KEY,
)

# (rounds, seconds per sample, memory repeats): about 20 s in normal mode with all
# three implementations on a 2-core machine; a couple of seconds with --quick.
NORMAL = (40, 0.010, 3)
QUICK = (3, 0.002, 1)
MEMORY_N = 10000


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Side-by-side timings of Twisted's Deferred, cdeferred's C core "
                    "and its pure-Python reference.",
    )
    p.add_argument("--quick", action="store_true",
                   help="a few seconds in total (few rounds, short samples); for smoke tests")
    p.add_argument("--markdown", action="store_true",
                   help="print the Markdown tables for the README instead of the text table")
    p.add_argument("--json", metavar="PATH", help="also write all results (every sample) to PATH")
    p.add_argument("--rounds", type=int, help="interleaved rounds per scenario")
    p.add_argument("--sample-time", type=float, metavar="SECONDS",
                   help="target duration of one sample")
    p.add_argument("--stat", choices=("min", "median"), default="min",
                   help="statistic over the rounds reported per cell (default: min)")
    p.add_argument("--impl", action="append", choices=sorted(TITLES), metavar="NAME",
                   help="only these implementations (repeatable; twisted is always kept "
                        "as the baseline)")
    p.add_argument("--scenario", action="append", metavar="KEY",
                   help="only these scenarios (repeatable; see --list)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


def _list():
    for s in SCENARIOS:
        print(f"{s.key:22} {s.title}\n{'':22} {s.doc}")
    for name, cls in IMPLEMENTATIONS.items():
        print(f"implementation {name}: {cls.__module__}.{cls.__qualname__}")
    for name, why in SKIPPED.items():
        print(f"implementation {name}: skipped ({why})")


def _groups(scenarios):
    """Scenarios timed together: the floor with the scenario it is compared with."""
    keys = [s.key for s in scenarios]
    groups = []
    for s in scenarios:
        if s.key == FLOOR_KEY and FLOOR_COMPARED in keys:
            continue
        group = [s]
        if s.key == FLOOR_COMPARED and FLOOR_KEY in keys:
            group.append(SCENARIOS_BY_KEY[FLOOR_KEY])
        groups.append(group)
    return groups


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        _list()
        return 0

    rounds, sample_time, mem_repeats = QUICK if args.quick else NORMAL
    rounds = args.rounds or rounds
    sample_time = args.sample_time or sample_time

    impls = dict(IMPLEMENTATIONS)
    if args.impl:
        keep = set(args.impl) | {"twisted"}
        impls = {k: v for k, v in impls.items() if k in keep}
    scenarios = SCENARIOS
    if args.scenario:
        unknown = [k for k in args.scenario if k not in SCENARIOS_BY_KEY]
        if unknown:
            print(f"unknown scenario(s): {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        scenarios = [s for s in SCENARIOS if s.key in args.scenario]

    def say(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    say(f"implementations: {', '.join(impls)}"
        + (f" (skipped: {', '.join(SKIPPED)})" if SKIPPED else ""))
    scenario_cells = []
    for group in _groups(scenarios):
        say(f"[{len(scenario_cells) + 1}/{len(scenarios)}] {' + '.join(s.key for s in group)}")
        scenario_cells += harness.run_group(group, impls, rounds, sample_time)

    memory = {}
    if not args.no_memory:
        say(f"memory (N={MEMORY_N})")
        memory = harness.run_memory(impls, MEMORY_N, mem_repeats)

    settings = {
        "rounds": rounds,
        "sample_time": sample_time,
        "stat": args.stat,
        "quick": args.quick,
        "memory_n": MEMORY_N,
        "memory_repeats": mem_repeats,
    }
    results = report.build_results(report.machine_info(versions()), settings, list(impls),
                                   SKIPPED, scenario_cells, memory)
    results["settings"]["elapsed_s"] = round(time.perf_counter() - started, 2)
    say(f"done in {results['settings']['elapsed_s']:.1f} s")

    print(report.render_markdown(results) if args.markdown else report.render_text(results))
    if args.json:
        report.write_json(results, args.json)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
