"""
cdeferred's DeferredList and gatherResults against Twisted's.

Every test runs on five variants:

  twisted         Twisted's DeferredList/gatherResults over Twisted's Deferreds:
                  the oracle
  c               the C DeferredList (cdeferred._cimpl) over C Deferreds
  c-over-twisted  the C DeferredList over Twisted's Deferreds
  twisted-over-c  Twisted's DeferredList over C Deferreds
  installed       after cdeferred.install(): twisted.internet.defer's own names
                  (the stand-in DeferredList on DeferredListCore)

Expected values are Twisted's behaviour (checked by the ``twisted`` variant);
where a scenario is easier to describe by what happens than by a literal, the
test runs it on the oracle and on the variant and compares the traces.  A
Hypothesis differential test at the end runs random lists, flags, firing orders
and cancellations on the oracle and each other variant and compares every
event: results, member results afterwards, resultList, finishedCount, logs.

CDEFERRED_HYPOTHESIS_EXAMPLES sets its number of examples (default 150).
"""

import contextlib
import gc
import os
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import LogLevel, globalLogBeginner, globalLogPublisher
from twisted.python.failure import Failure

import cdeferred
from cdeferred import _install

_cimpl = cdeferred._cimpl

EXAMPLES = int(os.environ.get("CDEFERRED_HYPOTHESIS_EXAMPLES", "150"))

NEEDS_C = [
    pytest.mark.c_extension,
    pytest.mark.skipif(_cimpl is None, reason="the C core is not built"),
]

C_VARIANTS = ["c", "c-over-twisted", "twisted-over-c", "installed"]


C_LISTS = ["c", "c-over-twisted", "installed"]  # the variants with the C DeferredList


def known_difference(request, variants, reason):
    """Mark this run a strict expected failure on `variants`: a difference of
    the C DeferredList from Twisted's that is known (README, "Known
    differences") and not fixed yet; it fails loudly the day it is."""
    if request.node.callspec.params.get("dl_name") in variants:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

PENDING = "<pending>"
CANCELLER_LOG = "Exception raised from user supplied canceller"
UNHANDLED_LOG = "Unhandled error in Deferred:"

TwistedDeferred = _install._TwistedDeferred
TwistedDeferredList = _install._TwistedDeferredList


class Boom(Exception):
    pass


class Stop(BaseException):
    """Not an Exception: Twisted's cancel() still catches and logs it."""


def _ns(name, Deferred, DeferredList, gatherResults, ensureDeferred):
    return types.SimpleNamespace(
        name=name,
        Deferred=Deferred,
        DeferredList=DeferredList,
        gatherResults=gatherResults,
        ensureDeferred=ensureDeferred,
    )


@contextlib.contextmanager
def variant(name):
    """The Deferred, DeferredList, gatherResults and ensureDeferred of a variant."""
    if name == "twisted":
        yield _ns(name, TwistedDeferred, TwistedDeferredList, defer.gatherResults,
                  defer.ensureDeferred)
    elif name == "c":
        yield _ns(name, _cimpl.Deferred, _cimpl.DeferredList, _cimpl.gatherResults,
                  _cimpl.ensureDeferred)
    elif name == "c-over-twisted":
        yield _ns(name, TwistedDeferred, _cimpl.DeferredList, _cimpl.gatherResults,
                  _cimpl.ensureDeferred)
    elif name == "twisted-over-c":
        yield _ns(name, _cimpl.Deferred, TwistedDeferredList, defer.gatherResults,
                  defer.ensureDeferred)
    elif name == "installed":
        assert _install.installed() is None, "a previous test left install() in effect"
        _install.install()
        try:
            assert defer.DeferredList is not TwistedDeferredList
            yield _ns(name, defer.Deferred, defer.DeferredList, defer.gatherResults,
                      defer.ensureDeferred)
        finally:
            _install.uninstall()
        assert defer.DeferredList is TwistedDeferredList
    else:
        raise ValueError(name)


def run_on(name, scenario):
    with variant(name) as ns:
        return scenario(ns)


def compare(name, scenario):
    """Run scenario on variant name, then on the oracle (never inside
    install(): Twisted's own DeferredList would then build on the installed
    Deferred); return both results."""
    return run_on(name, scenario), run_on("twisted", scenario)


@pytest.fixture(
    params=["twisted"] + [pytest.param(name, marks=NEEDS_C) for name in C_VARIANTS]
)
def dl_name(request):
    """The name of a variant, for tests that compare it with the oracle."""
    return request.param


@pytest.fixture
def dl(dl_name):
    """A variant's classes and helpers (install() in effect for "installed")."""
    with variant(dl_name) as ns:
        yield ns


@contextlib.contextmanager
def observing(observer):
    """observer sees every log event meanwhile.  Until logging begins, Twisted
    keeps recent events in a buffer; a Failure kept there keeps its traceback's
    frames, and through them Deferreds, alive until it drops out (during some
    later test): the buffer is detached meanwhile."""
    buffer = getattr(globalLogBeginner, "_temporaryObserver", None)
    if buffer is not None:
        globalLogPublisher.removeObserver(buffer)
    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)
        if buffer is not None:
            globalLogPublisher.addObserver(buffer)


@pytest.fixture
def logged():
    """The log events of the test (what earlier tests left for the garbage
    collector is collected, and reported, before it starts)."""
    gc.collect()
    events = []
    with observing(events.append):
        yield events


# ------------------------------------------------------------------ helpers


def taken(d):
    """d's result, taken by a callback (a Failure counts as handled)."""
    box = []
    d.addBoth(box.append)
    return box[0] if box else PENDING


def peek(d):
    """d's current result, without touching its chain."""
    return d.result if d.called else PENDING


def handle(*deferreds):
    for d in deferreds:
        d.addErrback(lambda f: None)


def show(value):
    """A comparable picture of a result: Failures by type and arguments."""
    if isinstance(value, Failure):
        if value.check(defer.FirstError):
            return ("FirstError", value.value.index, show(value.value.subFailure))
        return ("Failure", value.type.__name__, show(value.value.args))
    if isinstance(value, BaseException):
        return ("exception", type(value).__name__, show(value.args))
    if isinstance(value, defer.Deferred):
        return "<a Deferred>"
    if isinstance(value, (list, tuple)):
        return type(value)(show(v) for v in value)
    return value


def outcome(call):
    """What a call returns, or the type of what it raises."""
    try:
        return ("returned", show(call()))
    except BaseException as e:  # noqa: B036 (Stop is a BaseException on purpose)
        return ("raised", type(e).__name__)


def unhandled(events):
    """Failures logged as unhandled (the event that carries the failure)."""
    out = []
    for i, event in enumerate(events):
        if event.get("log_format") == UNHANDLED_LOG:
            follower = events[i + 1] if i + 1 < len(events) else {}
            out.append(show(follower.get("log_failure")))
    return out


def canceller_logs(events):
    return [e for e in events if e.get("log_format") == CANCELLER_LOG]


def collect():
    for _ in range(3):
        gc.collect()


def snapshot(lst, members):
    """The list's public state: every attribute Twisted keeps."""
    return {
        "resultList": show(lst.resultList),
        "finishedCount": lst.finishedCount,
        "_deferredList": [members.index(d) for d in lst._deferredList],
        "fireOnOneCallback": lst.fireOnOneCallback,
        "fireOnOneErrback": lst.fireOnOneErrback,
        "consumeErrors": lst.consumeErrors,
        "called": lst.called,
        "result": show(peek(lst)),
    }


# ------------------------------------------------------------ empty lists


def test_emptyListFiresAtOnce(dl):
    lst = dl.DeferredList([])
    assert lst.called
    assert lst.resultList == [] and lst.finishedCount == 0 and lst._deferredList == []
    assert lst.result is not lst.resultList  # Twisted fires with a new []
    assert taken(lst) == []
    assert taken(dl.DeferredList([], fireOnOneErrback=True, consumeErrors=True)) == []
    assert taken(dl.DeferredList(iter(()))) == []


def test_emptyListWithFireOnOneCallbackNeverFires(dl):
    lst = dl.DeferredList([], fireOnOneCallback=True)
    assert not lst.called
    assert lst.resultList == [] and lst.finishedCount == 0
    lst.cancel()  # nothing to cancel: it stays unfired
    assert not lst.called
    assert taken(lst) == PENDING
    # A falsy non-bool flag is false: the list fires.
    assert taken(dl.DeferredList([], fireOnOneCallback=0)) == []
    assert taken(dl.DeferredList([], fireOnOneCallback="")) == []
    # A truthy non-bool one is true.
    assert taken(dl.DeferredList([], fireOnOneCallback="yes")) == PENDING


# ---------------------------------------------------------------- success


def test_allSucceedInTheListsOrder(dl):
    members = [dl.Deferred() for _ in range(3)]
    lst = dl.DeferredList(members)
    assert not lst.called and lst.finishedCount == 0
    assert lst.resultList == [None, None, None]
    members[2].callback("c")
    assert lst.resultList == [None, None, (True, "c")] and lst.finishedCount == 1
    members[0].callback("a")
    assert not lst.called and lst.finishedCount == 2
    members[1].callback("b")
    assert lst.called and lst.finishedCount == 3
    assert lst.result is lst.resultList
    assert taken(lst) == [(True, "a"), (True, "b"), (True, "c")]
    # The collector hands each member's result on.
    assert [peek(m) for m in members] == ["a", "b", "c"]


def test_membersFiredBeforeConstruction(dl):
    members = [dl.Deferred() for _ in range(3)]
    for i, m in enumerate(members):
        m.callback(i)
    lst = dl.DeferredList(members)
    assert lst.called and lst.finishedCount == 3
    assert taken(lst) == [(True, 0), (True, 1), (True, 2)]
    assert [peek(m) for m in members] == [0, 1, 2]


def test_membersFiredBeforeAndAfterConstruction(dl):
    members = [dl.Deferred() for _ in range(4)]
    members[1].callback("before")
    members[3].errback(Boom("before"))
    lst = dl.DeferredList(members)
    assert lst.finishedCount == 2
    assert show(lst.resultList) == [
        None, (True, "before"), None, (False, ("Failure", "Boom", ("before",)))]
    members[0].callback("after")
    members[2].errback(Boom("after"))
    assert show(taken(lst)) == [
        (True, "after"),
        (True, "before"),
        (False, ("Failure", "Boom", ("after",))),
        (False, ("Failure", "Boom", ("before",))),
    ]
    handle(*members)


def test_callbacksAddedBeforeTheListChangeWhatItSees(dl):
    """Twisted's docstring: the DeferredList is not special."""
    member = dl.Deferred()
    member.addCallback(lambda r: r * 2)
    lst = dl.DeferredList([member])
    member.addCallback(lambda r: ("after", r))
    member.callback(21)
    assert taken(lst) == [(True, 42)]
    assert peek(member) == ("after", 42)


def test_pausedMemberIsCollectedOnUnpause(dl):
    a, b = dl.Deferred(), dl.Deferred()
    a.pause()
    a.callback("a")
    b.callback("b")
    lst = dl.DeferredList([a, b])
    assert lst.finishedCount == 1 and lst.resultList == [None, (True, "b")]
    a.unpause()
    assert taken(lst) == [(True, "a"), (True, "b")]


# ------------------------------------------------------- fireOnOneCallback


def test_fireOnOneCallbackGivesValueAndIndex(dl):
    members = [dl.Deferred() for _ in range(3)]
    lst = dl.DeferredList(members, fireOnOneCallback=True)
    members[0].errback(Boom("first"))  # a failure does not fire it
    assert not lst.called
    members[2].callback("two")
    assert lst.called
    assert lst.result == ("two", 2)
    # Later results are still filed and counted, and do not fire it again.
    members[1].callback("one")
    assert lst.finishedCount == 3
    assert show(lst.resultList) == [
        (False, ("Failure", "Boom", ("first",))), (True, "one"), (True, "two")]
    assert taken(lst) == ("two", 2)
    assert peek(members[0]).check(Boom)  # not consumed
    handle(*members)


def test_fireOnOneCallbackDuringConstruction(dl):
    a, b, c = dl.Deferred(), dl.Deferred(), dl.Deferred()
    b.callback("b")
    c.callback("c")
    lst = dl.DeferredList([a, b, c], fireOnOneCallback=True)
    # b fired the list while it was being built; c was still collected.
    assert lst.finishedCount == 2
    assert lst.resultList == [None, (True, "b"), (True, "c")]
    a.callback("a")
    assert lst.finishedCount == 3
    assert taken(lst) == ("b", 1)


def test_fireOnOneCallbackWhenAllFail(dl):
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members, fireOnOneCallback=True, consumeErrors=True)
    members[0].errback(Boom(0))
    members[1].errback(Boom(1))
    # No success: it fires with the result list when every member is in.
    assert show(taken(lst)) == [
        (False, ("Failure", "Boom", (0,))), (False, ("Failure", "Boom", (1,)))]


# -------------------------------------------------------- fireOnOneErrback


def test_fireOnOneErrbackGivesFirstError(dl):
    members = [dl.Deferred() for _ in range(3)]
    lst = dl.DeferredList(members, fireOnOneErrback=True)
    members[0].callback("zero")  # a success does not fire it
    assert not lst.called
    members[2].errback(Boom("two"))
    member_failure = peek(members[2])
    assert isinstance(member_failure, Failure)  # not consumed
    failure = peek(lst)
    assert isinstance(failure, Failure)
    assert failure.type is defer.FirstError
    assert failure.value.index == 2
    assert failure.value.subFailure is member_failure
    assert failure.value == defer.FirstError(member_failure, 2)
    assert str(failure.value).startswith("FirstError[#2, ")
    assert repr(failure.value) == "FirstError[#2, Boom('two')]"
    # A later failure is filed but does not errback it again.
    members[1].errback(Boom("one"))
    assert lst.finishedCount == 3
    assert show(lst.resultList)[1] == (False, ("Failure", "Boom", ("one",)))
    assert taken(lst) is failure
    handle(*members)


def test_fireOnOneErrbackDuringConstruction(dl):
    a, b = dl.Deferred(), dl.Deferred()
    b.errback(Boom("b"))
    lst = dl.DeferredList([a, b], fireOnOneErrback=True, consumeErrors=True)
    assert lst.finishedCount == 1
    assert show(peek(lst)) == ("FirstError", 1, ("Failure", "Boom", ("b",)))
    assert peek(b) is None
    a.callback("a")
    assert lst.finishedCount == 2
    handle(lst)


def test_bothFlagsFirstEventDecides(dl):
    for first in ("callback", "errback"):
        members = [dl.Deferred(), dl.Deferred()]
        lst = dl.DeferredList(members, fireOnOneCallback=True, fireOnOneErrback=True)
        if first == "callback":
            members[1].callback("v")
            members[0].errback(Boom())
            assert taken(lst) == ("v", 1)
        else:
            members[1].errback(Boom())
            members[0].callback("v")
            assert show(taken(lst)) == ("FirstError", 1, ("Failure", "Boom", ()))
        handle(*members)


# ---------------------------------------------------------- consumeErrors


def test_consumeErrorsTurnsTheFailureIntoNone(dl, logged):
    members = [dl.Deferred(), dl.Deferred()]
    members[1].errback(Boom("before"))  # failed before construction: consumed too
    lst = dl.DeferredList(members, consumeErrors=True)
    members[0].errback(Boom("after"))
    errbacks = []
    for m in members:
        m.addErrback(errbacks.append)
    assert errbacks == []
    assert [peek(m) for m in members] == [None, None]
    assert show(taken(lst)) == [
        (False, ("Failure", "Boom", ("after",))),
        (False, ("Failure", "Boom", ("before",))),
    ]
    del members, lst
    collect()
    assert unhandled(logged) == []


def test_consumeErrorsWithFireOnOneErrback(dl, logged):
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members, fireOnOneErrback=True, consumeErrors=True)
    members[0].errback(Boom("x"))
    failure = taken(lst)
    assert failure.value.subFailure.check(Boom)
    assert peek(members[0]) is None
    members[1].callback("y")
    assert peek(members[1]) == "y"
    del members, lst, failure
    collect()
    assert unhandled(logged) == []


def test_errorsNotConsumedStayOnTheMember(dl, logged):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)
    members[0].errback(Boom("kept"))
    assert isinstance(peek(members[0]), Failure)
    assert peek(members[0]) is lst.resultList[0][1]
    assert show(taken(lst)) == [(False, ("Failure", "Boom", ("kept",)))]
    # Nobody handled the member's failure: it is reported when collected.
    del members, lst
    collect()
    assert unhandled(logged) == [("Failure", "Boom", ("kept",))]


def test_unhandledFirstErrorIsLogged(dl, logged):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members, fireOnOneErrback=True, consumeErrors=True)
    members[0].errback(Boom())
    del members, lst
    collect()
    assert unhandled(logged) == [("FirstError", 0, ("Failure", "Boom", ()))]


# ------------------------------------------------------------- attributes


def _attributeSteps(ns):
    members = [ns.Deferred() for _ in range(3)]
    members[1].callback("b")
    steps = []
    lst = ns.DeferredList(members, consumeErrors=True)
    steps.append(snapshot(lst, members))
    members[0].errback(Boom("a"))
    steps.append(snapshot(lst, members))
    members[2].callback("c")
    steps.append(snapshot(lst, members))
    steps.append([show(peek(m)) for m in members])
    lst = ns.DeferredList(members[:2], fireOnOneCallback=True, fireOnOneErrback=True)
    steps.append(snapshot(lst, members))
    return steps


def test_attributesAtEachStepAsTwisted(dl_name):
    steps, expected = compare(dl_name, _attributeSteps)
    assert steps == expected
    assert steps[0] == {
        "resultList": [None, (True, "b"), None],
        "finishedCount": 1,
        "_deferredList": [0, 1, 2],
        "fireOnOneCallback": False,
        "fireOnOneErrback": False,
        "consumeErrors": True,
        "called": False,
        "result": PENDING,
    }
    assert steps[2]["called"] and steps[2]["finishedCount"] == 3
    assert steps[2]["result"] == steps[2]["resultList"]


def test_attributeTypes(dl):
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(m for m in members)
    assert type(lst.resultList) is list
    assert type(lst._deferredList) is list
    assert lst._deferredList == members and lst._deferredList is not members
    assert type(lst.finishedCount) is int
    for name in ("fireOnOneCallback", "fireOnOneErrback", "consumeErrors"):
        assert getattr(lst, name) is False


def test_classAttributeDefaults(dl, request):
    """Twisted's DeferredList has class attributes fireOnOneCallback and
    fireOnOneErrback, both False."""
    known_difference(request, C_LISTS, "the C flags are member descriptors on the class")
    assert dl.DeferredList.fireOnOneCallback is False
    assert dl.DeferredList.fireOnOneErrback is False


def test_flagsKeptAsGiven(dl):
    on, errs, consume = ["truthy"], 2, "yes"
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members, fireOnOneCallback=on, fireOnOneErrback=errs,
                          consumeErrors=consume)
    assert lst.fireOnOneCallback is on
    assert lst.fireOnOneErrback is errs
    assert lst.consumeErrors is consume
    members[0].errback(Boom())
    assert peek(members[0]) is None  # consumed: "yes" is true
    assert show(taken(lst)) == ("FirstError", 0, ("Failure", "Boom", ()))
    members = [dl.Deferred()]
    falsy = []
    lst = dl.DeferredList(members, fireOnOneCallback=falsy, consumeErrors=0)
    assert lst.fireOnOneCallback is falsy and lst.consumeErrors == 0
    assert type(lst.consumeErrors) is int
    members[0].callback(1)
    assert taken(lst) == [(True, 1)]


def test_positionalAndKeywordArguments(dl):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members, True, False, True)
    assert (lst.fireOnOneCallback, lst.fireOnOneErrback, lst.consumeErrors) == (
        True, False, True)
    lst = dl.DeferredList(deferredList=members, consumeErrors=True)
    assert lst._deferredList == members and lst.consumeErrors is True
    members[0].callback("v")
    assert taken(lst) == [(True, "v")]


def _writableAttributes(ns):
    out = []
    members = [ns.Deferred() for _ in range(3)]
    lst = ns.DeferredList(members)
    lst.fireOnOneCallback = True  # set after construction: read when a result comes
    members[1].callback("one")
    out.append(show(peek(lst)))
    members = [ns.Deferred() for _ in range(3)]
    lst = ns.DeferredList(members)
    lst.finishedCount = 2
    members[0].callback("zero")  # 3 == len(resultList): fires with the gaps
    out.append(show(peek(lst)))
    out.append(lst.finishedCount)
    members = [ns.Deferred()]
    lst = ns.DeferredList(members)
    lst.consumeErrors = True
    members[0].errback(Boom())
    out.append(show(peek(members[0])))
    members = [ns.Deferred(), ns.Deferred()]
    lst = ns.DeferredList(members)
    replacement = [None]
    lst.resultList = replacement  # shorter: fires after one result
    members[0].callback("only")
    out.append((show(peek(lst)), peek(lst) is replacement))
    members[1].callback("late")  # index 1 is out of range now
    out.append(show(peek(members[1])))
    handle(members[1])
    return out


def test_attributesWritableAsInTwisted(dl_name):
    out, expected = compare(dl_name, _writableAttributes)
    assert out == expected
    assert out[0] == ("one", 1)
    assert out[1] == [(True, "zero"), None, None]


# ------------------------------------------------------------ cancellation


def test_cancelCancelsEveryMember(dl, logged):
    cancelled = []
    members = [
        dl.Deferred(lambda d: cancelled.append(0)),
        dl.Deferred(),  # no canceller: CancelledError all the same
        dl.Deferred(lambda d: (cancelled.append(2), d.callback("from canceller"))),
        dl.Deferred(lambda d: (cancelled.append(3), d.errback(Boom("canceller")))),
    ]
    lst = dl.DeferredList(members, consumeErrors=True)
    assert lst.cancel() is None
    assert cancelled == [0, 2, 3]
    assert show(taken(lst)) == [
        (False, ("Failure", "CancelledError", ())),
        (False, ("Failure", "CancelledError", ())),
        (True, "from canceller"),
        (False, ("Failure", "Boom", ("canceller",))),
    ]
    assert [peek(m) for m in members] == [None, None, "from canceller", None]
    assert canceller_logs(logged) == []


def test_cancelGoesOnAfterTheListFired(dl):
    """With fireOnOneErrback the first cancellation fires the list; the
    rest are cancelled all the same (Twisted checks only at the start)."""
    cancelled = []
    members = [dl.Deferred(lambda d, i=i: cancelled.append(i)) for i in range(3)]
    lst = dl.DeferredList(members, fireOnOneErrback=True, consumeErrors=True)
    lst.cancel()
    assert cancelled == [0, 1, 2]
    assert all(m.called for m in members)
    assert show(taken(lst)) == ("FirstError", 0, ("Failure", "CancelledError", ()))
    assert lst.finishedCount == 3


@pytest.mark.parametrize("error", [ZeroDivisionError, Stop])
def test_cancelWithRaisingCanceller(dl, logged, error):
    cancelled = []

    def raising(d):
        cancelled.append(1)
        raise error()

    members = [
        dl.Deferred(lambda d: cancelled.append(0)),
        dl.Deferred(raising),
        dl.Deferred(lambda d: cancelled.append(2)),
    ]
    lst = dl.DeferredList(members, consumeErrors=True)
    lst.cancel()  # does not raise
    assert cancelled == [0, 1, 2]
    events = canceller_logs(logged)
    assert len(events) == 1
    event = events[0]
    assert event["log_level"] == LogLevel.critical
    assert event["log_namespace"] == "twisted.internet.defer"
    assert event["log_failure"].type is error
    # The member whose canceller raised did not fire, so neither did the list.
    assert not members[1].called
    assert not lst.called
    members[1].callback("late")
    assert [ok for ok, _ in taken(lst)] == [False, True, False]


def test_cancelAfterFiredIsNoOp(dl):
    cancelled = []
    a = dl.Deferred(lambda d: cancelled.append("a"))
    b = dl.Deferred(lambda d: cancelled.append("b"))
    lst = dl.DeferredList([a, b], fireOnOneCallback=True)
    a.callback(1)
    lst.cancel()
    assert cancelled == []
    assert not b.called
    assert taken(lst) == (1, 0)
    c = dl.Deferred(lambda d: cancelled.append("c"))
    c.callback(2)
    lst = dl.DeferredList([c])
    lst.cancel()
    assert cancelled == []
    assert taken(lst) == [(True, 2)]
    lst.cancel()  # a second time: still nothing
    assert cancelled == []


def test_cancelSkipsFiredMembers(dl):
    cancelled = []
    a = dl.Deferred(lambda d: cancelled.append("a"))
    a.callback("a")
    b = dl.Deferred(lambda d: cancelled.append("b"))
    lst = dl.DeferredList([a, b], consumeErrors=True)
    lst.cancel()
    assert cancelled == ["b"]
    assert show(taken(lst)) == [(True, "a"), (False, ("Failure", "CancelledError", ()))]


def test_cancelCallsTheMembersCancelMethod(dl):
    """Twisted's cancel() calls each member's cancel(): an override counts."""
    calls = []

    class Member(dl.Deferred):
        def cancel(self):
            calls.append(self)
            return super().cancel()

    members = [Member(), Member()]
    lst = dl.DeferredList(members, consumeErrors=True)
    lst.cancel()
    assert calls == members
    assert [ok for ok, _ in taken(lst)] == [False, False]


def _appendedWhileCancelling(ns):
    extra_cancelled = []
    extra = ns.Deferred(lambda d: extra_cancelled.append(True))

    def growing(d):
        lst._deferredList.append(extra)

    members = [ns.Deferred(growing)]
    lst = ns.DeferredList(members, consumeErrors=True)
    lst.cancel()
    handle(extra)
    return extra_cancelled, extra.called


def test_cancelWalksTheLiveDeferredList(dl_name):
    """Twisted iterates self._deferredList itself: a member a canceller
    appends is cancelled too."""
    got, expected = compare(dl_name, _appendedWhileCancelling)
    assert expected == ([True], True)
    assert got == expected


def test_gatherResultsCancel(dl):
    cancelled = []
    members = [dl.Deferred(lambda d, i=i: cancelled.append(i)) for i in range(2)]
    gathered = dl.gatherResults(members, consumeErrors=True)
    gathered.cancel()
    assert cancelled == [0, 1]
    assert show(taken(gathered)) == ("FirstError", 0, ("Failure", "CancelledError", ()))


@pytest.mark.c_extension
@pytest.mark.skipif(_cimpl is None, reason="the C core is not built")
def test_cancelMessageReachesMembers_cOnly():
    """cdeferred's extension: cancel(msg) passes msg to each member that takes
    one (Twisted's DeferredList.cancel takes no argument)."""
    with pytest.raises(TypeError):
        TwistedDeferredList([]).cancel("why")
    members = [_cimpl.Deferred(), TwistedDeferred()]
    lst = _cimpl.DeferredList(members, consumeErrors=True)
    lst.cancel("why")
    (ok0, f0), (ok1, f1) = taken(lst)
    assert not ok0 and f0.check(defer.CancelledError) and f0.value.args == ("why",)
    assert not ok1 and f1.check(defer.CancelledError) and f1.value.args == ()


# -------------------------------------------------------- input iterables


def test_generatorIsConsumedOnce(dl):
    members = [dl.Deferred() for _ in range(3)]
    pulled = []

    def gen():
        for i, m in enumerate(members):
            pulled.append(i)
            yield m

    it = gen()
    lst = dl.DeferredList(it)
    assert pulled == [0, 1, 2]
    assert next(it, "exhausted") == "exhausted"
    assert lst._deferredList == members
    for i, m in enumerate(members):
        m.callback(i)
    assert taken(lst) == [(True, 0), (True, 1), (True, 2)]


def test_generatorFiringMembersWhileConsumed(dl):
    """The iterable is read to its end before any collector is added."""
    a, b = dl.Deferred(), dl.Deferred()
    seen = []

    def gen():
        yield a
        a.callback("a")  # fired while the list is still reading its input
        seen.append(a.called)
        yield b

    lst = dl.DeferredList(gen(), fireOnOneCallback=True)
    assert seen == [True]
    assert taken(lst) == ("a", 0)


def test_memberFiredSynchronouslyDuringConstruction(dl):
    """A collector that fires the next member while the list is being built."""
    members = [dl.Deferred(), dl.Deferred(), dl.Deferred()]
    members[0].callback("zero")
    events = []

    class Eager(dl.DeferredList):
        def _cbDeferred(self, result, index, succeeded):
            events.append(("collect", index, result, self.finishedCount))
            if index + 1 < len(members) and not members[index + 1].called:
                members[index + 1].callback(f"fired by {index}")
            return super()._cbDeferred(result, index, succeeded)

    lst = Eager(members)
    assert events == [
        ("collect", 0, "zero", 0),
        ("collect", 1, "fired by 0", 1),
        ("collect", 2, "fired by 1", 2),
    ]
    assert taken(lst) == [(True, "zero"), (True, "fired by 0"), (True, "fired by 1")]


def test_memberFromAnotherChain(dl):
    # A member waiting on a Deferred its callback returned.
    inner, outer = dl.Deferred(), dl.Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    by_outer = dl.DeferredList([outer])
    # The inner one itself: its result went to outer, so the list sees None.
    by_inner = dl.DeferredList([inner])
    assert not by_outer.called and not by_inner.called
    inner.callback("v")
    assert taken(by_outer) == [(True, "v")]
    assert taken(by_inner) == [(True, None)]
    # The same with an inner Deferred that had fired before it was returned.
    inner, outer = dl.Deferred(), dl.Deferred()
    inner.callback("w")
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    assert taken(dl.DeferredList([inner])) == [(True, None)]
    assert taken(dl.DeferredList([outer])) == [(True, "w")]


def test_memberIsAnotherList(dl):
    inner_members = [dl.Deferred(), dl.Deferred()]
    inner = dl.DeferredList(inner_members, fireOnOneCallback=True)
    other = dl.Deferred()
    outer = dl.DeferredList([inner, other])
    inner_members[1].callback("x")
    other.callback("y")
    assert taken(outer) == [(True, ("x", 1)), (True, "y")]


def test_sameMemberTwice(dl):
    d = dl.Deferred()
    lst = dl.DeferredList([d, d])
    d.callback("v")
    assert taken(lst) == [(True, "v"), (True, "v")]
    d = dl.Deferred()
    lst = dl.DeferredList([d, d], consumeErrors=True)
    d.errback(Boom())
    # The first collector consumed it: the second sees None, a success.
    assert show(taken(lst)) == [(False, ("Failure", "Boom", ())), (True, None)]


# ------------------------------------------------------------- subclasses


def test_subclassOverridesCbDeferred(dl):
    seen = []

    class Recording(dl.DeferredList):
        def _cbDeferred(self, result, index, succeeded):
            seen.append((show(result), index, succeeded))
            value = super()._cbDeferred(result, index, succeeded)
            return ("handed on", value) if succeeded else value

    members = [dl.Deferred(), dl.Deferred(), dl.Deferred()]
    members[2].callback("early")  # collected during construction: the override too
    lst = Recording(members, consumeErrors=True)
    members[0].callback("x")
    members[1].errback(Boom())
    assert seen == [
        ("early", 2, True),
        ("x", 0, True),
        (("Failure", "Boom", ()), 1, False),
    ]
    assert show(taken(lst)) == [
        (True, "x"), (False, ("Failure", "Boom", ())), (True, "early")]
    assert [peek(m) for m in members] == [("handed on", "x"), None, ("handed on", "early")]


def test_instanceAttributeCbDeferredIsUsed(dl):
    """Twisted looks ``self._cbDeferred`` up: an instance attribute set before
    the base __init__ wins."""
    seen = []

    class Wrapped(dl.DeferredList):
        def __init__(self, members):
            original = self._cbDeferred
            self._cbDeferred = lambda r, i, s: (seen.append(i), original(r, i, s))[1]
            super().__init__(members)

    members = [dl.Deferred(), dl.Deferred()]
    lst = Wrapped(members)
    members[1].callback("b")
    members[0].callback("a")
    assert seen == [1, 0]
    assert taken(lst) == [(True, "a"), (True, "b")]


def test_subclassOverrideCallsSuperWithKeywords(dl):
    class Keywords(dl.DeferredList):
        def _cbDeferred(self, result, index, succeeded):
            return super()._cbDeferred(result, index=index, succeeded=succeeded)

    members = [dl.Deferred()]
    lst = Keywords(members)
    members[0].callback("v")
    assert peek(members[0]) == "v"
    assert taken(lst) == [(True, "v")]


def test_subclassOverridesCallbackAndErrback(dl):
    """Twisted's DeferredList fires itself through self.callback and
    self.errback, so a subclass that overrides them sees every firing."""
    calls = []

    class Watched(dl.DeferredList):
        def callback(self, result):
            calls.append(("callback", show(result)))
            return super().callback(result)

        def errback(self, fail=None):
            calls.append(("errback", show(fail)))
            return super().errback(fail)

    Watched([])
    members = [dl.Deferred()]
    Watched(members)
    members[0].callback(1)
    members = [dl.Deferred()]
    Watched(members, fireOnOneCallback=True)
    members[0].callback(2)
    members = [dl.Deferred()]
    handle(Watched(members, fireOnOneErrback=True, consumeErrors=True))
    members[0].errback(Boom())
    assert calls == [
        ("callback", []),
        ("callback", [(True, 1)]),
        ("callback", (2, 0)),
        ("errback", ("FirstError", 0, ("Failure", "Boom", ()))),
    ]


def test_memberOverridingAddCallbacks(dl, request):
    """Twisted's DeferredList attaches itself with member.addCallbacks(...)."""
    known_difference(request, ["c", "installed"], "the C DeferredList pushes its links onto C members directly")
    calls = []

    class Member(dl.Deferred):
        def addCallbacks(self, *args, **kwargs):
            calls.append(self)
            return super().addCallbacks(*args, **kwargs)

    members = [Member(), Member()]
    lst = dl.DeferredList(members)
    assert calls == members
    for m in members:
        m.callback("v")
    assert taken(lst) == [(True, "v"), (True, "v")]


def test_isATwistedDeferredList(dl):
    lst = dl.DeferredList([])
    assert isinstance(lst, defer.DeferredList)  # the name as bound now
    assert isinstance(lst, defer.Deferred)
    assert isinstance(lst, TwistedDeferred)
    assert type(lst) in defer._DEFERRED_SUBCLASSES

    class Sub(dl.DeferredList):
        pass

    sub = Sub([])
    assert isinstance(sub, defer.DeferredList)
    assert Sub in defer._DEFERRED_SUBCLASSES
    assert taken(sub) == []


def test_isAnInstanceOfTwistedsOwnClass(dl):
    """isinstance against Twisted's DeferredList class itself (what code
    that imported the name before install() holds): cdeferred.Deferred
    instances pass the same check against Twisted's Deferred."""
    assert isinstance(dl.Deferred(), TwistedDeferred)
    lst = dl.DeferredList([])
    assert isinstance(lst, TwistedDeferredList)
    assert issubclass(type(lst), TwistedDeferredList)


def test_reinitialisingResetsTheChain(dl, request):
    """Twisted's __init__ runs Deferred.__init__, which empties the chain."""
    known_difference(request, C_LISTS, "the C __init__ keeps the chain")
    old = dl.Deferred()
    lst = dl.DeferredList([old])
    lst.addCallback(lambda r: ("added before re-init", r))
    new = dl.Deferred()
    lst.__init__([new], fireOnOneCallback=True)
    assert lst.resultList == [None] and lst.finishedCount == 0 and not lst.called
    new.callback("new")
    assert taken(lst) == ("new", 0)
    handle(old)


# ---------------------------------------------------------- gatherResults


def test_gatherResultsSuccess(dl):
    members = [dl.Deferred(), dl.Deferred(), dl.Deferred()]
    members[1].callback("b")
    gathered = dl.gatherResults(members)
    assert isinstance(gathered, defer.DeferredList)
    members[2].callback("c")
    assert not gathered.called
    members[0].callback("a")
    assert taken(gathered) == ["a", "b", "c"]
    assert taken(dl.gatherResults([])) == []


def test_gatherResultsFailure(dl, logged):
    members = [dl.Deferred(), dl.Deferred()]
    gathered = dl.gatherResults(members)
    members[1].errback(Boom("b"))
    failure = taken(gathered)
    assert show(failure) == ("FirstError", 1, ("Failure", "Boom", ("b",)))
    assert failure.value.subFailure is peek(members[1])  # not consumed
    members[0].callback("a")
    del members, gathered, failure
    collect()
    assert unhandled(logged) == [("Failure", "Boom", ("b",))]


def test_gatherResultsConsumeErrors(dl, logged):
    members = [dl.Deferred(), dl.Deferred()]
    members[0].errback(Boom("early"))
    gathered = dl.gatherResults(members, consumeErrors=True)
    assert show(taken(gathered)) == ("FirstError", 0, ("Failure", "Boom", ("early",)))
    assert peek(members[0]) is None
    members[1].errback(Boom("late"))
    assert peek(members[1]) is None
    del members, gathered
    collect()
    assert unhandled(logged) == []


# ------------------------------------------------------------------ await


def _awaited(ns):
    inner_members = [ns.Deferred(), ns.Deferred()]
    inner = ns.DeferredList(inner_members)
    other = ns.Deferred()
    outer = ns.DeferredList([inner, other])
    gather_members = [ns.Deferred(), ns.Deferred()]

    async def main():
        first = await inner
        second = await ns.gatherResults(gather_members)
        third = await outer
        try:
            await ns.gatherResults([failing])
        except defer.FirstError as e:
            fourth = ("caught", e.index, show(e.subFailure))
        return first, second, third, fourth

    failing = ns.Deferred()
    awaited = ns.ensureDeferred(main())
    steps = [show(peek(awaited))]
    inner_members[1].callback("b")
    inner_members[0].callback("a")
    steps.append(show(peek(awaited)))
    gather_members[0].callback(1)
    gather_members[1].callback(2)
    other.callback("o")
    steps.append(show(peek(awaited)))
    failing.errback(Boom("f"))
    steps.append(show(taken(awaited)))
    steps.append((show(peek(inner)), show(peek(outer))))
    handle(failing)
    return steps


def test_listAsMemberAndAwaited(dl_name):
    steps, expected = compare(dl_name, _awaited)
    assert steps == expected
    assert steps[0] == PENDING
    assert steps[3] == (
        [(True, "a"), (True, "b")],
        [1, 2],
        # outer's collector was added before the coroutine awaited inner
        [(True, [(True, "a"), (True, "b")]), (True, "o")],
        ("caught", 0, ("Failure", "Boom", ("f",))),
    )


# -------------------------------------------------------------- bad input


def test_notIterable(dl):
    for bad in (5, None, object()):
        with pytest.raises(TypeError):
            dl.DeferredList(bad)
    with pytest.raises(TypeError):
        dl.DeferredList()
    with pytest.raises(TypeError):
        dl.DeferredList([], bogus=True)
    with pytest.raises(TypeError):
        dl.gatherResults(5)


def test_iterableRaising(dl):
    member = dl.Deferred()

    def gen():
        yield member
        raise Boom("input")

    with pytest.raises(Boom):
        dl.DeferredList(gen())
    # Nothing was attached to the member: its result stays its own.
    member.callback("v")
    assert peek(member) == "v"


def test_memberNotADeferred(dl):
    first = dl.Deferred()
    with pytest.raises(AttributeError):
        dl.DeferredList([first, 5])
    # The half-built list is still attached to the first member: firing it
    # files the result and changes nothing else.
    first.callback("v")
    assert peek(first) == "v"


@pytest.mark.parametrize(
    "replacement, error",
    [(None, TypeError), ((None,), TypeError), ("s", TypeError), ([], IndexError)],
)
def test_resultListReplaced(dl, replacement, error):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)
    lst.resultList = replacement
    members[0].callback(1)
    # The collector's exception is the member's Failure; the list waits.
    failure = peek(members[0])
    assert isinstance(failure, Failure) and failure.type is error
    assert not lst.called
    handle(*members)


def test_resultListReplacedByDict(dl):
    """Twisted only needs item assignment and len(): with a dict, len() is
    the number of results filed, so the first one fires the list (with the
    dict itself, which goes on filling)."""
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members)
    replacement = {}
    lst.resultList = replacement
    members[1].callback("b")
    assert lst.called and peek(lst) is replacement
    assert replacement == {1: (True, "b")}
    members[0].callback("a")
    assert lst.finishedCount == 2
    assert taken(lst) == {0: (True, "a"), 1: (True, "b")}


def test_resultListDeleted(dl):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)
    del lst.resultList
    members[0].callback(1)
    failure = peek(members[0])
    assert isinstance(failure, Failure) and failure.type is AttributeError
    assert not lst.called
    handle(*members)


def test_resultListDeletedWhileFiling(dl):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)

    class Sneaky(list):
        def __setitem__(self, index, value):
            super().__setitem__(index, value)
            del lst.resultList

    lst.resultList = Sneaky([None])
    members[0].callback(1)
    failure = peek(members[0])
    assert isinstance(failure, Failure) and failure.type is AttributeError
    assert not lst.called
    handle(*members)


class RaisingBool:
    def __bool__(self):
        raise Boom("truth")


def test_flagWhoseTruthRaises(dl):
    with pytest.raises(Boom):
        dl.DeferredList([], fireOnOneCallback=RaisingBool())
    members = [dl.Deferred()]
    lst = dl.DeferredList(members, fireOnOneCallback=RaisingBool())
    members[0].callback(1)
    assert peek(members[0]).check(Boom)
    assert not lst.called
    members = [dl.Deferred()]
    lst = dl.DeferredList(members, consumeErrors=RaisingBool())
    members[0].errback(ValueError())
    # Filed and fired first; the truth test of consumeErrors failed after.
    assert peek(members[0]).check(Boom)
    assert show(taken(lst)) == [(False, ("Failure", "ValueError", ()))]
    handle(*members)


def test_collectorCalledDirectly(dl):
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members)
    with pytest.raises(TypeError):
        lst._cbDeferred("r")
    with pytest.raises(IndexError):
        lst._cbDeferred("r", 5, True)
    assert lst._cbDeferred("r", 0, True) == "r"
    assert lst.resultList == [(True, "r"), None] and lst.finishedCount == 1
    assert lst._cbDeferred("s", 1, True) == "s"
    assert taken(lst) == [(True, "r"), (True, "s")]


def _kind(value):
    """A result by kind: a Failure by its type only (messages may differ)."""
    if isinstance(value, Failure):
        return ("Failure", value.type.__name__)
    return show(value)


def _deletedAttribute(ns, name):
    out = []
    members = [ns.Deferred(), ns.Deferred()]
    lst = ns.DeferredList(members)
    out.append(outcome(lambda: delattr(lst, name)))
    out.append(outcome(lambda: getattr(lst, name)))
    out.append(hasattr(lst, name))
    members[0].errback(Boom())
    out.append(_kind(peek(members[0])))
    out.append(outcome(lst.cancel))
    out.append(_kind(peek(members[1])))
    out.append((lst.called, _kind(peek(lst))))
    handle(*members)
    handle(lst)
    return out


@pytest.mark.parametrize(
    "name",
    ["resultList", "_deferredList", "fireOnOneCallback", "fireOnOneErrback",
     "consumeErrors", "finishedCount"],
)
def test_deletedAttributeAsTwisted(dl_name, name, request):
    """Twisted's attributes are plain instance attributes: deleting one makes
    it unreadable (or shows the class default), and what reads it later fails
    with AttributeError."""
    if name != "finishedCount":
        known_difference(request, C_LISTS, "a deleted C field does not fall back to a class attribute")
    got, expected = compare(dl_name, lambda ns: _deletedAttribute(ns, name))
    assert got == expected


def test_finishedCountTakesAnyObject(dl_name):
    def scenario(ns):
        members = [ns.Deferred()]
        lst = ns.DeferredList(members)
        set_outcome = outcome(lambda: setattr(lst, "finishedCount", 0.0))
        members[0].callback(1)
        return set_outcome, show(peek(members[0])), lst.finishedCount, show(peek(lst))

    got, expected = compare(dl_name, scenario)
    assert got == expected


# --------------------------------------------------------------- big lists


def test_tenThousandMembers(dl):
    n = 10_000
    members = [dl.Deferred() for _ in range(n)]
    lst = dl.DeferredList(members)
    for i in reversed(range(n)):
        members[i].callback(i)
        if i == 1:
            assert not lst.called and lst.finishedCount == n - 1
    result = taken(lst)
    assert result == [(True, i) for i in range(n)]

    fired = []
    for i in range(n):
        d = dl.Deferred()
        d.callback(i)
        fired.append(d)
    assert taken(dl.gatherResults(fired)) == list(range(n))

    members = [dl.Deferred() for _ in range(n)]
    lst = dl.DeferredList(members, fireOnOneErrback=True, consumeErrors=True)
    for m in members[:-1]:
        m.callback(None)
    assert not lst.called
    members[-1].errback(Boom())
    assert show(taken(lst)) == ("FirstError", n - 1, ("Failure", "Boom", ()))

    members = [dl.Deferred() for _ in range(n)]
    lst = dl.DeferredList(members, consumeErrors=True)
    lst.cancel()
    result = taken(lst)
    assert len(result) == n
    assert all(not ok and f.check(defer.CancelledError) for ok, f in result)


# ------------------------------------------------------------ differential

FLAGS = [False, True, 0, 1, "", "yes", None]

members_strategy = st.lists(
    st.fixed_dictionaries(
        {
            # how it starts: fired with a value / a failure, unfired, cancelled
            "start": st.sampled_from(["value", "failure", "unfired", "unfired", "cancelled"]),
            "canceller": st.sampled_from([None, "record", "raise", "fire", "fail"]),
            # how an unfired one is settled at the end, if nothing fired it
            "late": st.sampled_from(["value", "failure", "leave"]),
        }
    ),
    max_size=6,
)

programs = st.fixed_dictionaries(
    {
        "members": members_strategy,
        "gather": st.booleans(),
        "generator": st.booleans(),
        "fireOnOneCallback": st.sampled_from(FLAGS),
        "fireOnOneErrback": st.sampled_from(FLAGS),
        "consumeErrors": st.sampled_from(FLAGS),
        "observe_members": st.booleans(),
        "handle_list": st.booleans(),
        "actions": st.lists(
            st.tuples(
                st.integers(0, 5),
                st.sampled_from(["callback", "errback", "cancel", "cancel_list"]),
            ),
            max_size=8,
        ),
        "settle_order": st.permutations(range(6)),
    }
)


def run_program(program, ns):
    """Run one program; return every observable event, in order."""
    trace = []

    def observe(event):
        failure = event.get("log_failure")
        level = event.get("log_level")
        trace.append(("log", event.get("log_format"), getattr(level, "name", level),
                      show(failure) if failure is not None else None))

    def make_canceller(kind, i):
        if kind is None:
            return None

        def canceller(d):
            trace.append(("canceller", i, kind))
            if kind == "raise":
                raise Boom(f"canceller {i}")
            if kind == "fire":
                d.callback(f"cancel-fired {i}")
            elif kind == "fail":
                d.errback(Boom(f"cancel-failed {i}"))

        return canceller

    def act(i, what, call):
        try:
            call()
        except Exception as e:
            trace.append(("api error", i, what, type(e).__name__))

    def state(lst):
        trace.append(("state", show(lst.resultList), lst.finishedCount, lst.called,
                      show(peek(lst))))

    gc.collect()  # what an earlier run left is reported outside this trace
    with observing(observe):
        _run_program(program, ns, trace, make_canceller, act, state)
    # What the garbage collector reported (after the "end" marker) may come
    # in any order: reference counting or the cycle collector, which differs.
    end = trace.index(("end",))
    if gc.isenabled() and _FREEZING[0]:
        # What is still alive (hypothesis' own records, growing with every
        # example) joins the frozen heap, so later collections stay cheap.
        gc.freeze()
    return trace[:end] + sorted(trace[end + 1:], key=repr)


_FREEZING = [False]


def _run_program(program, ns, trace, make_canceller, act, state_of):
    members = lst = given_members = d = m = None

    def state():
        state_of(lst)

    try:
        members = []
        for i, spec in enumerate(program["members"]):
            d = ns.Deferred(make_canceller(spec["canceller"], i))
            if spec["start"] == "value":
                d.callback(f"value {i}")
            elif spec["start"] == "failure":
                d.errback(Boom(f"failure {i}"))
            elif spec["start"] == "cancelled":
                act(i, "cancel before", d.cancel)
            members.append(d)
        given_members = (m for m in members) if program["generator"] else members
        if program["gather"]:
            lst = ns.gatherResults(given_members, consumeErrors=program["consumeErrors"])
        else:
            lst = ns.DeferredList(
                given_members,
                fireOnOneCallback=program["fireOnOneCallback"],
                fireOnOneErrback=program["fireOnOneErrback"],
                consumeErrors=program["consumeErrors"],
            )
        trace.append(("flags", lst.fireOnOneCallback, lst.fireOnOneErrback,
                      lst.consumeErrors))

        def list_fired(result):
            trace.append(("list fired", show(result)))
            return None if program["handle_list"] else result

        lst.addBoth(list_fired)
        if program["observe_members"]:
            for i, m in enumerate(members):
                m.addBoth(lambda r, i=i: (trace.append(("member passes on", i, show(r))), r)[1])
        state()
        for i, what in program["actions"]:
            if what == "cancel_list":
                act(None, what, lst.cancel)
            elif i < len(members):
                m = members[i]
                if what == "callback":
                    act(i, what, lambda: m.callback(f"action {i}"))
                elif what == "errback":
                    act(i, what, lambda: m.errback(Boom(f"action {i}")))
                else:
                    act(i, what, m.cancel)
            else:
                continue
            state()
        for i in program["settle_order"]:
            if i >= len(members) or members[i].called:
                continue
            late = program["members"][i]["late"]
            if late == "value":
                members[i].callback(f"late {i}")
            elif late == "failure":
                members[i].errback(Boom(f"late {i}"))
            else:
                continue
            state()
        for i, m in enumerate(members):
            trace.append(("member result", i, show(peek(m))))
        trace.append(("deferredList", [members.index(d) for d in lst._deferredList]))
    finally:
        trace.append(("end",))
        del members, lst, given_members, d, m
        gc.collect()


def check_program(program, names):
    expected = run_on("twisted", lambda ns: run_program(program, ns))
    for name in names:
        got = run_on(name, lambda ns: run_program(program, ns))
        assert got == expected, name


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def _differential(program):
    check_program(program, C_VARIANTS)


@pytest.mark.c_extension
@pytest.mark.skipif(_cimpl is None, reason="the C core is not built")
def test_sameEventsAsTwisted():
    """Random lists (fired, failed, unfired, cancelled members with every kind
    of canceller), random flags (non-bool ones too), firing orders and
    cancellations: every variant produces Twisted's trace."""
    # Everything alive now is left out of the collections each run makes
    # (they only need to find the run's own garbage): much faster.
    gc.collect()
    gc.freeze()
    _FREEZING[0] = True
    try:
        _differential()
    finally:
        _FREEZING[0] = False
        gc.unfreeze()


def _example_program(**overrides):
    program = {
        "members": [
            {"start": "value", "canceller": None, "late": "leave"},
            {"start": "unfired", "canceller": "raise", "late": "failure"},
            {"start": "unfired", "canceller": "fire", "late": "value"},
            {"start": "failure", "canceller": "record", "late": "leave"},
        ],
        "gather": False,
        "generator": True,
        "fireOnOneCallback": "",
        "fireOnOneErrback": None,
        "consumeErrors": 1,
        "observe_members": True,
        "handle_list": False,
        "actions": [(2, "errback"), (0, "cancel_list"), (1, "callback")],
        "settle_order": list(range(6)),
    }
    program.update(overrides)
    return program


def test_differentialHarnessSeesEvents():
    """The trace the differential test compares is rich enough to fail: it
    holds cancellers, logs, states and member results."""
    trace = run_on("twisted", lambda ns: run_program(_example_program(), ns))
    kinds = {event[0] for event in trace}
    assert {"flags", "state", "list fired", "member passes on", "member result",
            "canceller", "log", "deferredList"} <= kinds
    assert ("log", CANCELLER_LOG, "critical", ("Failure", "Boom", ("canceller 1",))) in trace
    # Changing one flag changes the trace.
    other = run_on("twisted", lambda ns: run_program(_example_program(consumeErrors=0), ns))
    assert other != trace


@pytest.mark.c_extension
@pytest.mark.skipif(_cimpl is None, reason="the C core is not built")
@pytest.mark.parametrize("gather", [False, True])
def test_exampleProgramSameOnEveryVariant(gather):
    check_program(_example_program(gather=gather), C_VARIANTS)
