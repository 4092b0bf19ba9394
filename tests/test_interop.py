"""cdeferred's C Deferred mixed with Twisted's own, without install() (DESIGN.md 3.1).

Twisted's helpers (inlineCallbacks, ensureDeferred, DeferredList, ...) must treat a
C Deferred as a Deferred, and Deferreds of either kind returned from callbacks of
the other kind must be waited on, in any number, without recursion.
"""

import gc
import weakref

import pytest
from twisted.internet import defer
from twisted.internet.defer import (
    CancelledError,
    DeferredList,
    ensureDeferred,
    gatherResults,
    inlineCallbacks,
    maybeDeferred,
    race,
)
from twisted.python.failure import Failure

pytestmark = pytest.mark.c_extension

_cimpl = pytest.importorskip("cdeferred._cimpl")
C = _cimpl.Deferred
T = defer.Deferred


class Boom(Exception):
    """An exception only these tests raise."""


@pytest.fixture(params=["c", "c-subclass"])
def CD(request):
    """The C Deferred class, or a Python subclass of it."""
    if request.param == "c":
        return C

    class SubDeferred(C):
        pass

    return SubDeferred


# -------------------------------------------------------------------- identity


def test_isinstance_of_twisted_deferred(CD):
    """A C Deferred is an instance of Twisted's Deferred and its type is registered for chaining."""
    d = CD()
    assert isinstance(d, T)
    assert type(d) in defer._DEFERRED_SUBCLASSES
    assert issubclass(CD, T)


def test_twisted_deferred_is_not_a_c_deferred():
    """Twisted's own Deferred is not an instance of the C class."""
    assert not isinstance(T(), C)


# ------------------------------------------------------------- Twisted helpers


def test_inlineCallbacks_waits_on_c_deferred(CD):
    """inlineCallbacks waits for an unfired C Deferred and resumes with its result."""

    @inlineCallbacks
    def work(d):
        value = yield d
        return value + 1

    d = CD()
    result = work(d)
    assert not result.called
    d.callback(1)
    assert result.result == 2


def test_inlineCallbacks_fired_and_failed_c_deferreds(CD):
    """inlineCallbacks takes a fired C Deferred's result at once, and raises a failed one's error."""

    @inlineCallbacks
    def work(ok, bad):
        value = yield ok
        try:
            yield bad
        except Boom as e:
            return (value, e.args)

    ok, bad = CD(), CD()
    ok.callback("ok")
    bad.errback(Boom("bad"))
    assert work(ok, bad).result == ("ok", ("bad",))


def test_inlineCallbacks_cancel_reaches_c_deferred(CD):
    """Cancelling an inlineCallbacks Deferred cancels the C Deferred it waits on."""
    calls = []

    @inlineCallbacks
    def work(d):
        yield d

    d = CD(calls.append)
    result = work(d)
    seen = []
    result.addErrback(lambda f: seen.append(f.type))
    result.cancel()
    assert calls == [d]
    assert seen == [CancelledError]


def test_inlineCallbacks_returns_c_deferred_chain(CD):
    """An inlineCallbacks generator may yield many C Deferreds in sequence."""

    @inlineCallbacks
    def work(ds):
        total = 0
        for d in ds:
            total += yield d
        return total

    ds = [CD() for _ in range(50)]
    result = work(ds)
    for i, d in enumerate(ds):
        d.callback(i)
    assert result.result == sum(range(50))


def test_ensureDeferred_with_coroutine_awaiting_c_deferred(CD):
    """ensureDeferred runs a coroutine that awaits a C Deferred."""

    async def work(d):
        return (await d) * 3

    d = CD()
    result = ensureDeferred(work(d))
    d.callback(2)
    assert result.result == 6


def test_ensureDeferred_passes_c_deferred_through(CD):
    """ensureDeferred returns a C Deferred unchanged."""
    d = CD()
    assert ensureDeferred(d) is d


def test_fromCoroutine_of_twisted_awaits_c_deferred(CD):
    """Twisted's Deferred.fromCoroutine drives a coroutine awaiting C Deferreds."""

    async def work(a, b):
        return (await a) + (await b)

    a, b = CD(), CD()
    result = T.fromCoroutine(work(a, b))
    b.callback(2)
    a.callback(1)
    assert result.result == 3


def test_maybeDeferred_returns_c_deferred(CD):
    """maybeDeferred returns a C Deferred returned by the function as is."""
    d = CD()
    assert maybeDeferred(lambda: d) is d


def test_DeferredList_of_c_deferreds(CD):
    """DeferredList collects the results and failures of C Deferreds in order."""
    a, b, c = CD(), CD(), CD()
    dl = DeferredList([a, b, c], consumeErrors=True)
    c.callback("c")
    b.errback(Boom())
    a.callback("a")
    (ok_a, res_a), (ok_b, res_b), (ok_c, res_c) = dl.result
    assert (ok_a, res_a, ok_c, res_c) == (True, "a", True, "c")
    assert ok_b is False and res_b.check(Boom)


def test_DeferredList_fireOnOneCallback_with_c_deferreds(CD):
    """DeferredList(fireOnOneCallback=True) fires on the first C Deferred that succeeds."""
    a, b = CD(), CD()
    dl = DeferredList([a, b], fireOnOneCallback=True)
    b.callback("first")
    assert dl.result == ("first", 1)
    a.callback("later")


def test_DeferredList_cancel_cancels_c_deferreds(CD):
    """Cancelling a DeferredList cancels its unfired C Deferreds."""
    calls = []
    a, b = CD(calls.append), CD(calls.append)
    dl = DeferredList([a, b], consumeErrors=True)
    dl.cancel()
    assert calls == [a, b]
    assert all(not ok and r.check(CancelledError) for ok, r in dl.result)


def test_gatherResults_of_c_deferreds(CD):
    """gatherResults gathers C Deferred results, and fails with FirstError on a failure."""
    a, b = CD(), CD()
    g = gatherResults([a, b])
    b.callback(2)
    a.callback(1)
    assert g.result == [1, 2]
    x, y = CD(), CD()
    g = gatherResults([x, y], consumeErrors=True)
    y.errback(Boom())
    assert g.result.check(defer.FirstError)
    assert g.result.value.subFailure.check(Boom)
    g.addErrback(lambda f: None)
    x.callback(None)


def test_race_of_c_deferreds(CD):
    """race fires with the first C Deferred's index and result and cancels the others."""
    calls = []
    a, b = CD(calls.append), CD(calls.append)
    r = race([a, b])
    b.callback("winner")
    assert r.result == (1, "winner")
    assert calls == [a]


def test_mixed_DeferredList(CD):
    """A DeferredList may mix C and Twisted Deferreds."""
    a, b = CD(), T()
    dl = DeferredList([a, b])
    b.callback("t")
    a.callback("c")
    assert dl.result == [(True, "c"), (True, "t")]


# ------------------------------------------------- returned from each other's callbacks


def test_c_deferred_unfired_returned_from_twisted_callback(CD):
    """A Twisted Deferred whose callback returns an unfired C Deferred waits for it."""
    t, c = T(), CD()
    t.addCallback(lambda _: c)
    seen = []
    t.addCallback(seen.append)
    t.callback(None)
    assert t._chainedTo is c and t.paused == 1
    assert seen == []
    c.callback("from c")
    assert seen == ["from c"]
    assert t.paused == 0 and t._chainedTo is None
    assert c.result is None


def test_c_deferred_fired_returned_from_twisted_callback(CD):
    """A Twisted Deferred whose callback returns a fired C Deferred takes its result."""
    c = CD()
    c.callback("ready")
    t = T()
    t.addCallback(lambda _: c)
    t.callback(None)
    assert t.result == "ready"
    assert c.result is None


def test_twisted_deferred_unfired_returned_from_c_callback(CD):
    """A C Deferred whose callback returns an unfired Twisted Deferred waits for it."""
    c, t = CD(), T()
    c.addCallback(lambda _: t)
    seen = []
    c.addCallback(seen.append)
    c.callback(None)
    assert c._chainedTo is t and c.paused == 1
    t.callback("from twisted")
    assert seen == ["from twisted"]
    assert c.paused == 0 and c._chainedTo is None
    assert t.result is None


def test_twisted_deferred_fired_returned_from_c_callback(CD):
    """A C Deferred whose callback returns a fired Twisted Deferred takes its result."""
    t = T()
    t.callback("ready")
    c = CD()
    c.addCallback(lambda _: t)
    c.callback(None)
    assert c.result == "ready"
    assert t.result is None


def test_failure_crosses_both_ways(CD):
    """A failure of the inner Deferred reaches the outer one's errbacks in both directions."""
    for outer_cls, inner_cls in ((T, CD), (CD, T)):
        outer, inner = outer_cls(), inner_cls()
        outer.addCallback(lambda _, inner=inner: inner)
        seen = []
        outer.addErrback(lambda f: seen.append(f.type))
        outer.callback(None)
        inner.errback(Boom())
        assert seen == [Boom]


def test_cancel_crosses_both_ways(CD):
    """Cancelling an outer Deferred waiting on the other kind cancels the inner one."""
    for outer_cls, inner_cls in ((T, CD), (CD, T)):
        calls = []
        inner = inner_cls(calls.append)
        outer = outer_cls()
        outer.addCallback(lambda _, inner=inner: inner)
        seen = []
        outer.addErrback(lambda f: seen.append(f.type))
        outer.callback(None)
        outer.cancel()
        assert calls == [inner]
        assert seen == [CancelledError]


def test_paused_inner_of_other_kind_is_waited_on(CD):
    """A fired but paused inner Deferred of the other kind is waited on until unpaused."""
    for outer_cls, inner_cls in ((T, CD), (CD, T)):
        inner = inner_cls()
        inner.callback("x")
        inner.pause()
        outer = outer_cls()
        outer.addCallback(lambda _, inner=inner: inner)
        outer.callback(None)
        assert outer._chainedTo is inner
        inner.unpause()
        assert outer.result == "x"


def test_chainDeferred_across_kinds(CD):
    """chainDeferred works from a C Deferred to a Twisted one and back."""
    c, t = CD(), T()
    c.chainDeferred(t)
    c.callback(1)
    assert t.result == 1
    t2, c2 = T(), CD()
    t2.chainDeferred(c2)
    t2.callback(2)
    assert c2.result == 2


def test_unhandled_failure_taken_by_twisted_waiter_not_logged_twice(CD, captured_log):
    """A C Deferred's failure handed to a waiting Twisted Deferred is reported once, by the waiter."""

    class Crossing(Exception):
        pass

    inner, outer = CD(), T()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    inner.errback(Crossing())
    del inner, outer
    gc.collect()
    mine = [e for e in captured_log if e.get("log_failure") is not None and e["log_failure"].check(Crossing)]
    assert len(mine) == 1


# ------------------------------------------------------------- deep chains


def _resolve_chain(kinds, n):
    """n Deferreds, each returned by the previous one's callback; returns (first, last)."""
    ds = [kinds[i % len(kinds)]() for i in range(n)]
    for outer, inner in zip(ds, ds[1:]):
        outer.addCallback(lambda _, inner=inner: inner)
    for d in ds[:-1]:
        d.callback(None)
    return ds


N_DEEP = 100_000


@pytest.mark.parametrize("kinds", [(C,), (C, T), (T, C)], ids=["c-only", "c-twisted", "twisted-c"])
def test_deep_chain_resolves(kinds):
    """100,000 Deferreds, each returned by the previous one's callback, resolve when the last fires."""
    ds = _resolve_chain(kinds, N_DEEP)
    seen = []
    ds[0].addCallback(seen.append)
    assert seen == []
    ds[-1].callback("bottom")
    assert seen == ["bottom"]
    assert all(d.paused == 0 for d in ds)


@pytest.mark.parametrize("kinds", [(C,), (C, T)], ids=["c-only", "c-twisted"])
def test_deep_chain_of_fired_deferreds(kinds):
    """100,000 Deferreds each returning the next, already fired one, resolve at once."""
    ds = [kinds[i % len(kinds)]() for i in range(N_DEEP)]
    ds[-1].callback("bottom")
    for i in range(N_DEEP - 2, -1, -1):
        ds[i].addCallback(lambda _, inner=ds[i + 1]: inner)
        ds[i].callback(None)
    assert ds[0].result == "bottom"


@pytest.mark.parametrize("kinds", [(C,), (C, T)], ids=["c-only", "c-twisted"])
@pytest.mark.parametrize("fire", [False, True], ids=["unfired", "fired"])
def test_deep_chain_freed(kinds, fire):
    """Dropping a 100,000-deep chain (unfired, or fired) frees every Deferred without crashing."""
    ds = _resolve_chain(kinds, N_DEEP)
    if fire:
        ds[-1].callback("bottom")
    first, last = weakref.ref(ds[0]), weakref.ref(ds[-1])
    del ds
    gc.collect()
    assert first() is None and last() is None


@pytest.mark.parametrize("kinds", [(C,), (C, T)], ids=["c-only", "c-twisted"])
def test_deep_linear_chain_freed_without_gc(kinds):
    """A 100,000-long chain held only through callbacks is freed by reference counting alone."""
    head = d = kinds[0]()
    tail_ref = None
    for i in range(N_DEEP):
        nxt = kinds[(i + 1) % len(kinds)]()
        d.addCallback(lambda _, nxt=nxt: nxt)
        d = nxt
    tail_ref = weakref.ref(d)
    del d, nxt
    gc.disable()
    try:
        del head
        assert tail_ref() is None
    finally:
        gc.enable()


# --------------------------------------------------------------------- cycles


def test_cycle_through_callback_collected(CD):
    """A Deferred whose callback closes over the Deferred itself is collected once unreachable."""
    d = CD()
    d.addCallback(lambda r: d)
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


def test_cycle_through_canceller_collected(CD):
    """A Deferred whose canceller refers back to it is collected once unreachable."""
    d = CD()
    d._canceller = lambda _: d.callback(None)
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


def test_cycle_through_result_collected(CD):
    """A fired Deferred whose result refers back to it is collected once unreachable."""
    d = CD()
    d.callback([None])
    d.result[0] = d
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


def test_cycle_between_waiting_deferreds_collected(CD):
    """Two Deferreds waiting on each other, of both kinds, are collected once unreachable."""
    for other in (CD, T):
        a, b = CD(), other()
        a.addCallback(lambda _: b)
        b.addCallback(lambda _: a)
        a.callback(None)
        b.callback(None)
        refs = [weakref.ref(a), weakref.ref(b)]
        del a, b
        gc.collect()
        assert [r() for r in refs] == [None, None]


def test_cycle_through_instance_dict_collected(CD):
    """A Deferred referring to itself through an instance attribute and a link is collected."""
    d = CD()
    d.me = d
    d.addBoth(lambda r, me=d: me)
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


def test_cycle_through_callbacks_list_collected(CD):
    """A cycle through the materialised ``_callbacks`` list is collected."""
    d = CD()
    d._callbacks.append(((lambda r, x: r, (d,), {}), (defer._failthru, (), {})))
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None


def test_failure_in_collected_cycle_does_not_leak_the_failure(CD, captured_log):
    """A Failure held by a collected cyclic Deferred is itself freed after being reported."""

    class Cyclic(Exception):
        pass

    d = CD()
    d.errback(Cyclic())
    failure_ref = weakref.ref(d.result)
    d.me = d
    del d
    gc.collect()
    gc.collect()
    assert failure_ref() is None
    assert any(
        e.get("log_failure") is not None and e["log_failure"].check(Cyclic) for e in captured_log
    )


def test_failure_type_is_twisted_failure(CD):
    """A callback's exception in a C Deferred becomes a twisted.python.failure.Failure."""
    d = CD()
    d.addCallback(lambda r: 1 / 0)
    d.callback(None)
    assert type(d.result) is Failure
    d.addErrback(lambda f: None)
