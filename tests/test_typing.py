"""
The type stubs shipped with cdeferred (cdeferred/*.pyi, py.typed), checked
with mypy against the cdeferred this test run imports:

- the stubs themselves pass ``mypy --strict``;
- tests/typing/good.py, typed user code using every public name, passes
  ``mypy --strict`` (exit 0, no output), and runs;
- tests/typing/bad.py, which misuses the API, fails with exactly the errors
  marked ``# E: <code>`` on its lines, so the check cannot pass vacuously (a
  stub that mypy does not find, or that takes everything, misses them);
- ``mypy.stubtest`` finds the stubs consistent with the run-time objects of
  the implementation in use (C, or the Python reference with
  CDEFERRED_NO_EXTENSIONS=1), but for the allowlisted differences.

mypy runs in a subprocess from an empty directory, so it resolves ``cdeferred``
the way a user's mypy would: from the installed package when the tests run
against one (CI), from the source tree otherwise.
"""

import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

import cdeferred

pytest.importorskip(
    "mypy", reason="mypy is not installed (it comes with the test extras: pip install '.[test]')"
)

TYPING = Path(__file__).resolve().parent / "typing"
PACKAGE = Path(cdeferred.__file__).resolve().parent

#: Errors mypy reports: "path:line: error: message  [code]".
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
#: Expected errors in bad.py: "# E: code[, code...]" at the end of a line.
EXPECTED = re.compile(r"#\s*E:\s*(?P<codes>[a-z-]+(?:\s*,\s*[a-z-]+)*)")


def _importRoot():
    """
    The directory to put on MYPYPATH/PYTHONPATH so that subprocesses see the
    cdeferred imported here, or None when it is an installed package (found
    through site-packages anyway; mypy refuses site-packages on MYPYPATH).
    """
    root = PACKAGE.parent
    sitePackages = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        sitePackages.add(site.getusersitepackages())
    if any(root == Path(p).resolve() for p in sitePackages):
        return None
    return root


def _environ():
    env = dict(os.environ)
    for name in ("MYPYPATH", "MYPY_CACHE_DIR", "PYTHONPATH"):
        env.pop(name, None)
    root = _importRoot()
    if root is not None:
        env["MYPYPATH"] = env["PYTHONPATH"] = str(root)
    return env


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """An empty directory to run in, with an empty mypy config (so no user or
    project config applies) and a cache shared by this module's runs."""
    path = tmp_path_factory.mktemp("typing")
    (path / "mypy.ini").write_text("[mypy]\n")
    return path


def _mypy(workdir, *args):
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(workdir / "mypy.ini"),
        "--cache-dir",
        str(workdir / ".mypy_cache"),
        "--strict",
        "--show-error-codes",
        "--no-color-output",
        "--no-error-summary",
        "--no-pretty",
        *args,
    ]
    return subprocess.run(
        command, cwd=workdir, env=_environ(), capture_output=True, text=True, timeout=300
    )


def _errors(output, filename):
    """{(line, code)} of the errors mypy reported in ``filename``."""
    found = set()
    for line in output.splitlines():
        match = ERROR.match(line)
        if match and Path(match["path"]).name == filename:
            found.add((int(match["line"]), match["code"]))
    return found


def _expectedErrors(path):
    expected = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = EXPECTED.search(line)
        if match:
            for code in match["codes"].split(","):
                expected.add((number, code.strip()))
    return expected


def test_stubsShip():
    """py.typed and the stubs sit next to the modules they describe (in the
    installed package when the tests run against one)."""
    for name in ("py.typed", "__init__.pyi", "web.pyi"):
        assert (PACKAGE / name).is_file(), f"{name} missing from {PACKAGE}"


def test_stubsPassStrict(workdir):
    # By module name: mypy refuses file paths inside site-packages, and checks
    # (and reports on) a module named on its command line even there.
    result = _mypy(workdir, "-m", "cdeferred", "-m", "cdeferred.web")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_goodPassesStrict(workdir):
    result = _mypy(workdir, str(TYPING / "good.py"))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_badFailsWithTheMarkedErrors(workdir):
    bad = TYPING / "bad.py"
    expected = _expectedErrors(bad)
    assert len(expected) >= 20, "bad.py lost its # E: markers"
    result = _mypy(workdir, str(bad))
    assert result.returncode == 1, result.stdout + result.stderr
    found = _errors(result.stdout, bad.name)
    assert {
        "expected but not reported": sorted(expected - found),
        "reported but not expected": sorted(found - expected),
    } == {"expected but not reported": [], "reported but not expected": []}, result.stdout
    # Every line of output is one of those errors or a note about one.
    for line in result.stdout.splitlines():
        assert ERROR.match(line) or ": note: " in line, line


def test_goodRuns(tmp_path):
    """What the stubs accept in good.py also works at run time."""
    result = subprocess.run(
        [sys.executable, str(TYPING / "good.py")],
        cwd=tmp_path,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"on the {cdeferred.IMPLEMENTATION} implementation" in result.stdout, result.stdout
    assert "all checks: ok" in result.stdout, result.stdout


def test_stubsMatchRuntime(workdir, tmp_path):
    """mypy.stubtest: every name, signature and class in the stubs matches the
    run-time object of the implementation in use."""
    command = [
        sys.executable,
        "-m",
        "mypy.stubtest",
        "cdeferred",
        "--mypy-config-file",
        str(TYPING / "stubtest.ini"),
        "--allowlist",
        str(TYPING / "stubtest-allowlist.txt"),
        "--allowlist",
        str(TYPING / f"stubtest-allowlist-{cdeferred.IMPLEMENTATION}.txt"),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=_environ(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
