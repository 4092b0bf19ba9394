"""
``python -m cdeferred.demo`` runs to the end (exit status 0) and prints the
cleanup in the order the layers are meant to run it.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_demo(cwd, **env):
    proc = subprocess.run(
        [sys.executable, "-m", "cdeferred.demo"],
        cwd=cwd,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Unhandled error" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def section(lines, start, end):
    """The lines from the one starting with ``start`` to the first after it that
    starts with ``end`` (inclusive), stripped."""
    stripped = [line.strip() for line in lines]
    first = next(i for i, line in enumerate(stripped) if line.startswith(start))
    last = next(i for i in range(first + 1, len(stripped)) if stripped[i].startswith(end))
    return stripped[first : last + 1]


def in_order(lines, *prefixes):
    """Each prefix starts some line, in this order (other lines may come between)."""
    position = 0
    for prefix in prefixes:
        for i in range(position, len(lines)):
            if lines[i].startswith(prefix):
                position = i + 1
                break
        else:
            raise AssertionError(f"{prefix!r} not found in order in:\n" + "\n".join(lines))


def layers(lines):
    """The layers that cleaned up, in the order they did."""
    return [
        line.split(":", 2)[1].strip().split(" layer")[0]
        for line in lines
        if line.startswith("cleanup:")
    ]


@pytest.fixture(scope="module")
def demo():
    return run_demo(REPO)


def test_three_layers_clean_up_innermost_user_first(demo):
    lines = [line.strip() for line in demo]
    start = lines.index("cleanup 1: Y: lock released")
    assert lines[start : start + 5] == [
        "cleanup 1: Y: lock released",
        "cleanup 2: X: retry timer cancelled",
        "cleanup 3: W: connection #7 goes back to the pool",
        "cleanup 4: func: creator canceller stops the operation",
        "client errback: CancelledError('the client gave up')",
    ]
    assert "afterwards: pool=['connection #7'], lock held=False, pending timers=0" in lines


def test_interop_lines(demo):
    lines = [line.strip() for line in demo]
    assert "cdeferred waited on a Twisted Deferred, got 'from Twisted'" in lines
    assert "Twisted waited on a cdeferred Deferred, got 'from cdeferred'" in lines
    assert "Twisted Deferred's canceller reached through a cdeferred chain" in lines


def test_plain_fetches(demo):
    lines = [line.strip() for line in demo]
    assert "fetch /fast: b'fast page\\n'" in lines
    assert "fetch /missing: Error status=b'404' message=b'Not Found' body=b'nothing here'" in lines


def test_cancel_mid_body(demo):
    part = section(demo, "[cancel]", "after cancel:")
    assert layers(part) == ["decode", "body"]
    in_order(
        part,
        "client: d.cancel('user pressed stop')",
        "cleanup: decode layer:",
        "cleanup: body layer: closing the connection",
        "client: cancelled fetch failed with CancelledError('user pressed stop')",
        "after cancel: server connections open: 0, fetch timers pending: 0",
    )


def test_deactivate_before_connect(demo):
    part = section(demo, "[deactivate]", "after deactivate:")
    assert layers(part) == ["decode", "body", "request"]
    in_order(
        part,
        "client: d.deactivate()",
        "cleanup: request layer: cancelling the Agent request",
        "client: d.active=False, d.called=False",
        "after deactivate: server connections open: 0, fetch timers pending: 0",
    )
    assert not any("deactivated fetch" in line for line in part)


def test_early_fire_from_cache(demo):
    part = section(demo, "[early fire]", "after early fire:")
    assert layers(part) == ["decode", "body"]
    in_order(
        part,
        "client: d.callback(cache[url])",
        "client: cached fetch got b'cached copy of /slow'",
        "cleanup: body layer: closing the connection",
        "after early fire: server connections open: 0, fetch timers pending: 0",
    )


def test_timeout(demo):
    part = section(demo, "[timeout]", "after timeout:")
    assert layers(part) == ["timeout", "decode", "body"]
    in_order(
        part,
        "cleanup: timeout layer: 0.45s elapsed",
        "client: timed-out fetch failed with TimeoutError(",
        "cleanup: body layer: closing the connection",
        "after timeout: server connections open: 0, fetch timers pending: 0",
    )


def test_client_layer_first(demo):
    part = section(demo, "[client layer]", "after cancel:")
    assert layers(part) == ["client", "timeout", "decode", "body"]
    in_order(
        part,
        "client: d.cancel('closed the tab')",
        "cleanup: client layer: forget the progress bar",
        "cleanup: timeout layer: cancelling the 10s timer",
        "client: cancelled fetch failed with CancelledError('closed the tab')",
        "after cancel: server connections open: 0, fetch timers pending: 0",
    )


def test_speed_table_and_end(demo):
    lines = [line.strip() for line in demo]
    in_order(lines, "3. Speed, side by side", "4 callbacks, then fire", "demo finished")


def test_outside_the_repository_with_the_reference(tmp_path):
    """Away from the repository root the benchmarks package is not importable
    and the demo times 'four callbacks then fire' itself; on the pure-Python
    reference the web part behaves the same."""
    probe = subprocess.run(
        [sys.executable, "-c", "import cdeferred"], cwd=tmp_path, capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip("cdeferred is importable only from the repository root here")
    lines = run_demo(tmp_path, CDEFERRED_NO_EXTENSIONS="1")
    stripped = [line.strip() for line in lines]
    assert "implementation: python; isinstance(cdeferred.Deferred(), twisted Deferred) = True" in stripped
    assert "(benchmarks package not importable: built-in timing)" in stripped
    assert layers(section(lines, "[cancel]", "after cancel:")) == ["decode", "body"]
    assert layers(section(lines, "[timeout]", "after timeout:")) == ["timeout", "decode", "body"]
    in_order(stripped, "cleanup 1: Y: lock released", "cleanup 4: func: creator canceller", "demo finished")
