"""Shared fixtures: every behavioural test runs against each implementation.

Implementations (asyncio's CFutureTests / CSubFutureTests / PyFutureTests):
  c           the compiled core (cdeferred._cimpl)
  c-subclass  Python subclasses of the C classes (non-exact-type paths)
  py          the pure-Python reference (cdeferred._pydeferred)
  twisted     Twisted's own Deferred, only for tests of the Twisted-compatible
              subset (fixture ``compat``)

The C extension must be importable unless CDEFERRED_NO_EXTENSIONS=1 is set:
a missing build fails loudly instead of quietly testing only the reference.
"""

import os
import types

import pytest
from twisted.internet import defer

import cdeferred
from cdeferred import _pydeferred

NO_EXTENSIONS = os.environ.get("CDEFERRED_NO_EXTENSIONS", "") not in ("", "0")

if NO_EXTENSIONS:
    _cimpl = None
else:
    from cdeferred import _cimpl  # noqa: F401  (fails loudly when not built)


def _namespace(name, module):
    return types.SimpleNamespace(
        name=name,
        Deferred=module.Deferred,
        ControllableDeferred=module.ControllableDeferred,
        shield=module.shield,
        is_c=module is _cimpl,
    )


def _c_subclass_namespace():
    class SubDeferred(_cimpl.Deferred):
        pass

    class SubControllableDeferred(_cimpl.ControllableDeferred):
        pass

    ns = _namespace("c-subclass", _cimpl)
    ns.Deferred = SubDeferred
    ns.ControllableDeferred = SubControllableDeferred
    return ns


def _implementations():
    impls = []
    if _cimpl is not None:
        impls.append(pytest.param("c", marks=pytest.mark.c_extension))
        impls.append(pytest.param("c-subclass", marks=pytest.mark.c_extension))
    impls.append("py")
    return impls


_BUILDERS = {
    "c": lambda: _namespace("c", _cimpl),
    "c-subclass": _c_subclass_namespace,
    "py": lambda: _namespace("py", _pydeferred),
}


@pytest.fixture(scope="session", params=_implementations())
def impl(request):
    """An implementation of the full cdeferred API (Deferred with cancellers,
    ControllableDeferred, shield)."""
    return _BUILDERS[request.param]()


@pytest.fixture(scope="session", params=["twisted"] + _implementations())
def compat(request):
    """A Deferred class for tests of behaviour shared with Twisted: Twisted's own
    Deferred is the oracle, the other implementations must match it."""
    if request.param == "twisted":
        return types.SimpleNamespace(name="twisted", Deferred=defer.Deferred, is_c=False)
    return _BUILDERS[request.param]()


@pytest.fixture
def captured_log():
    """Events emitted through twisted.logger while the test runs."""
    from twisted.logger import globalLogPublisher

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def pytest_collection_modifyitems(config, items):
    """Without the C core, tests marked ``c_extension`` are skipped, loudly."""
    if not NO_EXTENSIONS:
        return
    skip = pytest.mark.skip(reason="CDEFERRED_NO_EXTENSIONS=1: no C core to test")
    for item in items:
        if item.get_closest_marker("c_extension") is not None:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"cdeferred implementation: {cdeferred.IMPLEMENTATION}"
