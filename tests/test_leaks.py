"""Reference and memory leak loops, one subprocess per operation.

Each case runs ``tests/isolated/leakcheck.py OPERATION``: the operation is warmed
up, then repeated 20,000 times, and the script fails if the refcount of any
object it used (callables, arguments, results, exceptions, type objects) moved
or if tracemalloc's traced memory grew by 100 kB or more.  A separate
interpreter keeps the measurement free of whatever the rest of the suite left
behind, and a crash there fails one test only.
"""

import os
import re
import subprocess
import sys

import pytest

import cdeferred

pytestmark = pytest.mark.c_extension

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "isolated", "leakcheck.py")
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(cdeferred.__file__)))
SELF_CHECK = "deliberate-leak"


def _operations():
    with open(SCRIPT, encoding="utf-8") as f:
        names = re.findall(r"^@operation\ndef (\w+)\(", f.read(), flags=re.MULTILINE)
    return [n.replace("_", "-") for n in names]


OPERATIONS = _operations()


def run_leakcheck(operation, implementation="c"):
    """Run the leak loop for one operation in a fresh interpreter."""
    if cdeferred._CDeferred is None and implementation == "c":
        pytest.skip("C extension disabled")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env["PYTHONFAULTHANDLER"] = "1"
    return subprocess.run(
        [sys.executable, SCRIPT, operation, implementation],
        capture_output=True, text=True, timeout=180, env=env,
    )


def test_operations_found():
    """The script's operations are found, the self-check among them."""
    assert len(OPERATIONS) > 30
    assert SELF_CHECK in OPERATIONS


@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op != SELF_CHECK])
def test_no_leak(operation):
    """Repeating the operation 20,000 times leaks no references and no memory."""
    proc = run_leakcheck(operation)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.startswith(f"ok {operation}:")


def test_leak_checker_catches_a_leak():
    """An operation that keeps every Deferred it makes is reported, by refcount and by memory."""
    proc = run_leakcheck(SELF_CHECK)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"LEAK in {SELF_CHECK}:")
    assert "refcounts changed" in proc.stdout
    assert "<class 'cdeferred.Deferred'>" in proc.stdout
    assert "traced memory grew" in proc.stdout
