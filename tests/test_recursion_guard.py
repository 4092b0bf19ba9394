"""
Chains that nest through C callbacks (no Python frame in between) must end in
RecursionError like Twisted's pure-Python chains do, never in a C stack
overflow.  Each scenario runs in a subprocess so a crash fails the test
instead of killing the test run.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import cdeferred

# The subprocess imports the cdeferred this test run imported, installed or not.
_ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(cdeferred.__file__))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    ),
)

SCENARIOS = {
    "chainDeferred": """
        ds = [D() for i in range(100_000)]
        for a, b in zip(ds, ds[1:]):
            a.chainDeferred(b)
        ds[-1].addBoth(out.append)
        ds[0].callback(1)
    """,
    "ControllableDeferred": """
        first = D()
        d = first
        for i in range(100_000):
            d = C(d)
        d.addBoth(out.append)
        first.callback(1)
    """,
    "self-wait cancel": """
        d = D()
        d.addCallback(lambda _: d)
        d.callback(None)
        try:
            d.cancel()
        except RecursionError:
            out.append("RecursionError")
    """,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_deepCChainEndsInRecursionErrorNotACrash(impl, name, tmp_path):
    """A chain nested 100,000 deep through C callbacks fails with RecursionError; the process
    survives and collects the chain."""
    if impl.name == "c-subclass":
        pytest.skip("the subclasses live in conftest; the C classes cover this path")
    script = tmp_path / "deep.py"  # a file, so warnings can locate the lambdas
    script.write_text(
        textwrap.dedent(
            f"""
            import gc, warnings
            warnings.simplefilter("ignore")
            import {impl.Deferred.__module__} as module
            D = module.{impl.Deferred.__name__}
            C = module.{impl.ControllableDeferred.__name__}
            out = []
            """
        )
        + textwrap.dedent(SCENARIOS[name])
        + textwrap.dedent(
            """
            gc.collect()
            print("survived", out[-1] if out else None)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=_ENV
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "survived" in result.stdout
    # The error surfaces either from the call or as a logged unhandled Failure
    # of the Deferred in the chain where the limit was reached.
    assert "RecursionError" in result.stdout + result.stderr
