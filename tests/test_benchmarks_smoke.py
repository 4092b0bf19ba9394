"""Smoke test of the benchmark harness (benchmarks/): it runs, and produces a
figure for every scenario and implementation.  No timing is asserted."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import report  # noqa: E402
from benchmarks.scenarios import MEMORY_CALLBACKS, SCENARIOS  # noqa: E402

NO_EXTENSIONS = os.environ.get("CDEFERRED_NO_EXTENSIONS", "") not in ("", "0")
EXPECTED_IMPLEMENTATIONS = ["twisted"] + ([] if NO_EXTENSIONS else ["c"]) + ["py"]


import cdeferred  # noqa: E402

# Run from a scratch directory with the cdeferred this test imported first on
# the path (in CI an installed one: the checkout has no compiled core), and
# the checkout after it for the benchmarks package.
SUBPROCESS_ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(cdeferred.__file__))), ROOT]
    ),
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run in a subprocess: (completed process, JSON results)."""
    path = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(path)],
        cwd=path.parent, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    # Like conftest: without CDEFERRED_NO_EXTENSIONS=1 a missing C core is a failure.
    assert results["implementations"] == EXPECTED_IMPLEMENTATIONS, (
        f"skipped: {results['skipped']}")
    return proc, results


def test_every_implementation_is_measured(quick_run):
    """Twisted's Deferred, the pure-Python reference and (unless disabled) the C
    core are all present, with no errors."""
    _, results = quick_run
    assert results["implementations"] == EXPECTED_IMPLEMENTATIONS
    assert results["skipped"] == ({"c": "disabled by CDEFERRED_NO_EXTENSIONS"}
                                  if NO_EXTENSIONS else {})
    assert results["errors"] == []


def test_every_scenario_has_positive_times(quick_run):
    """Each scenario has a positive time for every implementation (the floor:
    one positive time), and a Twisted/<impl> ratio for every other one."""
    _, results = quick_run
    rows = {s["key"]: s for s in results["scenarios"]}
    assert list(rows) == [s.key for s in SCENARIOS]
    for scenario in SCENARIOS:
        row = rows[scenario.key]
        names = EXPECTED_IMPLEMENTATIONS if scenario.per_implementation else ["floor"]
        assert sorted(row["cells"]) == sorted(names), scenario.key
        for name in names:
            cell = row["cells"][name]
            assert cell["us"] > 0 and cell["loops"] >= 1, (scenario.key, name, cell)
            assert all(s > 0 for s in cell["samples_us"])
        if scenario.per_implementation:
            for name in EXPECTED_IMPLEMENTATIONS[1:]:
                assert row["ratios"][name] > 0, (scenario.key, name)


def test_summary_figures(quick_run):
    """Geometric mean, floor multiple and memory per pending Deferred are there
    for each implementation."""
    _, results = quick_run
    for name in EXPECTED_IMPLEMENTATIONS[1:]:
        assert results["geomean"][name] > 0
    for name in EXPECTED_IMPLEMENTATIONS:
        assert results["floor_multiple"][name] > 0
    mem = {row["callbacks"]: row for row in results["memory"]["rows"]}
    assert sorted(mem) == sorted(MEMORY_CALLBACKS)
    for row in mem.values():
        for name in EXPECTED_IMPLEMENTATIONS:
            assert row["bytes"][name] > 0, (row["callbacks"], name)
    if "c" in EXPECTED_IMPLEMENTATIONS:
        assert [t["key"] for t in results["targets"]] == [t[0] for t in report.TARGETS]


def test_text_and_markdown_output(quick_run):
    """The printed table names every scenario; the Markdown rendering of the
    same results has a row per scenario and the machine line."""
    proc, results = quick_run
    for scenario in SCENARIOS:
        assert scenario.title in proc.stdout
    md = report.render_markdown(results)
    assert md.startswith("Machine: ")
    for scenario in SCENARIOS:
        assert f"| {scenario.title} |" in md


def test_script_entry_point():
    """``python benchmarks/run.py`` works as well as ``-m``."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--list"],
        env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for scenario in SCENARIOS:
        assert scenario.key in proc.stdout
