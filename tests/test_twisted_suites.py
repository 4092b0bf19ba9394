"""
install() proven on Twisted's own code: Twisted's Deferred test suites
(shipped inside the installed Twisted) run under install(), and a real
twisted.web server + Agent client program gives the same results with and
without it.

Both run in subprocesses (install() must come first in a process, and these
runs must not leave this process's Twisted patched), through
``tools/run_twisted_suites.py`` and ``tools/web_roundtrip.py``.

Nothing is skipped silently: every test's outcome under install() must equal
its outcome on Twisted's own Deferred in the same environment, and trial's
summary must say PASSED, except for the tests in EXPECTED_FAILURES, which must
fail (strictly, like ``xfail_strict``).  Trial's summary lines are printed
(``pytest -s``) for the record.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NO_EXTENSIONS

import cdeferred

ROOT = Path(__file__).resolve().parent.parent
SUITES_RUNNER = ROOT / "tools" / "run_twisted_suites.py"
WEB_PROGRAM = ROOT / "tools" / "web_roundtrip.py"
PACKAGE_PARENT = str(Path(cdeferred.__file__).resolve().parent.parent)

#: Which of Twisted's test modules to run: the Deferred suites (the runner's
#: default) and, as a second check on a user of Deferred's internals, trial's
#: reporter tests.  Group -> (trial arguments, fewest tests that means every
#: module was found).
SUITE_GROUPS = {
    "deferred": ((), 250),  # Twisted 26.10 has 283
    "trial-reporter": (("twisted.trial.test.test_reporter",), 100),  # 144
}

#: Tests that cannot pass under install(), because they inspect pure-Python
#: internals that cannot exist in C: (implementation, test id) -> reason.
#: They must fail (strict).  Measured on Twisted 26.10: none in the Deferred
#: suites, for either implementation.
_TRIM = (
    "trial's reporter trims the frames of Twisted's pure-Python Deferred "
    "(__iter__ and _runCallbacks in defer.py) from the tracebacks it prints; "
    "the C core's methods have no Python frames, so there is nothing to "
    "recognise and the printed traceback keeps trial's own frames"
)
EXPECTED_FAILURES = {
    ("c", "twisted.trial.test.test_reporter.TracebackHandlingTests.test_deferred"): _TRIM,
    ("c", "twisted.trial.test.test_reporter.TracebackHandlingTests.test_exception"): _TRIM,
}

_RESULT_LINE = re.compile(
    r"^(?P<test>[A-Za-z_][\w.]*) \.\.\. .*"
    r"\[(?P<outcome>OK|FAILURE|ERROR|SKIPPED|TODO|SUCCESS!\?!)\]$"
)
_SUMMARY_LINE = re.compile(r"^(?P<verdict>PASSED|FAILED) \((?P<counts>[^)]*)\)$")
_RAN_LINE = re.compile(r"^Ran (?P<count>\d+) tests? in ")


def _environment(implementation):
    env = dict(os.environ)
    # The subprocess imports the cdeferred this process imported (the
    # installed package, or the checkout when it is on the path).
    env["PYTHONPATH"] = os.pathsep.join(
        [PACKAGE_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["CDEFERRED_NO_EXTENSIONS"] = "1" if implementation == "py" else "0"
    env.pop("PYTHONWARNINGS", None)
    return env


class TrialRun:
    """The parsed output of one run of tools/run_twisted_suites.py."""

    def __init__(self, output, returncode):
        self.output = output
        self.returncode = returncode
        self.outcomes = {}
        self.verdict = None
        self.counts = {}
        self.ran = None
        self.runnerLines = []
        for line in output.splitlines():
            line = line.rstrip()
            if line.startswith("cdeferred-runner: "):
                self.runnerLines.append(line[len("cdeferred-runner: ") :])
            match = _RESULT_LINE.match(line)
            if match:
                # A test can be reported twice (an error logged after it
                # passed): the worst report wins.
                previous = self.outcomes.get(match["test"])
                if previous is None or previous == "OK":
                    self.outcomes[match["test"]] = match["outcome"]
            match = _RAN_LINE.match(line)
            if match:
                self.ran = int(match["count"])
            match = _SUMMARY_LINE.match(line)
            if match:
                self.verdict = match["verdict"]
                self.counts = {
                    key.strip(): int(value)
                    for key, value in (
                        item.split("=") for item in match["counts"].split(",") if item
                    )
                }

    @property
    def summary(self):
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"{self.verdict} ({counts})"

    def notOK(self):
        return {test: o for test, o in self.outcomes.items() if o != "OK"}


def runSuites(tmp_path, group, implementation, install):
    """Run a group of Twisted's suites in a subprocess; the parsed result."""
    workdir = tmp_path / f"{group}-{implementation}-{'on' if install else 'off'}"
    workdir.mkdir()
    args = [sys.executable, str(SUITES_RUNNER)]
    if not install:
        args.append("--no-install")
    args += ["--", "--reporter=bwverbose", *SUITE_GROUPS[group][0]]
    proc = subprocess.run(
        args,
        cwd=workdir,
        env=_environment(implementation),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return TrialRun(proc.stdout, proc.returncode)


def _implementations():
    impls = []
    if not NO_EXTENSIONS:
        impls.append(pytest.param("c", marks=pytest.mark.c_extension))
    impls.append("py")
    return impls


_baselines = {}


@pytest.fixture
def baseline(tmp_path_factory, group):
    """The group's suites on Twisted's own Deferred, in this environment."""
    if group not in _baselines:
        run = runSuites(tmp_path_factory.mktemp("baseline"), group, "py", False)
        assert run.verdict == "PASSED", (
            "Twisted's own suites fail without install(): the environment is "
            "broken\n" + run.output[-5000:]
        )
        _baselines[group] = run
        print(f"\n[{group}, Twisted's own Deferred] {run.summary}")
    return _baselines[group]


@pytest.mark.parametrize("group", sorted(SUITE_GROUPS))
def test_baselineRanEverything(baseline, group):
    """
    Without install() the suites run in full: every module was found and
    no test is reported as anything but OK or skipped by Twisted itself, so
    the comparison below is against a complete run.
    """
    assert baseline.ran >= SUITE_GROUPS[group][1]
    assert len(baseline.outcomes) == baseline.ran
    assert set(baseline.notOK().values()) <= {"SKIPPED"}


@pytest.mark.parametrize("group", sorted(SUITE_GROUPS))
@pytest.mark.parametrize("implementation", _implementations())
def test_twistedSuitesUnderInstall(tmp_path, baseline, group, implementation):
    """
    Twisted's own suites pass with install() in effect: the same tests run,
    each with the same outcome as on Twisted's own Deferred (skips included),
    and trial's summary matches; the tests listed in EXPECTED_FAILURES for
    this implementation, and only they, fail.
    """
    run = runSuites(tmp_path, group, implementation, install=True)
    tail = run.output[-8000:]
    print(f"\n[{group}, install() of {implementation}] {run.summary}")

    # install() took effect before trial loaded anything.
    header = run.runnerLines[0]
    expected = {"c": "c", "py": "python"}[implementation]
    assert f"implementation={expected} " in header, header
    assert "installed=True" in header
    assert "defer.Deferred=cdeferred._install.Deferred" in header, header
    assert "succeed()=cdeferred._install.Deferred" in header, header
    assert run.runnerLines[-1] == "still bound to Twisted's own classes: none", tail

    assert run.ran == baseline.ran, tail
    assert set(run.outcomes) == set(baseline.outcomes), tail
    expectedFailures = {
        test for (impl, test) in EXPECTED_FAILURES if impl == implementation
    } & set(baseline.outcomes)
    differences = {
        test: (baseline.outcomes[test], outcome)
        for test, outcome in run.outcomes.items()
        if outcome != baseline.outcomes[test]
    }
    unexpected = {t: d for t, d in differences.items() if t not in expectedFailures}
    assert unexpected == {}, tail
    stillPassing = expectedFailures - set(differences)
    assert stillPassing == set(), "listed in EXPECTED_FAILURES but passed"
    if expectedFailures:
        assert run.verdict == "FAILED", tail
        assert run.counts.get("failures", 0) + run.counts.get("errors", 0) == len(
            expectedFailures
        ), tail
    else:
        assert run.verdict == "PASSED", tail
        assert run.counts == baseline.counts, tail
        assert run.returncode == 0, tail


# -- a real program -----------------------------------------------------------


def runWebProgram(implementation, install, requests=300):
    proc = subprocess.run(
        [sys.executable, str(WEB_PROGRAM), f"--install={install}", f"--requests={requests}"],
        env=_environment(implementation),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def webBaseline():
    """The web program on Twisted's own Deferred."""
    result = runWebProgram("py", "none")
    assert result["deferDeferred"] == "twisted.internet.defer.Deferred"
    assert all(c.startswith("twisted.internet.defer.") for c in result["deferredClasses"])
    return result


def test_webProgramBaseline(webBaseline):
    """
    The program exercises what it should: several hundred requests ending in
    successes, 404s, 500s, client time-outs and a refused connection.
    """
    assert webBaseline["requests"] == len(webBaseline["results"]) == 300
    assert webBaseline["statuses"] == [
        "200",
        "404",
        "500",
        "error:ResponseNeverReceived",
    ]
    assert webBaseline["refused"] == "ConnectionRefusedError"
    # The server logs each /fail request's error, and nothing is left unhandled.
    fails = sum(1 for r in webBaseline["results"] if r[1] == 500)
    assert webBaseline["logged"]["RuntimeError: "] == fails
    assert not any("Unhandled" in key for key in webBaseline["logged"])


def _webCases():
    cases = []
    for when in ("early", "late"):
        if not NO_EXTENSIONS:
            cases.append(pytest.param("c", when, marks=pytest.mark.c_extension))
        cases.append(pytest.param("py", when))
    return cases


@pytest.mark.slow
@pytest.mark.parametrize("implementation, install", _webCases())
def test_webProgramUnderInstall(webBaseline, implementation, install):
    """
    A twisted.web server and an Agent client on 127.0.0.1 doing 300 requests
    through inlineCallbacks, coroutines, a DeferredQueue, a DeferredLock, a
    DeferredSemaphore, gatherResults, DeferredList and time-outs give exactly
    the results they give without install(), and the Deferreds met on the
    way (Agent's, readBody's, the queue's, the helpers') are cdeferred's —
    also when install() runs after twisted.web and the reactor were imported.
    What it logs (server errors, warnings, unhandled errors) is the same too.
    """
    result = runWebProgram(implementation, install)
    assert result["deferDeferred"] == "cdeferred._install.Deferred"
    assert result["deferredClasses"] == [
        "cdeferred._install.Deferred",
        "cdeferred._install.DeferredList",
    ]
    assert result["results"] == webBaseline["results"]
    assert result["digest"] == webBaseline["digest"]
    assert result["refused"] == webBaseline["refused"]
    assert result["logged"] == webBaseline["logged"]
