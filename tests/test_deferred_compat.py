"""Behavioural tests of the Twisted-compatible Deferred API (DESIGN.md section 3.1).

Every test runs on the ``compat`` fixture: Twisted's own Deferred is one of its
parameters, so each expectation written here is first proven on Twisted, then
required of the C core, a Python subclass of it, and the pure-Python reference.
"""

import asyncio
import gc
import re
import sys
import traceback
import warnings
import weakref

import pytest
from twisted.internet import defer
from twisted.internet.defer import (
    AlreadyCalledError,
    CancelledError,
    DebugInfo,
    TimeoutError,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure


class Boom(Exception):
    """An exception only these tests raise."""


def failure_of(exc):
    """A Failure built the ordinary way, from a raised exception."""
    try:
        raise exc
    except BaseException:
        return Failure()


def consume(d):
    """Handle whatever failure ``d`` ends with, so nothing is logged at collection."""
    d.addErrback(lambda f: None)


def unhandled_events(events):
    """The 'Unhandled error in Deferred:' events among captured log events."""
    return [e for e in events if e.get("log_format") == "Unhandled error in Deferred:"]


def logged_failures(events):
    """The Failures carried by captured log events."""
    return [e["log_failure"] for e in events if e.get("log_failure") is not None]


# ----------------------------------------------------------------- construction


def test_construct_defaults(compat):
    """A new Deferred is not called, not paused, has no result and no canceller."""
    d = compat.Deferred()
    assert not d.called
    assert d.paused == 0
    assert not hasattr(d, "result")
    assert d._canceller is None
    assert d._chainedTo is None


def test_construct_with_canceller_positional_and_keyword(compat):
    """The canceller may be passed positionally or as ``canceller=`` and is kept as ``_canceller``."""

    def canceller(d):
        pass

    assert compat.Deferred(canceller)._canceller is canceller
    assert compat.Deferred(canceller=canceller)._canceller is canceller
    assert compat.Deferred(None)._canceller is None


def test_construct_rejects_extra_arguments(compat):
    """Arguments Twisted's constructor does not take raise TypeError."""
    with pytest.raises(TypeError):
        compat.Deferred(None, None)
    with pytest.raises(TypeError):
        compat.Deferred(bogus=1)


# ---------------------------------------------------------------- adding links


def test_add_methods_return_self(compat):
    """addCallbacks, addCallback, addErrback and addBoth all return the Deferred itself."""
    d = compat.Deferred()
    f = lambda r: r  # noqa: E731
    assert d.addCallbacks(f) is d
    assert d.addCallbacks(f, f) is d
    assert d.addCallback(f) is d
    assert d.addErrback(f) is d
    assert d.addBoth(f) is d
    d.callback(None)
    assert d.addCallback(f) is d


def test_addCallback_passes_extra_args_and_kwargs(compat):
    """addCallback's extra positional and keyword arguments follow the result."""
    d = compat.Deferred()
    seen = []
    d.addCallback(lambda r, *a, **k: seen.append((r, a, k)), 1, 2, key="v")
    d.callback("res")
    assert seen == [("res", (1, 2), {"key": "v"})]


def test_addCallback_callable_by_keyword(compat):
    """The callable itself may be passed to addCallback as ``callback=``."""
    d = compat.Deferred()
    d.addCallback(callback=lambda r: r + 1)
    d.callback(1)
    assert d.result == 2


def test_addErrback_callable_by_keyword_and_args(compat):
    """addErrback takes ``errback=`` and hands its extra arguments to the errback."""
    d = compat.Deferred()
    seen = []
    d.addErrback(errback=lambda f, **k: seen.append((f.type, k)))
    d.addErrback(lambda f, a: seen.append(a), "unused")
    d.errback(Boom())
    assert seen == [(Boom, {})]
    assert d.result is None


def test_addCallback_positional_and_keyword_callable_conflict(compat):
    """Passing the callable positionally and again as ``callback=`` raises TypeError."""
    d = compat.Deferred()
    with pytest.raises(TypeError):
        d.addCallback(lambda r, **k: k, callback=1)
    with pytest.raises(TypeError):
        d.addErrback(lambda f, **k: k, errback=1)
    with pytest.raises(TypeError):
        d.addBoth(lambda r, **k: k, callback=1)


def test_addCallback_without_callable_raises(compat):
    """addCallback, addErrback and addBoth with no callable raise TypeError."""
    d = compat.Deferred()
    for method in (d.addCallback, d.addErrback, d.addBoth, d.addCallbacks):
        with pytest.raises(TypeError):
            method()


def test_addCallbacks_keyword_containers(compat):
    """callbackArgs/callbackKeywords and errbackArgs/errbackKeywords reach the right side."""
    ok = compat.Deferred()
    seen = []
    ok.addCallbacks(
        lambda r, *a, **k: seen.append(("cb", r, a, k)),
        lambda f, *a, **k: seen.append(("eb", a, k)),
        callbackArgs=(1,), callbackKeywords={"c": 2},
        errbackArgs=(3,), errbackKeywords={"e": 4},
    )
    ok.callback("r")
    bad = compat.Deferred()
    bad.addCallbacks(
        lambda r, *a, **k: seen.append(("cb", r, a, k)),
        lambda f, *a, **k: seen.append(("eb", a, k)),
        callbackArgs=(1,), callbackKeywords={"c": 2},
        errbackArgs=(3,), errbackKeywords={"e": 4},
    )
    bad.errback(Boom())
    assert seen == [("cb", "r", (1,), {"c": 2}), ("eb", (3,), {"e": 4})]


def test_addCallbacks_positional_containers(compat):
    """addCallbacks' argument containers may be given positionally, a list as args."""
    d = compat.Deferred()
    d.addCallbacks(lambda r, *a, **k: (r, a, k), None, [1, 2], {"x": 1})
    d.callback(0)
    assert d.result == (0, (1, 2), {"x": 1})


def test_addCallbacks_none_containers(compat):
    """None for any argument container means no arguments (the old defaults)."""
    d = compat.Deferred()
    d.addCallbacks(
        lambda r, *a, **k: (r, a, k), lambda f, *a, **k: (a, k),
        callbackArgs=None, callbackKeywords=None, errbackArgs=None, errbackKeywords=None,
    )
    d.callback(1)
    assert d.result == (1, (), {})
    e = compat.Deferred()
    e.addCallbacks(
        lambda r, *a, **k: (r, a, k), lambda f, *a, **k: (a, k),
        callbackArgs=None, callbackKeywords=None, errbackArgs=None, errbackKeywords=None,
    )
    e.errback(Boom())
    assert e.result == ((), {})


def test_addCallbacks_without_errback_passes_failure_on(compat):
    """A link added without an errback passes a failure on unchanged."""
    d = compat.Deferred()
    calls = []
    d.addCallbacks(calls.append)
    d.addCallback(calls.append)
    f = failure_of(Boom())
    d.errback(f)
    assert calls == []
    assert d.result is f
    consume(d)


def test_addErrback_passes_results_on(compat):
    """An errback-only link passes a success result on unchanged."""
    d = compat.Deferred()
    d.addErrback(lambda f: "recovered")
    d.callback("value")
    assert d.result == "value"


def test_addBoth_sees_results_and_failures(compat):
    """addBoth's callable is called for a result and for a failure alike."""
    seen = []
    ok = compat.Deferred().addBoth(lambda r, tag: seen.append((tag, r)), "ok")
    ok.callback(5)
    bad = compat.Deferred().addBoth(lambda r, tag: seen.append((tag, r.type)), "bad")
    bad.errback(Boom())
    assert seen == [("ok", 5), ("bad", Boom)]


def test_links_added_after_firing_run_at_once(compat):
    """A callback added to a fired Deferred runs immediately with the current result."""
    d = compat.Deferred()
    d.callback(3)
    seen = []
    d.addCallback(seen.append)
    assert seen == [3]
    assert d.result is None


def test_non_callable_callback_fails_when_run(compat):
    """A non-callable callback is accepted when added and becomes a TypeError failure when run."""
    d = compat.Deferred()
    d.addCallback(5)
    d.callback(1)
    assert isinstance(d.result, Failure)
    assert d.result.check(TypeError)
    consume(d)


# ---------------------------------------------------------- callback / errback


def test_results_flow_through_the_chain(compat):
    """Each callback gets the previous one's return value."""
    d = compat.Deferred()
    d.addCallback(lambda r: r + 1).addCallback(lambda r: r * 10)
    d.callback(1)
    assert d.result == 20


def test_raising_callback_switches_to_errbacks(compat):
    """An exception raised by a callback becomes a Failure handed to the next errback."""
    d = compat.Deferred()
    skipped = []
    d.addCallback(lambda r: 1 / 0)
    d.addCallback(skipped.append)
    d.addErrback(lambda f: ("handled", f.type))
    d.callback(1)
    assert skipped == []
    assert d.result == ("handled", ZeroDivisionError)


def test_errback_returning_value_switches_back(compat):
    """An errback that returns a plain value puts the chain back on the callback side."""
    d = compat.Deferred()
    d.addErrback(lambda f: "fine")
    d.addCallback(lambda r: r + "!")
    d.errback(Boom())
    assert d.result == "fine!"


def test_callback_returning_failure_switches_to_errbacks(compat):
    """A callback that returns a Failure sends the chain to the errback side."""
    d = compat.Deferred()
    f = failure_of(Boom("x"))
    d.addCallback(lambda r: f)
    d.addErrback(lambda got: got)
    d.callback(None)
    assert d.result is f
    consume(d)


def test_callback_with_failure_runs_errbacks(compat):
    """callback(aFailure) behaves as errback(aFailure)."""
    d = compat.Deferred()
    f = failure_of(Boom())
    seen = []
    d.addCallbacks(lambda r: seen.append("cb"), lambda got: seen.append(got))
    d.callback(f)
    assert seen == [f]


def test_errback_wraps_exception(compat):
    """errback(exception) wraps the exception in a Failure."""
    d = compat.Deferred()
    exc = Boom("wrapped")
    d.errback(exc)
    assert isinstance(d.result, Failure)
    assert d.result.value is exc
    assert d.result.type is Boom
    consume(d)


def test_errback_keeps_failure(compat):
    """errback(aFailure) passes that very Failure to the errbacks."""
    d = compat.Deferred()
    f = failure_of(Boom())
    d.errback(f)
    assert d.result is f
    consume(d)


def test_errback_without_argument_uses_current_exception(compat):
    """errback() inside an except block wraps the exception being handled, with its traceback."""
    d = compat.Deferred()
    try:
        raise Boom("current")
    except Boom:
        d.errback()
    assert d.result.type is Boom
    assert d.result.value.args == ("current",)
    assert d.result.frames, "the traceback is kept"
    consume(d)


def test_errback_without_argument_outside_except_raises(compat):
    """errback() with no exception being handled raises NoCurrentExceptionError and fires nothing."""
    from twisted.python.failure import NoCurrentExceptionError

    d = compat.Deferred()
    with pytest.raises(NoCurrentExceptionError):
        d.errback()
    assert not d.called


def test_errback_with_non_exception(compat):
    """errback(non-exception) does not raise: like Twisted, it wraps the object in a Failure."""
    d = compat.Deferred()
    d.errback("not an exception")
    assert isinstance(d.result, Failure)
    assert d.result.type is str
    assert d.result.value == "not an exception"
    consume(d)


def test_callback_and_errback_take_keyword_names(compat):
    """callback(result=...) and errback(fail=...) work as in Twisted."""
    d = compat.Deferred()
    d.callback(result=1)
    assert d.result == 1
    e = compat.Deferred()
    e.errback(fail=Boom())
    assert e.result.type is Boom
    consume(e)


@pytest.mark.parametrize("first", ["callback", "errback"])
@pytest.mark.parametrize("second", ["callback", "errback"])
def test_firing_twice_raises_AlreadyCalledError(compat, first, second):
    """Any second callback/errback raises AlreadyCalledError and leaves the result alone."""
    d = compat.Deferred()
    getattr(d, first)(Boom() if first == "errback" else "first")
    before = d.result
    with pytest.raises(AlreadyCalledError):
        getattr(d, second)(Boom() if second == "errback" else "second")
    assert d.result is before
    consume(d)


def test_AlreadyCalledError_message_empty_without_debugging(compat):
    """Without debugging, AlreadyCalledError carries no traceback text."""
    d = compat.Deferred()
    d.callback(1)
    with pytest.raises(AlreadyCalledError) as info:
        d.callback(2)
    assert "C:" not in str(info.value)
    assert "I:" not in str(info.value)


def test_callback_with_a_deferred(compat):
    """callback(aDeferred) is accepted: the Deferred is the result the callbacks see."""
    d = compat.Deferred()
    inner = compat.Deferred()
    seen = []
    d.addCallback(seen.append)
    d.callback(inner)
    assert seen == [inner]
    e = compat.Deferred()
    e.callback(inner)
    assert e.result is inner
    assert e.called


def test_callback_with_a_deferred_then_cancel_cancels_it(compat):
    """A Deferred whose result is an unfired Deferred forwards cancel() to it."""
    inner = compat.Deferred()
    consume(inner)
    d = compat.Deferred()
    d.callback(inner)
    d.cancel()
    assert inner.called
    assert inner.result is None


# ------------------------------------------------------------- pause / unpause


def test_pause_holds_callbacks_until_unpause(compat):
    """Callbacks do not run while the Deferred is paused, and run on unpause."""
    d = compat.Deferred()
    seen = []
    d.addCallback(seen.append)
    d.pause()
    d.callback(1)
    assert seen == []
    assert d.paused == 1
    d.unpause()
    assert seen == [1]
    assert d.paused == 0


def test_nested_pause(compat):
    """Pauses nest: callbacks run only when every pause is undone."""
    d = compat.Deferred()
    seen = []
    d.addCallback(seen.append)
    d.pause()
    d.pause()
    d.callback(1)
    d.unpause()
    assert seen == [] and d.paused == 1
    d.unpause()
    assert seen == [1] and d.paused == 0


def test_pause_after_firing_holds_new_callbacks(compat):
    """A fired Deferred that is paused keeps newly added callbacks until unpaused."""
    d = compat.Deferred()
    d.callback(1)
    d.pause()
    seen = []
    d.addCallback(seen.append)
    assert seen == []
    d.unpause()
    assert seen == [1]


def test_unpause_below_zero(compat):
    """Unpausing more than pausing makes ``paused`` negative, which holds callbacks like a pause."""
    d = compat.Deferred()
    d.unpause()
    assert d.paused == -1
    seen = []
    d.addCallback(seen.append)
    d.callback(1)
    assert seen == []
    d.pause()
    assert d.paused == 0
    assert seen == []
    d.pause()
    d.unpause()
    assert seen == [1]


def test_unpause_unfired_runs_nothing(compat):
    """Unpausing a Deferred that has not fired runs nothing."""
    d = compat.Deferred()
    seen = []
    d.addCallback(seen.append)
    d.pause()
    d.unpause()
    assert seen == [] and not d.called


# ----------------------------------------------------------------------- cancel


def test_cancel_calls_canceller_with_the_deferred(compat):
    """cancel() calls the creator's canceller with the Deferred, then errbacks CancelledError."""
    calls = []
    d = compat.Deferred(calls.append)
    seen = []
    d.addErrback(lambda f: seen.append(f.type))
    d.cancel()
    assert calls == [d]
    assert seen == [CancelledError]


def test_cancel_without_canceller_errbacks(compat):
    """cancel() with no canceller errbacks with CancelledError and sets _suppressAlreadyCalled."""
    d = compat.Deferred()
    seen = []
    d.addErrback(lambda f: seen.append(f.value))
    d.cancel()
    assert len(seen) == 1 and isinstance(seen[0], CancelledError)
    assert d._suppressAlreadyCalled


def test_cancel_without_canceller_swallows_one_later_fire(compat):
    """After cancel() without a canceller, one later callback/errback is swallowed, a second raises."""
    d = compat.Deferred()
    consume(d)
    d.cancel()
    d.callback("late")
    assert d.result is None
    assert not d._suppressAlreadyCalled
    with pytest.raises(AlreadyCalledError):
        d.errback(Boom())


def test_cancel_with_canceller_does_not_swallow(compat):
    """After cancel() with a canceller that did not fire, a later callback raises AlreadyCalledError."""
    d = compat.Deferred(lambda d: None)
    consume(d)
    d.cancel()
    assert not d._suppressAlreadyCalled
    with pytest.raises(AlreadyCalledError):
        d.callback("late")


def test_canceller_that_fires_wins(compat):
    """A canceller that fires the Deferred prevents the CancelledError."""
    d = compat.Deferred(lambda d: d.callback("from canceller"))
    d.cancel()
    assert d.result == "from canceller"


def test_canceller_exception_propagates(compat):
    """An exception raised by the creator's canceller propagates out of cancel() and nothing fires."""

    def canceller(d):
        raise Boom("canceller")

    d = compat.Deferred(canceller)
    with pytest.raises(Boom):
        d.cancel()
    assert not d.called


def test_cancel_after_fire_is_a_no_op(compat):
    """cancel() on a fired Deferred that waits on nothing changes nothing."""
    calls = []
    d = compat.Deferred(calls.append)
    d.callback("done")
    d.cancel()
    assert d.result == "done"
    assert calls == []


def test_canceller_dropped_after_firing(compat):
    """Firing a Deferred forgets its canceller (it can never be called)."""
    d = compat.Deferred(lambda d: None)
    d.callback(1)
    assert d._canceller is None


def test_cancel_chained_deferred_cancels_inner(compat):
    """Cancelling a Deferred that waits on another one cancels the inner one instead."""
    calls = []
    inner = compat.Deferred(calls.append)
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    seen = []
    outer.addErrback(lambda f: seen.append(f.type))
    outer.callback(None)
    outer.cancel()
    assert calls == [inner]
    assert seen == [CancelledError]
    assert inner.called and outer.called
    assert outer._chainedTo is None


def test_cancel_twice(compat):
    """A second cancel() of a cancelled Deferred is a no-op."""
    calls = []
    d = compat.Deferred(calls.append)
    consume(d)
    d.cancel()
    d.cancel()
    assert calls == [d]


# --------------------------------------------------------------- chainDeferred


def test_chainDeferred_forwards_result(compat):
    """a.chainDeferred(b) returns a, marks b chained to a, and fires b with a's result."""
    a, b = compat.Deferred(), compat.Deferred()
    assert a.chainDeferred(b) is a
    assert b._chainedTo is a
    seen = []
    b.addCallback(seen.append)
    a.callback("r")
    assert seen == ["r"]
    assert a.result is None, "b.callback returns None, which becomes a's result"


def test_chainDeferred_forwards_failure(compat):
    """A failure of the first Deferred errbacks the chained one."""
    a, b = compat.Deferred(), compat.Deferred()
    a.chainDeferred(b)
    seen = []
    b.addErrback(lambda f: seen.append(f.type))
    a.errback(Boom())
    assert seen == [Boom]


def test_chainDeferred_cancel_does_not_go_upstream(compat):
    """Cancelling the chained Deferred does not cancel the one it follows."""
    a, b = compat.Deferred(), compat.Deferred()
    a.chainDeferred(b)
    consume(b)
    b.cancel()
    assert b.called and not a.called


def test_chainDeferred_to_itself(compat):
    """Chaining a Deferred to itself makes its firing fail with AlreadyCalledError."""
    d = compat.Deferred()
    d.chainDeferred(d)
    d.callback(1)
    assert isinstance(d.result, Failure)
    assert d.result.check(AlreadyCalledError)
    consume(d)


# ------------------------------------------------------------------ addTimeout


def test_addTimeout_fires_in_time(compat):
    """A Deferred that fires before its timeout keeps its result, and the timer is cancelled."""
    clock = Clock()
    d = compat.Deferred()
    assert d.addTimeout(5, clock) is d
    clock.advance(4)
    d.callback("in time")
    assert d.result == "in time"
    assert clock.getDelayedCalls() == []


def test_addTimeout_times_out(compat):
    """A Deferred that does not fire in time fails with TimeoutError."""
    clock = Clock()
    d = compat.Deferred()
    d.addTimeout(5, clock)
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.2)
    assert d.result.check(TimeoutError)
    consume(d)


def test_addTimeout_calls_canceller(compat):
    """Timing out cancels the Deferred, so the creator's canceller runs."""
    clock = Clock()
    calls = []
    d = compat.Deferred(calls.append)
    d.addTimeout(1, clock)
    clock.advance(1)
    assert calls == [d]
    assert d.result.check(TimeoutError)
    consume(d)


def test_addTimeout_onTimeoutCancel(compat):
    """onTimeoutCancel gets the cancelled result and the timeout, and its return value wins."""
    clock = Clock()
    d = compat.Deferred()
    d.addTimeout(3, clock, onTimeoutCancel=lambda r, t: ("timed out", t, r.type))
    clock.advance(3)
    assert d.result == ("timed out", 3, CancelledError)


def test_addTimeout_canceller_result_is_not_converted(compat):
    """A canceller that fires with a result on time-out leaves that result unconverted."""
    clock = Clock()
    d = compat.Deferred(lambda d: d.callback("canceller's result"))
    d.addTimeout(1, clock)
    clock.advance(1)
    assert d.result == "canceller's result"


# ------------------------------------------------------------- await / iteration


def test_iter_protocol(compat):
    """iter(d) yields d until it fires, then stops with the result as StopIteration.value."""
    d = compat.Deferred()
    it = iter(d)
    assert next(it) is d
    assert next(it) is d
    d.callback((1, 2))
    with pytest.raises(StopIteration) as stop:
        next(it)
    assert stop.value.value == (1, 2)


def test_iter_raises_failure(compat):
    """iter(d) of a failed Deferred raises the failure's exception."""
    d = compat.Deferred()
    it = iter(d)
    assert next(it) is d
    d.errback(Boom("raised"))
    with pytest.raises(Boom, match="raised"):
        next(it)


def test_await_protocol_while_paused(compat):
    """d.__await__() keeps yielding d while d is paused, even after firing."""
    d = compat.Deferred()
    d.pause()
    d.callback(7)
    it = d.__await__()
    assert next(it) is d
    d.unpause()
    with pytest.raises(StopIteration) as stop:
        next(it)
    assert stop.value.value == 7


def test_await_in_coroutine(compat):
    """A coroutine awaiting the Deferred (via fromCoroutine) gets its result."""
    d = compat.Deferred()

    async def main():
        return (await d) * 2

    result = compat.Deferred.fromCoroutine(main())
    assert isinstance(result, defer.Deferred)
    assert not result.called
    d.callback(21)
    assert result.result == 42


def test_await_fired_deferred(compat):
    """Awaiting an already fired Deferred returns its result at once."""
    d = compat.Deferred()
    d.callback("ready")

    async def main():
        return await d

    assert compat.Deferred.fromCoroutine(main()).result == "ready"


def test_await_failure_raises_into_coroutine(compat):
    """Awaiting a failed Deferred raises its exception inside the coroutine."""
    d = compat.Deferred()

    async def main():
        try:
            await d
        except Boom as e:
            return ("caught", e.args)

    result = compat.Deferred.fromCoroutine(main())
    d.errback(Boom("x"))
    assert result.result == ("caught", ("x",))


def test_yield_from_in_generator(compat):
    """``yield from d`` in a generator driven by fromCoroutine returns the result."""
    d = compat.Deferred()

    def gen():
        value = yield from d
        return value + 1

    result = compat.Deferred.fromCoroutine(gen())
    d.callback(1)
    assert result.result == 2


def test_fromCoroutine_rejects_non_coroutines(compat):
    """fromCoroutine of something that is not a coroutine raises NotACoroutineError."""
    with pytest.raises(defer.NotACoroutineError):
        compat.Deferred.fromCoroutine(lambda: None)


def test_awaited_failure_is_not_logged(compat, captured_log):
    """A failure taken by an awaiting coroutine is not reported as unhandled."""

    class Awaited(Exception):
        pass

    d = compat.Deferred()

    async def main():
        try:
            await d
        except Awaited:
            return "ok"

    result = compat.Deferred.fromCoroutine(main())
    d.errback(Awaited())
    assert result.result == "ok"
    del d, result
    gc.collect()
    assert not [f for f in logged_failures(captured_log) if f.check(Awaited)]


# ------------------------------------------------------- asFuture / fromFuture


@pytest.fixture
def loop():
    """A fresh asyncio event loop, closed afterwards."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_asFuture_result(compat, loop):
    """asFuture gives a Future that completes with the Deferred's result."""
    d = compat.Deferred()
    future = d.asFuture(loop)
    loop.call_soon(d.callback, "via future")
    assert loop.run_until_complete(future) == "via future"


def test_asFuture_failure(compat, loop):
    """asFuture gives a Future that raises the Deferred's failure's exception."""
    d = compat.Deferred()
    future = d.asFuture(loop)
    loop.call_soon(d.errback, Boom("future"))
    with pytest.raises(Boom, match="future"):
        loop.run_until_complete(future)


def test_asFuture_cancel_cancels_deferred(compat, loop):
    """Cancelling the Future cancels the Deferred (its canceller runs)."""
    calls = []
    d = compat.Deferred(calls.append)
    future = d.asFuture(loop)
    future.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [d]
    assert d.called


def test_fromFuture_result(compat, loop):
    """fromFuture gives a Deferred of the calling class that fires with the Future's result."""
    future = loop.create_future()
    d = compat.Deferred.fromFuture(future)
    assert type(d) is compat.Deferred
    loop.call_soon(future.set_result, 9)
    loop.run_until_complete(future)
    assert d.result == 9


def test_fromFuture_exception(compat, loop):
    """fromFuture's Deferred fails with the Future's exception."""
    future = loop.create_future()
    d = compat.Deferred.fromFuture(future)
    loop.call_soon(future.set_exception, Boom("f"))
    with pytest.raises(Boom):
        loop.run_until_complete(future)
    assert d.result.check(Boom)
    consume(d)


def test_fromFuture_cancel_cancels_future(compat, loop):
    """Cancelling fromFuture's Deferred cancels the Future."""
    future = loop.create_future()
    d = compat.Deferred.fromFuture(future)
    d.cancel()
    assert future.cancelled()


def test_coroutine_with_asyncio_loop(compat):
    """A coroutine on a real asyncio loop can await a Deferred converted with asFuture."""

    async def main():
        loop = asyncio.get_running_loop()
        d = compat.Deferred()
        loop.call_later(0.001, d.callback, "async")
        return await d.asFuture(loop)

    assert asyncio.run(main()) == "async"


# ------------------------------------------------------------------ str / repr


def test_repr_unfired(compat):
    """An unfired Deferred reads ``<ClassName at 0x...>`` with its id."""
    d = compat.Deferred()
    name = type(d).__name__
    assert repr(d) == f"<{name} at 0x{id(d):x}>"
    assert str(d) == repr(d)


def test_repr_fired(compat):
    """A fired Deferred reads ``<ClassName at 0x... current result: repr(result)>``."""
    d = compat.Deferred()
    d.callback("text")
    assert re.fullmatch(r"<\w+ at 0x[0-9a-f]+ current result: 'text'>", repr(d))
    assert repr(d) == f"<{type(d).__name__} at 0x{id(d):x} current result: 'text'>"
    assert str(d) == repr(d)


def test_repr_waiting(compat):
    """A Deferred waiting on another one says so, with the other one's id."""
    inner = compat.Deferred()
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    assert repr(outer) == (
        f"<{type(outer).__name__} at 0x{id(outer):x} waiting on Deferred at 0x{id(inner):x}>"
    )
    inner.callback(None)
    assert repr(outer) == f"<{type(outer).__name__} at 0x{id(outer):x} current result: None>"


def test_repr_of_result_raising_propagates(compat):
    """An exception raised by the result's __repr__ propagates out of repr(d)."""

    class BadRepr:
        def __repr__(self):
            raise Boom("repr")

    d = compat.Deferred()
    d.callback(BadRepr())
    with pytest.raises(Boom):
        repr(d)
    with pytest.raises(Boom):
        str(d)


# ------------------------------------------------------------------ generics


def test_class_getitem(compat):
    """``Deferred[int]`` is a generic alias of the class, and calling it makes an instance."""
    alias = compat.Deferred[int]
    assert alias.__origin__ is compat.Deferred
    assert alias.__args__ == (int,)
    d = alias()
    assert isinstance(d, compat.Deferred)
    d.callback(1)
    assert d.result == 1


# ---------------------------------------------------------------------- debug


@pytest.fixture
def debugging():
    """Deferred debugging switched on with setDebugging for the test."""
    defer.setDebugging(True)
    try:
        yield
    finally:
        defer.setDebugging(False)


def test_setDebugging_sets_class_attribute(compat):
    """setDebugging assigns Deferred.debug, which every Deferred class and instance sees."""
    assert compat.Deferred().debug is False
    defer.setDebugging(True)
    try:
        assert defer.getDebugging() is True
        assert compat.Deferred.debug is True
        assert compat.Deferred().debug is True
    finally:
        defer.setDebugging(False)
    assert compat.Deferred().debug is False


def test_debug_records_creator_and_invoker(compat, debugging):
    """With debugging on, AlreadyCalledError's message has the creation and first-invocation stacks."""

    def make_it():
        return compat.Deferred()

    def fire_it(d):
        d.callback(1)

    d = make_it()
    assert isinstance(d._debugInfo, DebugInfo)
    assert any("make_it" in line for line in d._debugInfo.creator)
    fire_it(d)
    with pytest.raises(AlreadyCalledError) as info:
        d.callback(2)
    message = str(info.value)
    assert message.startswith("\n")
    assert " C: Deferred was created:" in message
    assert " I: First Invoker was:" in message
    creator, invoker = message.split(" I: First Invoker was:")
    assert "make_it" in creator and "fire_it" not in creator
    assert "fire_it" in invoker
    assert invoker.rstrip().splitlines()[-1].strip() == "I:    d.callback(1)"


def test_debug_on_instance_records_invoker_only(compat):
    """``d.debug = True`` on one instance after creation records only the invoker."""
    d = compat.Deferred()
    d.debug = True
    d.callback(1)
    with pytest.raises(AlreadyCalledError) as info:
        d.callback(2)
    assert "I: First Invoker was:" in str(info.value)
    assert "C: Deferred was created:" not in str(info.value)


def test_debug_captures_variables_of_failing_callback(compat, debugging):
    """With debugging on, the Failure of a raising callback records the callback's locals."""

    def failing(result):
        secret = 42  # noqa: F841
        raise Boom()

    d = compat.Deferred()
    d.addCallback(failing)
    d.callback("r")
    frame = d.result.frames[-1]
    assert frame[0] == "failing"
    assert ("secret", 42) in frame[3]
    consume(d)


def test_no_debug_does_not_capture_variables(compat):
    """Without debugging, the Failure of a raising callback records no locals."""

    def failing(result):
        secret = 42  # noqa: F841
        raise Boom()

    d = compat.Deferred()
    d.addCallback(failing)
    d.callback("r")
    assert d.result.frames[-1][0] == "failing"
    assert not d.result.frames[-1][3]
    consume(d)


# ----------------------------------------------------------------- attributes


def test_result_attribute_absent_until_fired(compat):
    """``result`` raises AttributeError until the Deferred fires, and getattr's default works."""
    d = compat.Deferred()
    with pytest.raises(AttributeError):
        d.result
    assert getattr(d, "result", "missing") == "missing"
    d.callback(None)
    assert d.result is None


def test_called_attribute(compat):
    """``called`` is false until callback or errback, then true."""
    d = compat.Deferred()
    assert not d.called
    d.callback(1)
    assert d.called is True
    e = compat.Deferred()
    e.errback(Boom())
    assert e.called is True
    consume(e)


def test_paused_counts_pauses(compat):
    """``paused`` counts unmatched pause() calls and is writable."""
    d = compat.Deferred()
    d.pause()
    d.pause()
    assert d.paused == 2
    d.paused = 0
    seen = []
    d.addCallback(seen.append)
    d.callback(1)
    assert seen == [1]


def test_chainedTo_tracks_the_awaited_deferred(compat):
    """``_chainedTo`` is the Deferred being waited on, and None before and after."""
    inner = compat.Deferred()
    outer = compat.Deferred()
    assert outer._chainedTo is None
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    assert outer._chainedTo is inner
    assert outer.paused == 1
    assert outer.result is inner
    inner.callback("in")
    assert outer._chainedTo is None
    assert outer.paused == 0
    assert outer.result == "in"
    assert inner.result is None, "the waiting Deferred took the inner result"


def test_fired_inner_result_is_stolen(compat):
    """A callback returning an already fired Deferred passes on its result and leaves it None."""
    inner = compat.Deferred()
    inner.callback("stolen")
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    assert outer.result == "stolen"
    assert inner.result is None
    assert outer._chainedTo is None


def test_paused_inner_is_waited_on(compat):
    """A fired but paused inner Deferred is waited on, not stolen from."""
    inner = compat.Deferred()
    inner.callback("later")
    inner.pause()
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    assert outer._chainedTo is inner
    inner.unpause()
    assert outer.result == "later"


def test_runningCallbacks_attribute(compat):
    """``_runningCallbacks`` is true while a callback of this Deferred runs, false otherwise."""
    d = compat.Deferred()
    seen = []
    d.addCallback(lambda r: seen.append(d._runningCallbacks))
    assert d._runningCallbacks is False
    d.callback(None)
    assert seen == [True]
    assert d._runningCallbacks is False


def test_suppressAlreadyCalled_attribute(compat):
    """``_suppressAlreadyCalled`` is writable and, when set on a fired Deferred, swallows one fire."""
    d = compat.Deferred()
    assert d._suppressAlreadyCalled is False
    d.callback(1)
    d._suppressAlreadyCalled = True
    d.callback(2)
    assert d.result == 1
    assert d._suppressAlreadyCalled is False


def test_canceller_attribute_writable(compat):
    """Assigning ``_canceller`` changes what cancel() calls."""
    calls = []
    d = compat.Deferred()
    d._canceller = calls.append
    consume(d)
    d.cancel()
    assert calls == [d]


def test_debugInfo_tracks_unhandled_failure(compat):
    """``_debugInfo.failResult`` holds the failure while nothing handles it, and None after."""
    d = compat.Deferred()
    assert d._debugInfo is None
    d.errback(Boom())
    info = d._debugInfo
    assert isinstance(info, DebugInfo)
    assert info.failResult is d.result
    d.addErrback(lambda f: None)
    assert d._debugInfo.failResult is None


def test_callbacks_property_deprecated(compat):
    """``callbacks`` warns with DeprecationWarning and is the same list as ``_callbacks``."""
    d = compat.Deferred()
    d.addCallback(lambda r: r)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callbacks = d.callbacks
    assert callbacks is d._callbacks
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "callbacks was deprecated" in str(caught[0].message)


def test_callbacks_list_format(compat):
    """``_callbacks`` is Twisted's list of ((cb, args, kw), (eb, args, kw)) tuples."""

    def f(*a, **k):
        pass

    d = compat.Deferred()
    d.addCallback(f, 1, k=2)
    d.addErrback(f, 3)
    d.addBoth(f)
    d.addCallbacks(f, f, (4,), {"a": 5})
    assert d._callbacks == [
        ((f, (1,), {"k": 2}), (defer._failthru, (), {})),
        ((defer.passthru, (), {}), (f, (3,), {})),
        ((f, (), {}), (f, (), {})),
        ((f, (4,), {"a": 5}), (f, (), {})),
    ]
    assert d._callbacks is d._callbacks


def test_callbacks_list_is_the_chain(compat):
    """Appending, removing and clearing entries of ``_callbacks`` changes what runs."""
    d = compat.Deferred()
    seen = []
    d.addCallback(lambda r: seen.append("removed"))
    d.addCallback(lambda r: seen.append("kept") or r)
    callbacks = d._callbacks
    del callbacks[0]
    callbacks.append(((lambda r, x: seen.append(("appended", r, x)), (7,), {}), (defer._failthru, (), {})))
    d.addCallback(lambda r: seen.append("added"))
    assert len(callbacks) == 3
    d.callback("r")
    assert seen == ["kept", ("appended", "r", 7), "added"]
    assert d._callbacks == []

    e = compat.Deferred()
    e.addCallback(lambda r: seen.append("cleared"))
    e._callbacks.clear()
    e.callback(1)
    assert e.result == 1


def test_callbacks_list_swap(compat):
    """Swapping ``_callbacks`` out and back (as inlineCallbacks' cancellation does) acts on the chain."""
    d = compat.Deferred()
    seen = []
    d.addCallback(lambda r: seen.append(("original", r)))
    d._callbacks, saved = [], d._callbacks
    d.addErrback(lambda f: seen.append(("inserted", f.type)) or "recovered")
    d._callbacks.extend(saved)
    d.errback(Boom())
    assert seen == [("inserted", Boom), ("original", "recovered")]


def test_callbacks_assignment_replaces_chain(compat):
    """Assigning a new list to ``_callbacks`` replaces the pending links."""
    d = compat.Deferred()
    seen = []
    d.addCallback(lambda r: seen.append("old"))
    d._callbacks = [((lambda r: seen.append("new"), (), {}), (defer._failthru, (), {}))]
    d.callback(1)
    assert seen == ["new"]


def test_instance_attributes_and_dict(compat):
    """Instances take arbitrary attributes, visible in ``__dict__`` and deletable."""
    d = compat.Deferred()
    d.custom = "value"
    assert d.custom == "value"
    assert d.__dict__["custom"] == "value"
    assert vars(d)["custom"] == "value"
    d.__dict__["other"] = 1
    assert d.other == 1
    del d.custom
    assert not hasattr(d, "custom")


def test_class_attributes_seen_by_instances(compat):
    """A class attribute set on a subclass is seen by its instances."""

    class Sub(compat.Deferred):
        pass

    Sub.marker = "class"
    assert Sub().marker == "class"


def test_weak_references(compat):
    """Deferreds can be weakly referenced, and the reference dies with the Deferred."""
    d = compat.Deferred()
    ref = weakref.ref(d)
    assert ref() is d
    ws = weakref.WeakSet([d])
    assert d in ws
    del d
    gc.collect()
    assert ref() is None
    assert len(ws) == 0


def test_subclass_with_own_init(compat):
    """A subclass may call the base ``__init__`` unbound and add state; it is a Twisted Deferred."""

    class Sub(compat.Deferred):
        def __init__(self, extra):
            compat.Deferred.__init__(self, canceller=None)
            self.extra = extra

    s = Sub(10)
    s.addCallback(lambda r: r + s.extra)
    s.callback(1)
    assert s.result == 11
    assert isinstance(s, defer.Deferred)
    assert type(s) in defer._DEFERRED_SUBCLASSES


@pytest.mark.parametrize("mixin_first", [True, False])
def test_subclass_with_multiple_bases(compat, mixin_first):
    """A subclass with a second, plain base works whichever base comes first."""

    class Mixin:
        def describe(self):
            return "mixin"

    bases = (Mixin, compat.Deferred) if mixin_first else (compat.Deferred, Mixin)
    Sub = type("Sub", bases, {})
    s = Sub()
    assert s.describe() == "mixin"
    s.addCallback(lambda r: r * 2)
    s.callback(4)
    assert s.result == 8


def test_subclass_overriding_callback(compat):
    """A subclass overriding callback() is called by user code and can delegate to the base."""
    calls = []

    class Sub(compat.Deferred):
        def callback(self, result):
            calls.append(result)
            super().callback(result * 2)

    s = Sub()
    s.callback(3)
    assert calls == [3]
    assert s.result == 6


def test_subclass_instances_are_chained(compat):
    """A subclass instance returned from a callback is waited on, not treated as a value."""

    class Sub(compat.Deferred):
        pass

    inner = Sub()
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    assert outer._chainedTo is inner
    inner.callback("sub")
    assert outer.result == "sub"


def test_init_unbound_on_new_instance(compat):
    """``Deferred.__init__(d, canceller)`` on an instance made with ``__new__`` initialises it."""
    d = compat.Deferred.__new__(compat.Deferred)
    calls = []
    compat.Deferred.__init__(d, calls.append)
    consume(d)
    d.cancel()
    assert calls == [d]


# ------------------------------------------------------------ unhandled errors


def test_unhandled_failure_logged_at_collection(compat, captured_log):
    """A Deferred collected while holding a Failure logs 'Unhandled error in Deferred:' and the failure."""

    class Unhandled(Exception):
        pass

    d = compat.Deferred()
    d.addCallback(lambda r: 1 / 0)
    d.addErrback(lambda f: Failure(Unhandled("lost")))
    d.callback(None)
    del d
    gc.collect()
    mine = [f for f in logged_failures(captured_log) if f.check(Unhandled)]
    assert len(mine) == 1
    assert mine[0].value.args == ("lost",)
    headers = unhandled_events(captured_log)
    assert headers, "the header line is logged too"
    assert all(e.get("isError") for e in headers)
    assert headers[0]["log_level"].name == "critical"


def test_unhandled_failure_logged_from_cycle(compat, captured_log):
    """A failed Deferred in a reference cycle is reported when the cycle is collected."""

    class InCycle(Exception):
        pass

    d = compat.Deferred()
    d.selfref = d
    d.errback(InCycle())
    del d
    gc.collect()
    assert len([f for f in logged_failures(captured_log) if f.check(InCycle)]) == 1


def test_handled_failure_not_logged(compat, captured_log):
    """A failure consumed by an errback is not reported at collection."""

    class Handled(Exception):
        pass

    d = compat.Deferred()
    d.errback(Handled())
    d.addErrback(lambda f: None)
    del d
    gc.collect()
    assert not [f for f in logged_failures(captured_log) if f.check(Handled)]


def test_failure_passed_to_waiting_deferred_logged_once(compat, captured_log):
    """A failure handed from an inner Deferred to the one waiting on it is reported once, by the outer."""

    class Passed(Exception):
        pass

    inner = compat.Deferred()
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    inner.errback(Passed())
    assert outer.result.check(Passed)
    assert inner.result is None
    del inner, outer
    gc.collect()
    assert len([f for f in logged_failures(captured_log) if f.check(Passed)]) == 1


def test_failure_handled_through_chain_not_logged(compat, captured_log):
    """A failure of an inner Deferred handled by the outer's errback is not reported."""

    class Chained(Exception):
        pass

    inner = compat.Deferred()
    outer = compat.Deferred()
    outer.addCallback(lambda _: inner)
    outer.addErrback(lambda f: "handled")
    outer.callback(None)
    inner.errback(Chained())
    assert outer.result == "handled"
    del inner, outer
    gc.collect()
    assert not [f for f in logged_failures(captured_log) if f.check(Chained)]


# ------------------------------------------------------------------- warnings


def test_callback_returning_own_deferred_warns(compat):
    """A callback returning its own Deferred warns with DeprecationWarning, blamed on the callback."""
    d = compat.Deferred()

    def returns_self(r):
        return d

    d.addCallback(returns_self)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d.callback(None)
    assert len(caught) == 1
    assert caught[0].category is DeprecationWarning
    assert "Callback returned the Deferred it was attached to" in str(caught[0].message)
    assert caught[0].filename == __file__
    assert d.paused == 1 and d._chainedTo is d


def test_callback_returning_own_deferred_warning_as_error(compat):
    """When that warning is an error, the error becomes the Deferred's result."""
    d = compat.Deferred()
    d.addCallback(lambda r: d)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d.callback(None)
    assert isinstance(d.result, Failure)
    assert d.result.check(DeprecationWarning)
    assert d.paused == 0
    consume(d)


# ---------------------------------------------------------- iterative chaining


def _depth_at_end_of_chain(cls, length):
    """Stack depth inside the last callback when ``length`` Deferreds resume one another."""
    depths = []
    waiting = [cls() for _ in range(length)]
    innermost = cls()
    for outer, inner in zip(waiting, waiting[1:] + [innermost]):
        outer.addCallback(lambda _, inner=inner: inner)
    waiting[0].addCallback(lambda r: depths.append(len(traceback.extract_stack())))
    for d in waiting:
        d.callback(None)
    innermost.callback("go")
    assert len(depths) == 1
    return depths[0]


def test_bounded_stack_depth(compat):
    """The call stack does not grow with the number of Deferreds chained together."""
    shallow = _depth_at_end_of_chain(compat.Deferred, 1)
    assert _depth_at_end_of_chain(compat.Deferred, 2) == shallow
    assert _depth_at_end_of_chain(compat.Deferred, 300) == shallow


def test_deep_chain_under_low_recursion_limit(compat):
    """A chain far longer than the recursion limit resolves without RecursionError."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        n = 5000
        ds = [compat.Deferred() for _ in range(n)]
        for outer, inner in zip(ds, ds[1:]):
            outer.addCallback(lambda _, inner=inner: inner)
        for d in ds[:-1]:
            d.callback(None)
        ds[-1].callback("bottom")
    finally:
        sys.setrecursionlimit(limit)
    assert ds[0].result == "bottom"
