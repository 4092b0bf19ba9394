"""
The C DeferredList (csrc/deferredlist.c) behind cdeferred.DeferredList,
gatherResults and install()'s DeferredList, against Twisted's own: every
behaviour test runs on Twisted's, on the C one, and on the two mixtures (the
C list over Twisted Deferreds, Twisted's list over C Deferreds); a Hypothesis
differential test compares random lists, flags and firing orders event by
event, logs included.
"""

import gc
import os
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

import cdeferred

pytestmark = pytest.mark.skipif(cdeferred._cimpl is None, reason="needs the C core")

if cdeferred._cimpl is not None:
    from cdeferred import _cimpl

EXAMPLES = int(os.environ.get("CDEFERRED_HYPOTHESIS_EXAMPLES", "150"))


def _ns(Deferred, DeferredList, gatherResults):
    return types.SimpleNamespace(
        Deferred=Deferred, DeferredList=DeferredList, gatherResults=gatherResults
    )


def _twisted():
    return _ns(defer.Deferred, defer.DeferredList, defer.gatherResults)


def _c():
    return _ns(_cimpl.Deferred, _cimpl.DeferredList, _cimpl.gatherResults)


@pytest.fixture(params=["twisted", "c", "c-over-twisted", "twisted-over-c"])
def dl(request):
    if request.param == "twisted":
        return _twisted()
    if request.param == "c":
        return _c()
    if request.param == "c-over-twisted":
        return _ns(defer.Deferred, _cimpl.DeferredList, _cimpl.gatherResults)
    return _ns(_cimpl.Deferred, defer.DeferredList, defer.gatherResults)


class Boom(Exception):
    pass


def taken(d):
    """d's result, taken (a Failure counts as handled)."""
    seen = []
    d.addBoth(lambda r: seen.append(r))
    return seen[0] if seen else "<pending>"


@pytest.fixture
def logged():
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def test_emptyListFiresAtOnce(dl):
    assert taken(dl.DeferredList([])) == []
    assert taken(dl.DeferredList([], fireOnOneCallback=True)) == "<pending>"


def test_allSucceedInOrderOfTheList(dl):
    members = [dl.Deferred() for _ in range(3)]
    members[1].callback("b")
    lst = dl.DeferredList(members)
    assert lst.finishedCount == 1
    assert lst.resultList == [None, (True, "b"), None]
    assert not lst.called
    members[2].callback("c")
    members[0].callback("a")
    assert taken(lst) == [(True, "a"), (True, "b"), (True, "c")]
    assert lst.finishedCount == 3
    assert [m.result for m in members] == ["a", "b", "c"]


def test_attributesAsTwistedKeepsThem(dl):
    members = [dl.Deferred()]
    flag = []  # a truthy... no, falsy non-bool object kept as given
    lst = dl.DeferredList(members, fireOnOneCallback=1, fireOnOneErrback=flag, consumeErrors="yes")
    assert lst.fireOnOneCallback == 1 and type(lst.fireOnOneCallback) is int
    assert lst.fireOnOneErrback is flag
    assert lst.consumeErrors == "yes"
    assert lst._deferredList == members
    assert lst._deferredList is not members
    members[0].callback(5)
    assert taken(lst) == (5, 0)


def test_fireOnOneErrbackGivesFirstError(dl):
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members, fireOnOneErrback=True)
    members[1].errback(Boom("second"))
    failure = taken(lst)
    assert failure.check(defer.FirstError)
    assert failure.value.index == 1
    assert failure.value.subFailure.check(Boom)
    assert isinstance(members[1].result, Failure)  # not consumed
    members[1].addErrback(lambda f: None)


def test_consumeErrors(dl, logged):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members, consumeErrors=True)
    members[0].errback(Boom())
    assert members[0].result is None
    (ok, failure), = taken(lst)
    assert ok is False and failure.check(Boom)
    del members, lst, failure
    gc.collect()
    assert not [e for e in logged if "Unhandled" in str(e.get("log_format"))]


def test_cancelCancelsEveryMember(dl, logged):
    cancelled = []
    members = [
        dl.Deferred(lambda d: cancelled.append(0)),
        dl.Deferred(lambda d: 1 / 0),
        dl.Deferred(lambda d: cancelled.append(2)),
    ]
    lst = dl.DeferredList(members, consumeErrors=True)
    lst.cancel()
    assert cancelled == [0, 2]
    failures = [e for e in logged if e.get("log_format") == "Exception raised from user supplied canceller"]
    assert len(failures) == 1 and failures[0]["log_failure"].check(ZeroDivisionError)
    assert not lst.called  # the member whose canceller raised never fired
    members[1].callback("late")
    result = taken(lst)
    assert [ok for ok, _ in result] == [False, True, False]


def test_cancelAfterFiredIsNoOp(dl):
    cancelled = []
    members = [dl.Deferred(lambda d: cancelled.append(d))]
    lst = dl.DeferredList(members, fireOnOneCallback=True)
    other = dl.Deferred(lambda d: cancelled.append(d))
    lst2 = dl.DeferredList([members[0], other], fireOnOneCallback=True)
    members[0].callback(1)
    lst.cancel()
    lst2.cancel()
    assert cancelled == []
    assert taken(lst2) == (1, 0)


def test_generatorIsConsumedOnce(dl):
    members = [dl.Deferred() for _ in range(3)]
    lst = dl.DeferredList(m for m in members)
    for i, m in enumerate(members):
        m.callback(i)
    assert taken(lst) == [(True, 0), (True, 1), (True, 2)]


def test_overriddenCollectorIsUsed(dl):
    seen = []

    class Recording(dl.DeferredList):
        def _cbDeferred(self, result, index, succeeded):
            seen.append((result, index, succeeded))
            return super()._cbDeferred(result, index, succeeded)

    members = [dl.Deferred(), dl.Deferred()]
    lst = Recording(members)
    members[0].callback("x")
    members[1].callback("y")
    assert seen == [("x", 0, True), ("y", 1, True)]
    assert taken(lst) == [(True, "x"), (True, "y")]


def test_firesThroughOverriddenCallbackAndErrback(dl):
    calls = []

    class Watched(dl.DeferredList):
        def callback(self, result):
            calls.append(("callback", result))
            return super().callback(result)

        def errback(self, fail=None):
            calls.append(("errback", fail.type))
            return super().errback(fail)

    Watched([])
    members = [dl.Deferred()]
    Watched(members)
    members[0].callback(1)
    members = [dl.Deferred()]
    taken(Watched(members, fireOnOneErrback=True, consumeErrors=True))
    members[0].errback(Boom())
    assert calls == [("callback", []), ("callback", [(True, 1)]), ("errback", defer.FirstError)]


def test_collectorTakesKeywords(dl):
    class Keywords(dl.DeferredList):
        def _cbDeferred(self, result, index, succeeded):
            return super()._cbDeferred(result, index=index, succeeded=succeeded)

    members = [dl.Deferred()]
    lst = Keywords(members)
    members[0].callback("v")
    assert members[0].result == "v"
    assert taken(lst) == [(True, "v")]
    with pytest.raises(TypeError):
        lst._cbDeferred("r", 0, True, index=0)


def test_finishedCountIsAnyNumber(dl):
    members = [dl.Deferred(), dl.Deferred()]
    lst = dl.DeferredList(members)
    lst.finishedCount = 1.0
    members[0].callback(1)
    assert lst.finishedCount == 2.0 and type(lst.finishedCount) is float
    assert taken(lst) == [(True, 1), None]


def test_isATwistedDeferredList(dl):
    lst = dl.DeferredList([])
    assert isinstance(lst, defer.DeferredList)
    assert isinstance(lst, defer.Deferred)
    assert type(lst) in defer._DEFERRED_SUBCLASSES


def test_gatherResults(dl, logged):
    members = [dl.Deferred(), dl.Deferred()]
    gathered = dl.gatherResults(members)
    members[1].callback(2)
    members[0].callback(1)
    assert taken(gathered) == [1, 2]

    members = [dl.Deferred(), dl.Deferred()]
    gathered = dl.gatherResults(members, consumeErrors=True)
    members[0].errback(Boom())
    failure = taken(gathered)
    assert failure.check(defer.FirstError) and failure.value.subFailure.check(Boom)
    assert members[0].result is None


def test_listAsMemberAndAwaited(dl):
    inner_members = [dl.Deferred()]
    inner = dl.DeferredList(inner_members)
    outer = dl.DeferredList([inner])

    async def main():
        return await inner

    awaited = defer.ensureDeferred(main())
    inner_members[0].callback("v")
    assert taken(awaited) == [(True, "v")]
    # outer's collector was added first, so it saw the list's result; the
    # driver's callback came after and left None.
    assert taken(outer) == [(True, [(True, "v")])]
    assert inner.result is None


def test_badInput(dl):
    with pytest.raises(TypeError):
        dl.DeferredList(5)
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)
    lst.resultList = "not a list"
    members[0].callback(1)
    # The collector's TypeError becomes the member's Failure; the list waits.
    assert members[0].result.check(TypeError)
    members[0].addErrback(lambda f: None)
    assert not lst.called
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)
    del lst.resultList
    members[0].callback(1)
    assert members[0].result.check(AttributeError)
    members[0].addErrback(lambda f: None)


def test_resultListDeletedWhileFiling(dl):
    members = [dl.Deferred()]
    lst = dl.DeferredList(members)

    class Sneaky(list):
        def __setitem__(self, index, value):
            super().__setitem__(index, value)
            del lst.resultList

    lst.resultList = Sneaky([None])
    members[0].callback(1)
    assert members[0].result.check(AttributeError)
    members[0].addErrback(lambda f: None)
    assert not lst.called


def test_tenThousandMembers(dl):
    members = [dl.Deferred() for _ in range(10_000)]
    lst = dl.DeferredList(members)
    for i, m in enumerate(members):
        m.callback(i)
    result = taken(lst)
    assert len(result) == 10_000 and result[-1] == (True, 9_999)


# --- differential -------------------------------------------------------------

programs = st.fixed_dictionaries(
    {
        "members": st.lists(
            st.sampled_from(["fired", "failed", "unfired", "unfired", "raising_canceller"]),
            max_size=5,
        ),
        "gather": st.booleans(),
        "one_cb": st.booleans(),
        "one_eb": st.booleans(),
        "consume": st.booleans(),
        "actions": st.lists(
            st.tuples(st.integers(0, 4), st.sampled_from(["cb", "eb", "cancel", "cancel_list"])),
            max_size=6,
        ),
    }
)


def _show(value):
    if isinstance(value, Failure):
        if value.check(defer.FirstError):
            return ("FirstError", value.value.index, value.value.subFailure.type.__name__)
        return ("failure", value.type.__name__)
    if isinstance(value, (list, tuple)):
        return type(value)(_show(v) for v in value)
    return value


def run_program(program, ns):
    log = []

    def observe(event):
        failure = event.get("log_failure")
        log.append(("log", event.get("log_format"), _show(failure) if failure else None))

    globalLogPublisher.addObserver(observe)
    d = None
    try:
        members = []
        for i, kind in enumerate(program["members"]):
            if kind == "fired":
                d = ns.Deferred()
                d.callback(i)
            elif kind == "failed":
                d = ns.Deferred()
                d.errback(Boom(i))
            elif kind == "raising_canceller":
                d = ns.Deferred(lambda d: 1 / 0)
            else:
                d = ns.Deferred(lambda d, i=i: log.append(("canceller", i)))
            members.append(d)
        if program["gather"]:
            lst = ns.gatherResults(members, consumeErrors=program["consume"])
        else:
            lst = ns.DeferredList(
                members,
                fireOnOneCallback=program["one_cb"],
                fireOnOneErrback=program["one_eb"],
                consumeErrors=program["consume"],
            )
        lst.addBoth(lambda r: log.append(("list", _show(r))) or None)
        for i, act in program["actions"]:
            if i >= len(members):
                continue
            try:
                if act == "cb":
                    members[i].callback(i * 10)
                elif act == "eb":
                    members[i].errback(Boom(100 + i))
                elif act == "cancel":
                    members[i].cancel()
                else:
                    lst.cancel()
            except Exception as e:
                log.append(("api error", type(e).__name__))
            if not program["gather"]:
                log.append(("state", _show(lst.resultList), lst.finishedCount, lst.called))
        for i, d in enumerate(members):
            log.append(("member", i, _show(getattr(d, "result", "<pending>"))))
            d.addErrback(lambda f: None)
        del members, lst, d
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    return log


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs)
def test_sameEventsAsTwistedsDeferredList(program):
    assert run_program(program, _c()) == run_program(program, _twisted())
