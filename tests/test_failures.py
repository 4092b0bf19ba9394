"""
The Failures the C core builds itself (csrc/failure.c) against the ones
Twisted's Deferred makes through Failure.__init__: the same attributes and
values, `parents` filled in from the start, the failure counter advanced, and
Failure() itself called whenever the fast path would not be exact (debug
mode, a patched Failure, a Failure raised as an exception).
"""

import pickle
import sys

import pytest
from twisted.internet import defer
from twisted.python import failure as failure_module
from twisted.python.failure import Failure

import cdeferred

pytestmark = pytest.mark.skipif(cdeferred._cimpl is None, reason="needs the C core")

CDeferred = cdeferred._CDeferred


class AppError(KeyError):
    pass


class NotAnException(BaseException):
    pass


def _raising(exc):
    def callback(_):
        raise exc

    return callback


def from_callback(D, exc):
    d = D()
    d.addCallback(_raising(exc))
    d.callback(None)
    return d


def from_errback_in_except(D, exc):
    d = D()
    try:
        raise exc
    except BaseException:
        d.errback()
    return d


def from_errback_exception(D, exc):
    d = D()
    d.errback(exc)
    return d


ROUTES = [from_callback, from_errback_in_except, from_errback_exception]
EXCEPTIONS = [
    lambda: ValueError("v"),
    lambda: AppError("k"),
    lambda: NotAnException("b"),
    lambda: defer.CancelledError(),
    lambda: ZeroDivisionError(),
]


def take_failure(d):
    failure = d.result
    d.addErrback(lambda _: None)
    return failure


def comparable(failure):
    """What a Failure holds, in a form equal across the two builders."""
    state = dict(vars(failure))
    state.pop("count")
    state.pop("_parents", None)
    state["tb"] = state["tb"] is not None
    return state


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("make_exc", EXCEPTIONS, ids=["value", "app", "base", "cancelled", "zero"])
def test_sameFailureAsTwisted(route, make_exc):
    exc_twisted, exc_c = make_exc(), make_exc()
    twisted_failure = take_failure(route(defer.Deferred, exc_twisted))
    c_failure = take_failure(route(CDeferred, exc_c))

    assert type(c_failure) is Failure
    twisted_state, c_state = comparable(twisted_failure), comparable(c_failure)
    assert twisted_state.pop("value") is exc_twisted
    assert c_state.pop("value") is exc_c
    assert c_state == twisted_state
    # The keys in Failure.__init__'s order, `_parents` (filled in) last --
    # the one difference: Twisted fills it on the first check()/trap().
    assert list(vars(c_failure)) == ["count", "type", "value", "captureVars", "tb", "_parents"]
    assert "_parents" not in vars(twisted_failure)
    assert c_failure.parents == twisted_failure.parents
    # Failure(exc) keeps exc as BaseException's args, Failure() none.
    assert [type(a) for a in c_failure.args] == [type(a) for a in twisted_failure.args]
    assert all(a is exc_c for a in c_failure.args)
    assert c_failure.getErrorMessage() == twisted_failure.getErrorMessage()
    assert c_failure.check(type(exc_c)) is type(exc_c)
    assert c_failure.check(KeyError) == twisted_failure.check(KeyError)
    restored = pickle.loads(pickle.dumps(c_failure))
    assert restored.parents == twisted_failure.parents
    assert restored.type is type(exc_c)


def test_countAdvancesAsFailureInitDoes():
    before = failure_module.count
    take_failure(from_callback(CDeferred, ValueError()))
    after_c = failure_module.count
    Failure(ValueError())
    assert after_c == before + 1
    assert failure_module.count == after_c + 1


def test_parentsAreFreshListsPerFailure():
    first = take_failure(from_callback(CDeferred, ValueError()))
    second = take_failure(from_callback(CDeferred, ValueError()))
    assert first.parents == second.parents
    assert first.parents is not second.parents
    first.parents.append("x")
    assert "x" not in second.parents


def test_trapReraisesWhatItDoesNotMatch():
    d = from_callback(CDeferred, AppError("k"))
    seen = []
    d.addErrback(lambda f: f.trap(ValueError))
    d.addErrback(lambda f: seen.append(f.type))
    assert seen == [AppError]


def test_classRenamedAfterFirstFailureUsesTheNewName():
    class Renamed(Exception):
        pass

    take_failure(from_callback(CDeferred, Renamed()))
    Renamed.__module__ = "elsewhere"
    failure = take_failure(from_callback(CDeferred, Renamed()))
    assert failure.parents[0] == "elsewhere.Renamed"
    assert failure.parents == Failure(Renamed()).parents


def test_manyClassesDoNotGrowTheCacheWithoutBound():
    classes = [type(f"E{i}", (Exception,), {}) for i in range(2000)]
    for cls in classes:
        failure = take_failure(from_callback(CDeferred, cls()))
        assert failure.parents[0] == f"{__name__}.{cls.__name__}"


def test_debugModeCallsFailureWithCaptureVars():
    CDeferred.debug = True
    try:
        failure = take_failure(from_callback(CDeferred, ValueError()))
    finally:
        del CDeferred.debug
    assert failure.captureVars is True
    assert "_parents" not in vars(failure)


def test_failureRaisedAsExceptionIsCopiedByFailureInit():
    inner = Failure(ValueError("inner"))
    failure = take_failure(from_callback(CDeferred, inner))
    assert failure.type is ValueError
    assert failure.value is inner.value


def test_patchedFailureInitIsCalled(monkeypatch):
    calls = []
    original = Failure.__init__

    def recording(self, *args, **kwargs):
        calls.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Failure, "__init__", recording)
    take_failure(from_callback(CDeferred, ValueError()))
    take_failure(from_errback_exception(CDeferred, ValueError()))
    d = CDeferred()
    d.addErrback(lambda _: None)
    d.cancel()
    assert len(calls) == 3
    monkeypatch.undo()
    calls.clear()
    take_failure(from_callback(CDeferred, ValueError()))
    assert calls == []  # the fast path is back once Failure is restored


def test_propertyOnFailureIsHonoured(monkeypatch):
    stored = []

    def set_tb(self, value):
        stored.append(value)
        self.__dict__["tb"] = value

    monkeypatch.setattr(
        Failure, "tb", property(lambda self: self.__dict__["tb"], set_tb), raising=False
    )
    take_failure(from_callback(CDeferred, ValueError()))
    assert len(stored) == 1


def test_errbackWithNothingHandledRaisesAsTwisted():
    for D in (defer.Deferred, CDeferred):
        assert sys.exc_info() == (None, None, None)
        with pytest.raises(failure_module.NoCurrentExceptionError):
            D().errback()
