"""Leak loop for one operation of cdeferred, run in its own interpreter.

    python tests/isolated/leakcheck.py OPERATION [IMPLEMENTATION]

IMPLEMENTATION is ``c`` (default) or ``py``.  The operation runs a few thousand
times to warm up (free lists, caches, lazily built helpers), then ITERATIONS
times more; afterwards, with garbage collected:

- ``sys.getrefcount`` of every object the operation uses (its callables,
  arguments, results, exception instances and the type objects involved) is
  what it was after the warm-up, give or take REFCOUNT_SLACK;
- the memory traced by tracemalloc grew by less than MEMORY_BOUND bytes.

A leak of one reference or one small object per iteration breaks one of the
two by orders of magnitude.  Exit status 0 and "ok" on success; 1 and a report
otherwise.  ``deliberate-leak`` leaks on purpose: tests/test_leaks.py checks
that it is caught, so the checker cannot silently go blind.
"""

import asyncio
import gc
import os
import sys
import tracemalloc

ITERATIONS = int(os.environ.get("CDEFERRED_LEAK_ITERATIONS", "20000"))
WARMUP = 2000
REFCOUNT_SLACK = 10
MEMORY_BOUND = 100_000

# The test passes the cdeferred it imported on PYTHONPATH (in CI: installed,
# while the checkout has no compiled core); the checkout is only a fallback.
sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from twisted.internet import defer  # noqa: E402
from twisted.internet.defer import AlreadyCalledError, CancelledError  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

import cdeferred  # noqa: E402

LOG_EVENTS = [0]


def count_log(event):
    LOG_EVENTS[0] += 1


# Log events go to a counter, not to the start-up buffer (which would grow).
globalLogBeginner.beginLoggingTo([count_log], discardBuffer=True, redirectStandardIO=False)


def implementation(name):
    if name == "c":
        from cdeferred import _cimpl
        return _cimpl
    from cdeferred import _pydeferred
    return _pydeferred


IMPL = implementation(sys.argv[2] if len(sys.argv) > 2 else "c")
Deferred = IMPL.Deferred
ControllableDeferred = IMPL.ControllableDeferred
shield = IMPL.shield
TwistedDeferred = defer.Deferred


class Boom(Exception):
    pass


class Result:
    """A distinctive result object whose refcount is watched."""


RESULT = Result()
ARG = Result()
KWARG = Result()
ERROR = Boom("shared")


def callback(result, *args, **kwargs):
    return result


def errback(failure, *args, **kwargs):
    return None


def raising(result):
    raise Boom("raised")


def canceller(d):
    pass


def firing_canceller(d):
    d.callback(RESULT)


def link_canceller(d, *args, **kwargs):
    pass


WATCHED = [
    Deferred, ControllableDeferred, TwistedDeferred, Failure, Boom, CancelledError,
    AlreadyCalledError, Result, RESULT, ARG, KWARG, ERROR, callback, errback, raising,
    canceller, firing_canceller, link_canceller,
]

OPERATIONS = {}


def operation(fn):
    OPERATIONS[fn.__name__.replace("_", "-")] = fn
    return fn


# ------------------------------------------------------------------ basics


@operation
def create():
    Deferred()
    Deferred(canceller)
    Deferred(canceller=canceller)


@operation
def add_unfired():
    d = Deferred()
    d.addCallback(callback, ARG, key=KWARG)
    d.addErrback(errback, ARG)
    d.addBoth(callback, key=KWARG)
    d.addCallbacks(callback, errback, (ARG,), {"key": KWARG}, (ARG,), {"key": KWARG})


@operation
def add_and_fire():
    d = Deferred()
    d.addCallback(callback, ARG, key=KWARG)
    d.addErrback(errback, ARG)
    d.addBoth(callback, key=KWARG)
    d.addCallbacks(callback, errback, (ARG,), {"key": KWARG})
    d.callback(RESULT)
    d.addCallback(callback)


@operation
def many_links():
    d = Deferred()
    for _ in range(40):
        d.addCallback(callback, ARG)
    d.callback(RESULT)


@operation
def errback_handled():
    d = Deferred()
    d.addCallback(callback)
    d.addErrback(errback, ARG)
    d.errback(ERROR)


@operation
def raising_callback():
    d = Deferred()
    d.addCallback(raising)
    d.addErrback(errback)
    d.callback(RESULT)


@operation
def errback_current_exception():
    d = Deferred()
    try:
        raise Boom()
    except Boom:
        d.errback()
    d.addErrback(errback)


@operation
def already_called():
    d = Deferred()
    d.callback(RESULT)
    try:
        d.callback(RESULT)
    except AlreadyCalledError:
        pass


@operation
def pause_unpause():
    d = Deferred()
    d.pause()
    d.addCallback(callback)
    d.callback(RESULT)
    d.pause()
    d.addCallback(callback, ARG)
    d.unpause()
    d.unpause()


@operation
def callbacks_list():
    d = Deferred()
    d.addCallback(callback, ARG)
    d.addCallbacks(callback, errback, canceller=link_canceller)
    d._callbacks.append(((callback, (ARG,), {}), (errback, (), {})))
    d.callback(RESULT)
    e = Deferred()
    e.addCallback(callback)
    e._callbacks = [((callback, (), {"key": KWARG}), (errback, (), {}))]
    e.callback(RESULT)


@operation
def repr_and_attributes():
    d = Deferred()
    repr(d)
    d.callback(RESULT)
    repr(d)
    (d.called, d.paused, d._chainedTo, d._canceller, d._debugInfo, d._runningCallbacks,
     d._suppressAlreadyCalled, d.result)


@operation
def debugging():
    defer.setDebugging(True)
    try:
        d = Deferred()
        d.callback(RESULT)
        try:
            d.callback(RESULT)
        except AlreadyCalledError:
            pass
    finally:
        defer.setDebugging(False)


# ---------------------------------------------------------------- chaining


@operation
def chain_unfired_inner():
    outer, inner = Deferred(), Deferred()
    outer.addCallback(lambda _: inner)
    outer.addCallback(callback, ARG)
    outer.callback(RESULT)
    inner.callback(RESULT)


@operation
def chain_fired_inner():
    inner = Deferred()
    inner.callback(RESULT)
    outer = Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)


@operation
def chain_failure():
    outer, inner = Deferred(), Deferred()
    outer.addCallback(lambda _: inner)
    outer.addErrback(errback)
    outer.callback(None)
    inner.errback(ERROR)


@operation
def chain_twisted_inner():
    outer, inner = Deferred(), TwistedDeferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    inner.callback(RESULT)


@operation
def chain_twisted_outer():
    outer, inner = TwistedDeferred(), Deferred()
    outer.addCallback(lambda _: inner)
    outer.callback(None)
    inner.callback(RESULT)


@operation
def chain_deep():
    ds = [Deferred() for _ in range(30)]
    for a, b in zip(ds, ds[1:]):
        a.addCallback(lambda _, b=b: b)
    for d in ds[:-1]:
        d.callback(None)
    ds[-1].callback(RESULT)


@operation
def chain_deferred():
    a, b = Deferred(), Deferred()
    a.chainDeferred(b)
    b.addCallback(callback)
    a.callback(RESULT)


@operation
def unfired_cycle():
    a, b = Deferred(), Deferred()
    a.addCallback(lambda _: b)
    b.addCallback(lambda _: a)
    a.callback(None)
    b.callback(None)


# ------------------------------------------------------------ cancellation


@operation
def cancel_with_canceller():
    d = Deferred(canceller)
    d.addErrback(errback)
    d.cancel()


@operation
def cancel_with_firing_canceller():
    d = Deferred(firing_canceller)
    d.cancel()


@operation
def cancel_without_canceller():
    d = Deferred()
    d.addErrback(errback)
    d.cancel()
    d.callback(RESULT)


@operation
def cancel_link_cancellers():
    d = Deferred(canceller)
    d.addCanceller(link_canceller, ARG, key=KWARG)
    d.addCallbacks(callback, errback, canceller=link_canceller)
    d.addCanceller(link_canceller)
    d.addErrback(errback)
    d.cancel("message")


@operation
def cancel_chained():
    inner = Deferred(canceller)
    inner.addCanceller(link_canceller)
    outer = Deferred()
    outer.addCallback(lambda _: inner)
    outer.addCanceller(link_canceller, ARG)
    outer.addErrback(errback)
    outer.callback(None)
    outer.cancel()


@operation
def cancel_raising_link_canceller():
    d = Deferred()
    d.addCanceller(raising)
    d.addErrback(errback)
    d.cancel()


# ------------------------------------------------- ControllableDeferred, shield


@operation
def controllable_early_fire():
    upstream = Deferred()
    upstream.addCanceller(link_canceller)
    c = ControllableDeferred(upstream)
    c.addCallback(callback)
    c.callback(RESULT)
    upstream.callback(RESULT)


@operation
def controllable_early_errback_then_upstream_failure():
    upstream = Deferred()
    c = ControllableDeferred(upstream)
    c.addErrback(errback)
    c.errback(ERROR)
    upstream.errback(ERROR)


@operation
def controllable_deactivate():
    upstream = Deferred()
    c = ControllableDeferred(upstream, canceller=canceller)
    c.addCallback(callback)
    c.addCanceller(link_canceller)
    c.deactivate()
    c.active
    upstream.callback(RESULT)


@operation
def controllable_cancel():
    upstream = Deferred(canceller)
    c = ControllableDeferred(upstream)
    c.addErrback(errback)
    c.cancel("why")


@operation
def controllable_follows_upstream():
    upstream = Deferred()
    c = ControllableDeferred(upstream)
    c.addCallback(callback)
    upstream.callback(RESULT)
    c2 = ControllableDeferred()
    c2.callback(RESULT)


@operation
def shield_cancelled():
    d = Deferred(canceller)
    s = shield(d)
    s.addErrback(errback)
    s.cancel()
    d.callback(RESULT)


@operation
def shield_passes_result():
    d = Deferred()
    s = shield(d)
    s.addCallback(callback)
    d.callback(RESULT)


# ------------------------------------------------------------------- await


async def awaiting(d):
    return await d


async def awaiting_failure(d):
    try:
        await d
    except Boom:
        return RESULT


@operation
def await_in_coroutine():
    # Deferred.fromCoroutine: the C driver for the C core.
    d = Deferred()
    result = Deferred.fromCoroutine(awaiting(d))
    d.callback(RESULT)
    result.addCallback(callback)
    fired = Deferred()
    fired.callback(RESULT)
    Deferred.fromCoroutine(awaiting(fired))
    bad = Deferred()
    Deferred.fromCoroutine(awaiting_failure(bad))
    bad.errback(Boom())  # raised into the coroutine: a shared instance would grow its traceback
    TwistedDeferred.fromCoroutine(awaiting(Deferred()))  # never fired: a cycle for the GC


async def catching_cancel(d):
    try:
        await d
    except CancelledError:
        return RESULT


async def raising_coroutine():
    raise Boom("from the coroutine")


@operation
def coroutine_cancelled():
    d = Deferred(canceller)
    result = IMPL.ensureDeferred(catching_cancel(d))
    result.cancel()
    result.addCallback(callback)
    plain = IMPL.ensureDeferred(awaiting(Deferred()))
    plain.addErrback(errback)
    plain.cancel()
    IMPL.ensureDeferred(raising_coroutine()).addErrback(errback)


@IMPL.inlineCallbacks
def inline_generator(d):
    value = yield RESULT  # a plain value comes straight back
    value = yield d
    try:
        yield IMPL.ensureDeferred(raising_coroutine())
    except Boom:
        pass
    return value


@operation
def inline_callbacks():
    d = Deferred()
    result = inline_generator(d)
    d.callback(RESULT)
    result.addCallback(callback)
    fired = Deferred()
    fired.callback(RESULT)
    inline_generator(fired).addCallback(callback)


@operation
def deferred_list():
    for flags in ({}, {"fireOnOneCallback": True}, {"fireOnOneErrback": True},
                  {"consumeErrors": True}):
        members = [Deferred() for _ in range(5)] + [Deferred() for _ in range(5)]
        for d in members[5:]:
            d.callback(RESULT)
        dl = IMPL.DeferredList(members, **flags)
        dl.addBoth(errback)
        members[0].errback(Boom())
        for d in members[1:5]:
            d.callback(RESULT)
        for d in members:
            d.addErrback(errback)


@operation
def gather_results_failing():
    members = [Deferred(), Deferred()]
    gathered = IMPL.gatherResults(members, consumeErrors=True)
    gathered.addErrback(errback)
    members[0].errback(Boom())
    members[1].callback(RESULT)


@operation
def deferred_list_cancel():
    members = [Deferred(canceller), Deferred(), Deferred(firing_canceller)]
    dl = IMPL.DeferredList(members, consumeErrors=True)
    dl.cancel()
    dl.addCallback(callback)


class CollectingList(IMPL.DeferredList):
    """A DeferredList subclass whose collector is Python, calling the base's."""

    def _cbDeferred(self, result, index, succeeded):
        return super()._cbDeferred(result, index, succeeded)


@operation
def deferred_list_over_twisted_deferreds():
    # The C list attaches itself to other Deferreds through addCallbacks.
    for flags in ({}, {"fireOnOneCallback": True}, {"fireOnOneErrback": True},
                  {"consumeErrors": True}):
        members = [TwistedDeferred() for _ in range(10)]
        for d in members[5:]:
            d.callback(RESULT)
        dl = IMPL.DeferredList(members, **flags)
        dl.addBoth(errback)
        members[0].errback(Boom())
        for d in members[1:5]:
            d.callback(RESULT)
        for d in members:
            d.addErrback(errback)


@operation
def deferred_list_fires_during_construction():
    fired = Deferred()
    fired.callback(RESULT)
    failed = Deferred()
    failed.errback(Boom())
    for flags in ({"fireOnOneCallback": True}, {"fireOnOneErrback": True},
                  {"fireOnOneErrback": True, "consumeErrors": True}):
        members = [Deferred(), fired, failed, Deferred()]
        dl = IMPL.DeferredList(members, **flags)
        dl.addBoth(errback)
        members[0].callback(RESULT)
        members[3].errback(Boom())
        members[3].addErrback(errback)
    failed.addErrback(errback)
    IMPL.DeferredList([]).addCallback(callback)
    IMPL.DeferredList([], fireOnOneCallback=True)
    IMPL.DeferredList(d for d in [fired, Deferred()]).addCallback(callback)


@operation
def deferred_list_subclass_collector():
    members = [Deferred() for _ in range(4)]
    members[0].callback(RESULT)
    dl = CollectingList(members, consumeErrors=True)
    dl.addCallback(callback)
    members[1].callback(RESULT)
    members[2].errback(Boom())
    members[3].callback(RESULT)


@operation
def deferred_list_bad_result_list():
    for replacement in (None, (None,), []):
        members = [Deferred()]
        dl = IMPL.DeferredList(members)
        dl.resultList = replacement
        members[0].callback(RESULT)  # the collector raises: a Failure on the member
        members[0].addErrback(errback)
    members = [Deferred()]
    dl = IMPL.DeferredList(members)
    del dl.resultList
    members[0].callback(RESULT)
    members[0].addErrback(errback)
    try:
        IMPL.DeferredList(RESULT)
    except TypeError:
        pass
    try:
        IMPL.DeferredList([Deferred(), RESULT])
    except AttributeError:
        pass


@operation
def deferred_list_cancel_raising_canceller():
    members = [Deferred(canceller), Deferred(raising), TwistedDeferred(canceller)]
    dl = IMPL.DeferredList(members, fireOnOneErrback=True, consumeErrors=True)
    dl.addErrback(errback)
    dl.cancel()  # the raising canceller is logged, the others still cancelled
    members[1].callback(RESULT)
    if IMPL.__name__.endswith("_cimpl"):
        members = [Deferred(), TwistedDeferred()]
        dl = IMPL.DeferredList(members, consumeErrors=True)
        dl.cancel("message")
        dl.addCallback(callback)
    fired = IMPL.DeferredList([])
    fired.cancel()


@operation
def gather_results_succeeding():
    fired = Deferred()
    fired.callback(RESULT)
    members = [Deferred(), fired, TwistedDeferred()]
    gathered = IMPL.gatherResults(members)
    members[0].callback(RESULT)
    members[2].callback(RESULT)
    gathered.addCallback(callback)
    members = [Deferred(), Deferred()]
    gathered = IMPL.gatherResults(members)  # not consumed: the member keeps it
    gathered.addErrback(errback)
    members[1].errback(Boom())
    members[1].addErrback(errback)
    members[0].callback(RESULT)


async def awaiting_lists(inner, members):
    first = await inner
    second = await IMPL.gatherResults(members)
    try:
        await IMPL.gatherResults([Deferred(canceller)]).addCallback(raising)
    except Boom:
        pass
    return first, second


@operation
def deferred_list_nested_awaited():
    inner_members = [Deferred(), Deferred()]
    inner = IMPL.DeferredList(inner_members)
    outer = IMPL.DeferredList([inner, TwistedDeferred()], fireOnOneCallback=True)
    gathered = [Deferred(), TwistedDeferred()]
    result = IMPL.ensureDeferred(awaiting_lists(inner, gathered))
    inner_members[0].callback(RESULT)
    inner_members[1].callback(RESULT)
    gathered[0].callback(RESULT)
    gathered[1].callback(RESULT)
    outer.addCallback(callback)
    result.addCallback(callback)


async def awaiting_twisted(d, failing):
    value = await d
    try:
        await failing
    except Boom:
        pass
    return value


@operation
def coroutine_awaits_twisted_deferreds():
    d, failing = TwistedDeferred(), TwistedDeferred()
    result = Deferred.fromCoroutine(awaiting_twisted(d, failing))
    d.callback(RESULT)
    failing.errback(Boom())
    result.addCallback(callback)
    fired = TwistedDeferred()
    fired.callback(RESULT)
    failed = Deferred()
    failed.errback(Boom())
    Deferred.fromCoroutine(awaiting_twisted(fired, failed)).addCallback(callback)


@operation
def coroutine_cancelled_waiting_on_twisted():
    d = TwistedDeferred(canceller)
    result = IMPL.ensureDeferred(catching_cancel(d))
    result.cancel()
    result.addCallback(callback)
    fires = Deferred(firing_canceller)  # the canceller delivers a result instead
    result = IMPL.ensureDeferred(awaiting(fires))
    result.cancel()
    result.addCallback(callback)


async def raising_after_await(d):
    await d
    raise Boom("after the await")


@operation
def ensure_deferred_raising_after_await():
    d = Deferred()
    result = IMPL.ensureDeferred(raising_after_await(d))
    d.callback(RESULT)
    result.addErrback(errback)
    fired = Deferred()
    fired.callback(RESULT)
    IMPL.ensureDeferred(raising_after_await(fired)).addErrback(errback)
    d = Deferred()
    result = IMPL.ensureDeferred(raising_after_await(d))
    result.addErrback(errback)
    result.cancel()


@operation
def unhandled_coroutine_failure_logged():
    IMPL.ensureDeferred(raising_coroutine())


@IMPL.inlineCallbacks
def inline_cancelled(d):
    try:
        yield d
    except CancelledError:
        pass
    value = yield RESULT
    yield None
    return value


@IMPL.inlineCallbacks
def inline_raising(d):
    yield d
    yield TwistedDeferred()  # never fired: collected together with its generator
    raise Boom("never")


@IMPL.inlineCallbacks
def inline_raising_at_once():
    yield RESULT
    raise Boom("from the generator")


@operation
def inline_callbacks_cancel_and_raise():
    d = Deferred(canceller)
    result = inline_cancelled(d)
    result.cancel()
    result.addCallback(callback)
    inline_raising_at_once().addErrback(errback)
    fired = TwistedDeferred()
    fired.callback(RESULT)
    inline_raising(fired)


WATCHED.extend([
    IMPL.DeferredList, CollectingList, awaiting_lists, awaiting_twisted, raising_after_await,
    inline_cancelled, inline_raising, inline_raising_at_once,
])


@operation
def await_iterator():
    d = Deferred()
    it = d.__await__()
    next(it)
    d.callback(RESULT)
    try:
        next(it)
    except StopIteration:
        pass
    e = Deferred()
    e.errback(Boom())  # raised here: a shared instance would grow its traceback
    try:
        next(iter(e))
    except Boom:
        pass


LOOP = asyncio.new_event_loop()


@operation
def as_future():
    d = Deferred()
    f = d.asFuture(LOOP)
    d.callback(RESULT)
    LOOP.run_until_complete(f)


# --------------------------------------------------------------- bad input


@operation
def bad_input():
    d = Deferred()
    for call in (
        lambda: d.addCallback(),
        lambda: d.addErrback(),
        lambda: d.addCallbacks(),
        lambda: d.addCanceller(5),
        lambda: d.addCallbacks(callback, canceller=5),
        lambda: d.callback(),
        lambda: d.callback(RESULT, RESULT),
        lambda: d.cancel(RESULT, RESULT),
        lambda: d.pause(RESULT),
        lambda: Deferred(canceller, canceller),
        lambda: Deferred(bogus=canceller),
        lambda: ControllableDeferred(upstream=ARG),
        lambda: ControllableDeferred(canceller=5),
        lambda: setattr(d, "_callbacks", None) if IMPL.__name__.endswith("_cimpl") else 1 + "",
        lambda: setattr(d, "paused", "many") if IMPL.__name__.endswith("_cimpl") else 1 + "",
    ):
        try:
            call()
        except TypeError:
            pass
        else:
            raise AssertionError("no TypeError")
    d.callback(RESULT)


@operation
def garbage_callbacks_entry():
    d = Deferred()
    d._callbacks.append((ARG, KWARG))
    try:
        d.callback(RESULT)
    except TypeError:
        pass


# ------------------------------------------------------- unhandled failures


@operation
def unhandled_failure_logged():
    d = Deferred()
    d.errback(ERROR)


@operation
def unhandled_failure_in_cycle_logged():
    d = Deferred()
    d.addCallback(raising)
    d.callback(RESULT)
    d.me = d


# ------------------------------------------------------------ self-check


LEAKED = []


@operation
def deliberate_leak():
    d = Deferred()
    d.callback(RESULT)
    LEAKED.append(d)


# ------------------------------------------------------------------ runner


def measure(op):
    for _ in range(WARMUP):
        op()
    gc.collect()
    tracemalloc.start()
    gc.collect()
    refs_before = [sys.getrefcount(obj) for obj in WATCHED]
    memory_before = tracemalloc.get_traced_memory()[0]
    logged_before = LOG_EVENTS[0]
    for _ in range(ITERATIONS):
        op()
    gc.collect()
    memory_growth = tracemalloc.get_traced_memory()[0] - memory_before
    refs_after = [sys.getrefcount(obj) for obj in WATCHED]
    logged = LOG_EVENTS[0] - logged_before
    tracemalloc.stop()
    ref_growth = {
        repr(obj): after - before
        for obj, before, after in zip(WATCHED, refs_before, refs_after)
        if abs(after - before) > REFCOUNT_SLACK
    }
    return ref_growth, memory_growth, logged


def main():
    name = sys.argv[1]
    if name == "--list":
        print("\n".join(OPERATIONS))
        return 0
    ref_growth, memory_growth, logged = measure(OPERATIONS[name])
    problems = []
    if ref_growth:
        problems.append(f"refcounts changed over {ITERATIONS} iterations: {ref_growth}")
    if memory_growth >= MEMORY_BOUND:
        problems.append(f"traced memory grew by {memory_growth} bytes over {ITERATIONS} iterations")
    if name.startswith("unhandled") and logged < ITERATIONS:
        problems.append(f"only {logged} log events for {ITERATIONS} unhandled failures")
    if problems:
        print(f"LEAK in {name}: " + "; ".join(problems))
        return 1
    print(f"ok {name}: memory {memory_growth:+d} bytes, {logged} log events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
