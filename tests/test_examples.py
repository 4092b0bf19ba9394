"""The examples run and show what they claim."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name, impl):
    """Run an example script with the implementation under test, return its output lines."""
    env = dict(os.environ, CDEFERRED_NO_EXTENSIONS="1" if impl.name == "py" else "0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stderr == ""
    return completed.stdout.splitlines()


def test_layeredCancellation(impl):
    """
    The layers free their resources innermost first (Y, X, W), then the creator aborts, then
    the client sees its message.
    """
    assert run_example("layered_cancellation.py", impl) == [
        "W: hold a resource",
        "X: hold a resource",
        "Y: hold a resource",
        "Y: free the resource",
        "X: free the resource",
        "W: free the resource",
        "creator: abort the request",
        "client: client gave up",
    ]
