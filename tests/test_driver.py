"""
The coroutine driver: ``Deferred.fromCoroutine``, ``ensureDeferred`` and
``inlineCallbacks``.

Every test runs on Twisted's own trampoline (``twisted``, the oracle), on
cdeferred's C driver (``c``) and on the two mixtures: the C driver awaiting
Twisted's Deferreds (``c-awaiting-twisted``) and Twisted's driver awaiting C
Deferreds (``twisted-awaiting-c``).  The namespace ``drv`` gives:

  Deferred        the class of the Deferreds the coroutines await
  Driven          the class fromCoroutine/ensureDeferred/inlineCallbacks return
  fromCoroutine, ensureDeferred, inlineCallbacks   the driver's entry points

Not tested, because the two drivers may legitimately differ there:
  - traceback frames: Twisted's Failures name ``_inlineCallbacks``,
    ``_gotResultInlineCallbacks`` and ``_runCallbacks``; the C driver has no
    Python frames of its own;
  - the private bookkeeping of Twisted's trampoline (``_CancellationStatus``,
    the ``_InternalInlineCallbacksCancelledError`` that cancel() routes through
    the returned Deferred, the temporary Deferred it chains to while a
    cancelled coroutine goes on), and so the intermediate ``called``/``paused``
    /``result`` of the returned Deferred between a cancel() and the
    coroutine's end; only what its callbacks receive is compared;
  - ``repr()`` of Deferreds and coroutines, which show addresses and classes;
  - when an unhandled failure of the coroutine's Deferred is logged: Twisted's
    Deferred is in a reference cycle (its canceller holds the trampoline's
    status, which holds the Deferred), so it is reported by the next cyclic
    garbage collection; the C driver's is reported as soon as it is dropped.
    The tests collect garbage before they look at the log.
"""

import contextvars
import gc
import types
import warnings

import pytest
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

import cdeferred

_cimpl = cdeferred._cimpl

_needs_c = [
    pytest.mark.c_extension,
    pytest.mark.skipif(_cimpl is None, reason="needs the C core"),
]


def _twisted_driver(awaited):
    return types.SimpleNamespace(
        Deferred=awaited,
        Driven=defer.Deferred,
        fromCoroutine=defer.Deferred.fromCoroutine,
        ensureDeferred=defer.ensureDeferred,
        inlineCallbacks=defer.inlineCallbacks,
    )


def _c_driver(awaited):
    return types.SimpleNamespace(
        Deferred=awaited,
        Driven=_cimpl.Deferred,
        fromCoroutine=_cimpl.Deferred.fromCoroutine,
        ensureDeferred=cdeferred.ensureDeferred,
        inlineCallbacks=cdeferred.inlineCallbacks,
    )


_DRIVERS = {
    "twisted": lambda: _twisted_driver(defer.Deferred),
    "c": lambda: _c_driver(_cimpl.Deferred),
    "c-awaiting-twisted": lambda: _c_driver(defer.Deferred),
    "twisted-awaiting-c": lambda: _twisted_driver(_cimpl.Deferred),
}


@pytest.fixture(
    params=[
        "twisted",
        pytest.param("c", marks=_needs_c),
        pytest.param("c-awaiting-twisted", marks=_needs_c),
        pytest.param("twisted-awaiting-c", marks=_needs_c),
    ]
)
def drv(request):
    ns = _DRIVERS[request.param]()
    ns.name = request.param
    return ns


class Boom(Exception):
    pass


class CustomBase(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


def outcome(d):
    """Consume d's outcome: ('value', v), ('failure', type, args) or ('pending',)."""
    box = []
    d.addBoth(box.append)
    if not box:
        return ("pending",)
    (result,) = box
    if isinstance(result, Failure):
        return ("failure", result.type, result.value.args)
    return ("value", result)


def holds(d):
    """What d holds now, without touching its chain."""
    if not d.called:
        return ("pending",)
    result = d.result
    if isinstance(result, Failure):
        return ("failure", result.type)
    return ("value", result)


@pytest.fixture
def logged_errors():
    """Call it to collect garbage and get the errors logged since the test began.

    Until logging begins, twisted.logger keeps every event, so a logged
    Failure's traceback would keep its frames alive, and with them whatever
    Deferreds they reference (a failed one would then never be reported).
    When and in which order Deferreds are freed is not the same in the two
    drivers (Twisted's coroutine Deferred is in a reference cycle and waits for
    the garbage collector; the C one is freed as soon as it is dropped), so
    the observer strips the logged Failure of its frames (cleanFailure).

    What exists when the test starts is frozen (gc.freeze) for its duration,
    so that the collections walk only what the test made: cheaper, and no
    garbage of an earlier test is reported in this one."""
    gc.collect(1)
    gc.freeze()
    errors = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failure = event.get("log_failure")
            errors.append(
                (event.get("log_format"), failure.type if failure is not None else None)
            )
            if failure is not None:
                failure.cleanFailure()

    globalLogPublisher.addObserver(observe)

    def collect():
        gc.collect()
        gc.collect()
        return list(errors)

    try:
        yield collect
    finally:
        globalLogPublisher.removeObserver(observe)
        gc.unfreeze()


def unhandled(error_type):
    """What Twisted logs for a Deferred collected with an unhandled failure."""
    return [("Unhandled error in Deferred:", None), ("", error_type)]


class Ping:
    """An awaitable that is not a Deferred: it yields a plain value to the driver."""

    def __init__(self, value):
        self.value = value

    def __await__(self):
        try:
            got = yield self.value
        except BaseException as e:
            return ("thrown back", type(e), e.args)
        return ("sent back", got)


class Hand:
    """An awaitable that hands the given object straight to the driver, as an
    inlineCallbacks ``yield`` does (the driver, not Deferred.__await__, sees it)."""

    def __init__(self, thing):
        self.thing = thing

    def __await__(self):
        return (yield self.thing)


def fired(drv, value):
    d = drv.Deferred()
    d.callback(value)
    return d


def failed(drv, exc):
    d = drv.Deferred()
    d.errback(exc)
    return d


# --- results and failures ---------------------------------------------------


def test_returnValueFiresCallback(drv):
    async def f():
        return 5

    d = drv.fromCoroutine(f())
    assert type(d) is drv.Driven
    assert d.called
    assert outcome(d) == ("value", 5)


def test_fallingOffTheEndGivesNone(drv):
    ran = []

    async def f():
        ran.append(1)

    d = drv.fromCoroutine(f())
    assert ran == [1]
    assert outcome(d) == ("value", None)


def test_coroutineRunsAtOnceUpToItsFirstWait(drv):
    steps = []
    waiting = drv.Deferred()

    async def f():
        steps.append("start")
        await waiting
        steps.append("resumed")

    d = drv.fromCoroutine(f())
    assert steps == ["start"]
    assert not d.called
    waiting.callback(None)
    assert steps == ["start", "resumed"]
    assert outcome(d) == ("value", None)


def test_raisedExceptionBecomesFailure(drv, logged_errors):
    error = Boom("bad", 1)

    async def f():
        raise error

    def run():
        d = drv.fromCoroutine(f())
        assert d.called
        failures = []
        d.addErrback(failures.append)
        assert len(failures) == 1
        assert failures[0].type is Boom
        assert failures[0].value is error
        assert failures[0].value.args == ("bad", 1)
        assert d.result is None

    run()
    assert logged_errors() == []


def test_exceptionThrownInIsTheFailuresValue(drv):
    error = Boom("same")
    d = drv.Deferred()

    async def f():
        try:
            await d
        except Boom as e:
            return e

    result = drv.fromCoroutine(f())
    d.errback(error)
    assert outcome(result) == ("value", error)
    assert outcome(result) != ("value", Boom("same"))  # identity, not equality


def test_stopIterationInsideBecomesRuntimeError(drv):
    async def f():
        raise StopIteration("inside")

    @drv.inlineCallbacks
    def g():
        yield None
        raise StopIteration("inside")

    first = outcome(drv.fromCoroutine(f()))
    second = outcome(g())
    assert first[:2] == second[:2] == ("failure", RuntimeError)


def test_closedCoroutine(drv):
    async def f():
        return 1

    coro = f()
    coro.close()
    assert outcome(drv.fromCoroutine(coro)) == (
        "failure",
        RuntimeError,
        ("cannot reuse already awaited coroutine",),
    )


def test_exhaustedGenerator(drv):
    def gen():
        yield None

    g = gen()
    list(g)
    assert outcome(drv.fromCoroutine(g)) == ("value", None)


def test_startedGenerator(drv):
    """A generator already past its first yield is resumed with None."""

    def gen():
        first = yield "first"
        second = yield "second"
        return first, second

    g = gen()
    assert next(g) == "first"
    assert outcome(drv.fromCoroutine(g)) == ("value", (None, "second"))


def test_sameCoroutineDrivenTwice(drv):
    """The second driver resumes the coroutine inside Deferred.__await__, which
    hands it the same unfired Deferred again; once the first driver has
    finished it, the second one finds it exhausted."""
    d = drv.Deferred()

    async def f():
        return await d

    coro = f()
    first = drv.fromCoroutine(coro)
    second = drv.fromCoroutine(coro)
    assert not first.called and not second.called
    d.callback("x")
    assert outcome(first) == ("value", "x")
    assert outcome(second) == (
        "failure",
        RuntimeError,
        ("cannot reuse already awaited coroutine",),
    )


def test_abandonedCoroutineIsCollectedAndClosed(drv):
    """Nothing holds the coroutine, its Deferred or the one it awaits: the cycle
    is collected and the coroutine closed (its finally runs)."""
    events = []

    def start():
        d = drv.Deferred()

        async def f():
            try:
                await d
            finally:
                events.append("finally")

        drv.fromCoroutine(f())

    start()
    gc.collect()
    assert events == ["finally"]


def test_baseExceptionSubclassBecomesFailure(drv):
    async def f():
        raise CustomBase("base")

    d = drv.fromCoroutine(f())
    assert outcome(d) == ("failure", CustomBase, ("base",))


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_interpreterExitExceptionsBecomeFailures(drv, exc):
    """Twisted's driver catches BaseException: these fail the Deferred too,
    nothing propagates (here, or to the code that fired the awaited Deferred)."""
    results = []
    d = drv.Deferred()

    async def at_once():
        raise exc("at once")

    async def later():
        await d
        raise exc("later")

    @drv.inlineCallbacks
    def gen():
        yield None
        raise exc("gen")

    try:
        for result in (drv.fromCoroutine(at_once()), drv.fromCoroutine(later()), gen()):
            results.append(result)
        d.callback(None)
    except BaseException as e:  # must not happen; do not let it stop pytest
        pytest.fail(f"{type(e).__name__} escaped: {e!r}")
    assert [outcome(r) for r in results] == [
        ("failure", exc, ("at once",)),
        ("failure", exc, ("later",)),
        ("failure", exc, ("gen",)),
    ]


def test_coroutineReturningAFailure(drv):
    """A returned Failure is passed to callback(), which starts the errbacks."""
    failure = Failure(Boom("returned"))

    async def f():
        return failure

    @drv.inlineCallbacks
    def g():
        yield None
        return failure

    assert outcome(drv.fromCoroutine(f())) == ("failure", Boom, ("returned",))
    assert outcome(g()) == ("failure", Boom, ("returned",))


def test_unhandledFailureOfTheReturnedDeferredIsLogged(drv, logged_errors):
    """The log detector works: an unhandled failure of the coroutine's Deferred is
    reported once, when the Deferred is collected."""

    async def f():
        raise Boom()

    def run():
        d = drv.fromCoroutine(f())
        assert d.called

    run()
    assert logged_errors() == unhandled(Boom)


def test_coroutineReturningADeferred(drv):
    """Twisted's driver fires its Deferred with the returned Deferred as a plain
    value (the docs say a coroutine must not return one): nothing waits on it."""
    later = drv.Deferred()

    async def f():
        return later

    d = drv.fromCoroutine(f())
    assert d.called
    assert outcome(d) == ("value", later)
    assert not later.called
    later.callback("late")
    assert holds(later) == ("value", "late")


def test_callbackOfReturnedDeferredRaising(drv, logged_errors):
    """A callback on the coroutine's Deferred that raises fails that Deferred, and
    nothing escapes into the code that fired the awaited Deferred."""
    waiting = drv.Deferred()

    async def f():
        await waiting
        return 1

    def run():
        d = drv.fromCoroutine(f())

        def bad(result):
            raise Boom("in callback")

        d.addCallback(bad)
        waiting.callback(None)
        assert outcome(d) == ("failure", Boom, ("in callback",))

    run()
    assert logged_errors() == []


# --- awaiting Deferreds ------------------------------------------------------


def test_awaitFiredDeferred(drv):
    d = fired(drv, 3)

    async def f():
        return (await d) + 1

    assert outcome(drv.fromCoroutine(f())) == ("value", 4)
    # await on a fired Deferred reads its result; nothing is added to its chain
    assert holds(d) == ("value", 3)


def test_awaitFailedDeferred(drv, logged_errors):
    def run():
        d = failed(drv, Boom("x"))

        async def f():
            try:
                await d
            except Boom as e:
                return ("caught", e.args)

        assert outcome(drv.fromCoroutine(f())) == ("value", ("caught", ("x",)))
        # the Failure stays, but counts as handled
        assert holds(d) == ("failure", Boom)

    run()
    assert logged_errors() == []


def test_awaitFailedDeferredNotCaught(drv, logged_errors):
    def run():
        d = failed(drv, Boom("y"))

        async def f():
            await d

        assert outcome(drv.fromCoroutine(f())) == ("failure", Boom, ("y",))

    run()
    assert logged_errors() == []


def test_awaitUnfiredDeferred(drv, logged_errors):
    def run():
        d = drv.Deferred()

        async def f():
            return ("got", await d)

        result = drv.fromCoroutine(f())
        assert not result.called
        d.callback(7)
        assert outcome(result) == ("value", ("got", 7))
        # the driver's callback returned None
        assert holds(d) == ("value", None)

    run()
    assert logged_errors() == []


def test_awaitUnfiredDeferredThatFails(drv, logged_errors):
    def run():
        d = drv.Deferred()

        async def f():
            try:
                await d
            except Boom as e:
                return ("caught", e.args)

        result = drv.fromCoroutine(f())
        d.errback(Boom("late"))
        assert outcome(result) == ("value", ("caught", ("late",)))
        assert holds(d) == ("value", None)

    run()
    assert logged_errors() == []


def test_unfiredFailureNotCaughtIsLoggedOnlyForTheReturnedDeferred(drv, logged_errors):
    def run():
        d = drv.Deferred()

        async def f():
            await d

        result = drv.fromCoroutine(f())
        d.errback(Boom("late"))
        assert holds(result) == ("failure", Boom)
        assert holds(d) == ("value", None)

    run()
    assert logged_errors() == unhandled(Boom)


def test_awaitSameDeferredTwice(drv):
    """The coroutine resumes inside the driver's callback, while d still holds
    its result; after that callback d holds None."""
    d = drv.Deferred()

    async def f():
        first = await d
        second = await d
        return first, second

    async def g():
        return await d

    result = drv.fromCoroutine(f())
    d.callback("v")
    assert outcome(result) == ("value", ("v", "v"))
    assert outcome(drv.fromCoroutine(g())) == ("value", None)


def test_orderOfSideEffects(drv):
    """Callbacks added before the await run first, then the coroutine up to its
    end (the returned Deferred's callbacks included), then those added after the
    await, which see None."""
    events = []
    d = drv.Deferred()
    d.addCallback(lambda r: events.append(("before", r)) or r + 1)

    async def f():
        events.append("start")
        got = await d
        events.append(("resumed", got))
        return got * 10

    result = drv.fromCoroutine(f())
    result.addBoth(lambda r: events.append(("result", r)))
    d.addBoth(lambda r: events.append(("after", r)))
    events.append("fire")
    d.callback(1)
    events.append("fired")
    assert events == [
        "start",
        "fire",
        ("before", 1),
        ("resumed", 2),
        ("result", 20),
        ("after", None),
        "fired",
    ]


def test_awaitPausedDeferred(drv):
    """A Deferred that has fired but is paused is waited on like an unfired one."""
    d = fired(drv, 1)
    d.pause()

    async def f():
        return await d

    result = drv.fromCoroutine(f())
    assert not result.called
    d.unpause()
    assert outcome(result) == ("value", 1)
    assert holds(d) == ("value", None)


def test_awaitDeferredWaitingOnAnother(drv):
    """A fired Deferred whose callback returned an unfired Deferred is waited on."""
    inner = drv.Deferred()
    d = fired(drv, 1)
    d.addCallback(lambda r: inner)

    async def f():
        return await d

    result = drv.fromCoroutine(f())
    assert not result.called
    inner.callback("inner")
    assert outcome(result) == ("value", "inner")
    assert holds(d) == ("value", None)


def test_manyCoroutinesOnOneDeferred(drv):
    d = drv.Deferred()
    order = []

    async def f(n):
        got = await d
        order.append((n, got))
        return n

    results = [drv.fromCoroutine(f(n)) for n in range(3)]
    d.callback("x")
    # the first coroutine's callback returned None: the others get None
    assert order == [(0, "x"), (1, None), (2, None)]
    assert [outcome(r) for r in results] == [("value", n) for n in range(3)]


# --- nested coroutines and generators ---------------------------------------


def test_nestedCoroutineAwaited(drv):
    d = drv.Deferred()

    async def inner():
        return ("inner", await d)

    async def outer():
        return ("outer", await inner())

    result = drv.fromCoroutine(outer())
    assert not result.called
    d.callback(1)
    assert outcome(result) == ("value", ("outer", ("inner", 1)))


def test_nestedCoroutineRaising(drv):
    d = drv.Deferred()

    async def inner():
        await d
        raise Boom("inner")

    async def outer():
        try:
            await inner()
        except Boom as e:
            return ("caught", e.args)

    result = drv.fromCoroutine(outer())
    d.callback(None)
    assert outcome(result) == ("value", ("caught", ("inner",)))


def test_nestedDrivenDeferredAwaited(drv, logged_errors):
    def run():
        d = drv.Deferred()

        async def inner():
            await d
            raise Boom("inner")

        async def outer():
            nested = drv.fromCoroutine(inner())
            try:
                await nested
            except Boom as e:
                return ("caught", e.args, holds(nested))

        result = drv.fromCoroutine(outer())
        d.callback(None)
        # while the failure is being delivered, the nested Deferred still holds it
        assert outcome(result) == ("value", ("caught", ("inner",), ("failure", Boom)))

    run()
    assert logged_errors() == []


def test_inlineCallbacksYieldsPlainValues(drv):
    sentinel = object()

    @drv.inlineCallbacks
    def f():
        a = yield 1
        b = yield None
        c = yield sentinel
        d = yield [1, 2]
        return a, b, c, d

    result = f()
    assert type(result) is drv.Driven
    assert outcome(result) == ("value", (1, None, sentinel, [1, 2]))


def test_inlineCallbacksYieldsDeferreds(drv, logged_errors):
    def run():
        ready = fired(drv, "ready")
        bad = failed(drv, Boom("bad"))
        later = drv.Deferred()

        @drv.inlineCallbacks
        def f():
            a = yield ready
            try:
                yield bad
            except Boom as e:
                b = e.args
            c = yield later
            return a, b, c

        result = f()
        assert not result.called
        later.callback("later")
        assert outcome(result) == ("value", ("ready", ("bad",), "later"))
        # yield hands the Deferred itself to the driver: all three hold None
        assert [holds(x) for x in (ready, bad, later)] == [("value", None)] * 3

    run()
    assert logged_errors() == []


def test_inlineCallbacksYieldsGenerator(drv):
    d = drv.Deferred()

    def plain():
        got = yield d
        return ("plain", got)

    @drv.inlineCallbacks
    def f():
        got = yield plain()
        return ("f", got)

    result = f()
    assert not result.called
    d.callback(1)
    assert outcome(result) == ("value", ("f", ("plain", 1)))


def test_inlineCallbacksYieldsCoroutine(drv):
    d = drv.Deferred()

    async def coro():
        return ("coro", await d)

    @drv.inlineCallbacks
    def f():
        got = yield coro()
        return ("f", got)

    result = f()
    d.callback(2)
    assert outcome(result) == ("value", ("f", ("coro", 2)))


def test_inlineCallbacksYieldsFailingCoroutine(drv, logged_errors):
    def run():
        async def coro():
            raise Boom("coro")

        @drv.inlineCallbacks
        def f():
            try:
                yield coro()
            except Boom as e:
                return e.args

        assert outcome(f()) == ("value", ("coro",))

    run()
    assert logged_errors() == []


def test_inlineCallbacksYieldFromGenerator(drv):
    d = drv.Deferred()

    def sub():
        got = yield d
        return got * 2

    @drv.inlineCallbacks
    def f():
        got = yield from sub()
        return got + 1

    result = f()
    d.callback(5)
    assert outcome(result) == ("value", 11)


def test_inlineCallbacksPassesArguments(drv):
    @drv.inlineCallbacks
    def f(a, b=2, *args, **kwargs):
        yield None
        return a, b, args, kwargs

    assert outcome(f(1, 3, 4, k=5)) == ("value", (1, 3, (4,), {"k": 5}))


def test_inlineCallbacksWraps(drv):
    def original(x):
        """doc"""
        yield x

    decorated = drv.inlineCallbacks(original)
    assert decorated.__name__ == "original"
    assert decorated.__doc__ == "doc"
    assert decorated.__wrapped__ is original


def test_inlineCallbacksRaising(drv):
    @drv.inlineCallbacks
    def f():
        yield None
        raise Boom("gen")

    assert outcome(f()) == ("failure", Boom, ("gen",))


def test_inlineCallbacksGeneratorWithoutYieldReached(drv):
    @drv.inlineCallbacks
    def f(flag):
        if flag:
            return "early"
        yield None

    assert outcome(f(True)) == ("value", "early")


# --- returnValue -------------------------------------------------------------

DEPRECATED = (
    "twisted.internet.defer.returnValue was deprecated in Twisted 24.7.0; "
    "please use standard return statement instead"
)


def _nonlocal(inner, outer):
    return (
        f"returnValue() in {inner!r} causing {outer!r} to exit: returnValue should "
        "only be invoked by functions decorated with inlineCallbacks"
    )


def _warnings_of(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [(w.category, str(w.message)) for w in caught], caught


def test_returnValue(drv):
    @drv.inlineCallbacks
    def f():
        yield None
        defer.returnValue("rv")

    result, seen, _ = _warnings_of(f)
    assert outcome(result) == ("value", "rv")
    assert seen == [(DeprecationWarning, DEPRECATED)]


def test_returnValueAfterCaughtFailure(drv):
    @drv.inlineCallbacks
    def f():
        try:
            yield failed(drv, Boom())
        except Boom:
            defer.returnValue("rv")

    result, seen, _ = _warnings_of(f)
    assert outcome(result) == ("value", "rv")
    assert seen == [(DeprecationWarning, DEPRECATED)]


def test_returnValueAfterWaiting(drv):
    d = drv.Deferred()

    @drv.inlineCallbacks
    def f():
        got = yield d
        defer.returnValue(("rv", got))

    result = f()
    _, seen, _ = _warnings_of(lambda: d.callback(1))
    assert outcome(result) == ("value", ("rv", 1))
    assert seen == [(DeprecationWarning, DEPRECATED)]


def helper_returning():
    defer.returnValue("from helper")  # the non-local warning points at this line


HELPER_LINE = helper_returning.__code__.co_firstlineno + 1


def helper_calling_helper():
    helper_returning()


def test_returnValueNonLocal(drv):
    @drv.inlineCallbacks
    def gen_exiting():
        yield None
        helper_returning()

    result, seen, caught = _warnings_of(gen_exiting)
    assert outcome(result) == ("value", "from helper")
    assert seen == [
        (DeprecationWarning, DEPRECATED),
        (DeprecationWarning, _nonlocal("helper_returning", "gen_exiting")),
    ]
    assert caught[1].filename == __file__
    assert caught[1].lineno == HELPER_LINE


def test_returnValueNonLocalTwoLevels(drv):
    @drv.inlineCallbacks
    def gen_exiting():
        yield None
        helper_calling_helper()

    result, seen, caught = _warnings_of(gen_exiting)
    assert outcome(result) == ("value", "from helper")
    assert seen == [
        (DeprecationWarning, DEPRECATED),
        (DeprecationWarning, _nonlocal("helper_returning", "gen_exiting")),
    ]
    assert caught[1].lineno == HELPER_LINE


def test_returnValueNonLocalAfterThrownFailure(drv):
    """The failure is thrown into the generator (one more frame in Twisted's
    traceback walk): the warning still names the helper and the generator."""

    @drv.inlineCallbacks
    def gen_exiting():
        try:
            yield failed(drv, Boom())
        except Boom:
            helper_returning()

    result, seen, caught = _warnings_of(gen_exiting)
    assert outcome(result) == ("value", "from helper")
    assert seen == [
        (DeprecationWarning, DEPRECATED),
        (DeprecationWarning, _nonlocal("helper_returning", "gen_exiting")),
    ]
    assert caught[1].lineno == HELPER_LINE


def test_returnValueNonLocalAfterWaitingOnFailure(drv):
    d = drv.Deferred()

    @drv.inlineCallbacks
    def gen_exiting():
        try:
            yield d
        except Boom:
            helper_returning()

    result = gen_exiting()
    _, seen, caught = _warnings_of(lambda: d.errback(Boom()))
    assert outcome(result) == ("value", "from helper")
    assert seen == [
        (DeprecationWarning, DEPRECATED),
        (DeprecationWarning, _nonlocal("helper_returning", "gen_exiting")),
    ]
    assert caught[1].lineno == HELPER_LINE


def test_returnValueInsideACoroutine(drv):
    """returnValue inside a coroutine driven by fromCoroutine also ends it."""

    async def coro():
        defer.returnValue("rv")

    result, seen, _ = _warnings_of(lambda: drv.fromCoroutine(coro()))
    assert outcome(result) == ("value", "rv")
    assert seen[0] == (DeprecationWarning, DEPRECATED)


# --- refusing what is not a generator or coroutine ---------------------------


def test_inlineCallbacksNonGenerator(drv):
    def notgen():
        return 5

    with pytest.raises(TypeError) as info:
        drv.inlineCallbacks(notgen)()
    assert str(info.value) == (
        "inlineCallbacks requires %r to produce a generator; instead got 5" % (notgen,)
    )


def test_inlineCallbacksNonGeneratorReturningDeferred(drv):
    d = fired(drv, 1)

    def notgen():
        return d

    with pytest.raises(TypeError) as info:
        drv.inlineCallbacks(notgen)()
    assert str(info.value) == (
        "inlineCallbacks requires %r to produce a generator; instead got %r"
        % (notgen, d)
    )


def test_inlineCallbacksCoroutineFunctionRefused(drv):
    async def coro():
        return 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # never awaited
        with pytest.raises(TypeError) as info:
            drv.inlineCallbacks(coro)()
        message = str(info.value)
        del info
        gc.collect()
    assert message.startswith(
        "inlineCallbacks requires %r to produce a generator; instead got <coroutine"
        % (coro,)
    )


def test_inlineCallbacksNonGeneratorCallingReturnValue(drv):
    def notgen():
        defer.returnValue(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(TypeError) as info:
            drv.inlineCallbacks(notgen)()
    assert str(info.value) == (
        "inlineCallbacks requires %r to produce a generator; instead"
        "caught returnValue being used in a non-generator" % (notgen,)
    )


def test_inlineCallbacksFunctionRaising(drv):
    """An exception from the decorated function itself (before there is a
    generator) propagates to the caller."""

    def notgen():
        raise Boom("called")

    with pytest.raises(Boom):
        drv.inlineCallbacks(notgen)()


@pytest.mark.parametrize(
    "thing", [5, None, "s", lambda: None, [1]], ids=["int", "None", "str", "function", "list"]
)
def test_fromCoroutineNotACoroutine(drv, thing):
    with pytest.raises(defer.NotACoroutineError) as info:
        drv.fromCoroutine(thing)
    assert str(info.value) == f"{thing!r} is not a coroutine"


def test_fromCoroutineRefusesADeferred(drv):
    d = drv.Deferred()
    with pytest.raises(defer.NotACoroutineError) as info:
        drv.fromCoroutine(d)
    assert str(info.value) == f"{d!r} is not a coroutine"


@pytest.mark.parametrize("thing", [5, None, "s"], ids=["int", "None", "str"])
def test_ensureDeferredNotACoroutine(drv, thing):
    with pytest.raises(defer.NotACoroutineError) as info:
        drv.ensureDeferred(thing)
    assert str(info.value) == f"{thing!r} is not a coroutine or a Deferred"


def test_fromCoroutineTakesAGenerator(drv):
    d = drv.Deferred()

    def gen():
        got = yield d
        return ("gen", got)

    result = drv.fromCoroutine(gen())
    d.callback(1)
    assert outcome(result) == ("value", ("gen", 1))


def test_fromCoroutineTakesACoroutineLikeObject(drv):
    """Twisted asks asyncio.iscoroutine, which accepts any collections.abc.Coroutine."""
    import collections.abc

    class CoroLike(collections.abc.Coroutine):
        def send(self, value):
            raise StopIteration(("coro-like", value))

        def throw(self, *args):
            raise args[0]

        def close(self):
            pass

        def __await__(self):
            return iter(())

    assert outcome(drv.fromCoroutine(CoroLike())) == ("value", ("coro-like", None))


def test_fromCoroutineIgnoresTheClassItIsCalledOn(drv):
    class Sub(drv.Driven):
        pass

    async def f():
        return 1

    d = Sub.fromCoroutine(f())
    assert type(d) is drv.Driven


# --- ensureDeferred ------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        "twisted",
        pytest.param("c", marks=_needs_c),
        "twisted-sub",
        pytest.param("c-sub", marks=_needs_c),
        pytest.param("c-controllable", marks=_needs_c),
        "twisted-list",
    ],
)
def test_ensureDeferredReturnsADeferredAsIs(drv, kind):
    if kind.startswith("twisted-list"):
        d = defer.DeferredList([])
        assert drv.ensureDeferred(d) is d
        return
    if kind.startswith("twisted"):
        base = defer.Deferred
    elif kind == "c-controllable":
        base = _cimpl.ControllableDeferred
    else:
        base = _cimpl.Deferred
    if kind.endswith("-sub"):
        base = type("Sub", (base,), {})
    d = base()
    assert drv.ensureDeferred(d) is d
    assert not d.called


def test_ensureDeferredRunsACoroutine(drv):
    d = drv.Deferred()

    async def f():
        return ("f", await d)

    result = drv.ensureDeferred(f())
    assert type(result) is drv.Driven
    d.callback(3)
    assert outcome(result) == ("value", ("f", 3))


def test_ensureDeferredRunsAGenerator(drv):
    def gen():
        got = yield fired(drv, 4)
        return got

    assert outcome(drv.ensureDeferred(gen())) == ("value", 4)


# --- contextvars ---------------------------------------------------------------

var = contextvars.ContextVar("var", default="unset")


def _in_fresh_context(fn):
    return contextvars.copy_context().run(fn)


def test_contextIsACopyTakenAtStart(drv):
    seen = []
    d = drv.Deferred()

    async def f():
        seen.append(("start", var.get()))
        var.set("inner")
        await d
        seen.append(("resumed", var.get()))
        var.set("inner-2")
        return var.get()

    def scenario():
        var.set("outer")
        result = drv.fromCoroutine(f())
        seen.append(("after start", var.get()))
        var.set("outer-later")
        result.addCallback(lambda r: seen.append(("callback", r, var.get())))

        def fire():
            var.set("firer")
            d.callback(None)
            seen.append(("after fire", var.get()))

        contextvars.copy_context().run(fire)
        seen.append(("end", var.get()))

    _in_fresh_context(scenario)
    assert seen == [
        ("start", "outer"),
        ("after start", "outer"),
        ("resumed", "inner"),
        # the returned Deferred's callbacks run in the context of whoever fired
        ("callback", "inner-2", "firer"),
        ("after fire", "firer"),
        ("end", "outer-later"),
    ]


def test_contextNotSharedBetweenCoroutines(drv):
    d = drv.Deferred()
    seen = []

    async def f(name):
        var.set(name)
        await d
        seen.append((name, var.get()))

    def scenario():
        var.set("main")
        drv.fromCoroutine(f("a"))
        drv.fromCoroutine(f("b"))
        d.callback(None)
        seen.append(("main", var.get()))

    _in_fresh_context(scenario)
    # b awaited d after a's callback made it None; each kept its own value
    assert seen == [("a", "a"), ("b", "b"), ("main", "main")]


def test_contextOfNestedCoroutines(drv):
    d = drv.Deferred()
    seen = []

    async def child_driven():
        seen.append(("driven child starts", var.get()))
        var.set("driven child")
        await d
        seen.append(("driven child resumed", var.get()))

    async def child_inline():
        seen.append(("inline child starts", var.get()))
        var.set("inline child")

    async def parent():
        var.set("parent")
        await drv.fromCoroutine(child_driven())
        seen.append(("parent after driven child", var.get()))
        await child_inline()
        seen.append(("parent after inline child", var.get()))

    def scenario():
        var.set("main")
        drv.fromCoroutine(parent())
        d.callback(None)
        seen.append(("main", var.get()))

    _in_fresh_context(scenario)
    assert seen == [
        ("driven child starts", "parent"),
        ("driven child resumed", "driven child"),
        ("parent after driven child", "parent"),
        ("inline child starts", "parent"),
        ("parent after inline child", "inline child"),
        ("main", "main"),
    ]


def test_contextOfInlineCallbacks(drv):
    d = drv.Deferred()
    seen = []

    @drv.inlineCallbacks
    def f():
        seen.append(("start", var.get()))
        var.set("gen")
        yield d
        seen.append(("resumed", var.get()))

    def scenario():
        var.set("main")
        f()
        seen.append(("after call", var.get()))
        d.callback(None)
        seen.append(("after fire", var.get()))

    _in_fresh_context(scenario)
    assert seen == [
        ("start", "main"),
        ("after call", "main"),
        ("resumed", "gen"),
        ("after fire", "main"),
    ]


def test_contextOfYieldedGenerator(drv):
    """A generator or coroutine handed to the driver (yielded, not awaited) runs
    in a copy of the context current where the driver runs, that is, of the
    code that started or resumed the parent: not the parent's own context."""
    seen = []
    d = drv.Deferred()

    def sub(name):
        seen.append((name, "starts", var.get()))
        var.set(name)
        yield None

    async def coro(name):
        seen.append((name, "starts", var.get()))
        var.set(name)

    @drv.inlineCallbacks
    def f():
        var.set("gen")
        yield sub("sub 1")
        seen.append(("gen after sub 1", var.get()))
        yield coro("coro 1")
        yield d
        yield sub("sub 2")
        yield coro("coro 2")
        seen.append(("gen at end", var.get()))

    def scenario():
        var.set("main")
        f()

        def fire():
            var.set("firer")
            d.callback(None)

        contextvars.copy_context().run(fire)

    _in_fresh_context(scenario)
    assert seen == [
        ("sub 1", "starts", "main"),
        ("gen after sub 1", "gen"),
        ("coro 1", "starts", "main"),
        ("sub 2", "starts", "firer"),
        ("coro 2", "starts", "firer"),
        ("gen at end", "gen"),
    ]


def test_contextOfCoroutineHandedToTheDriver(drv):
    seen = []

    async def sub():
        seen.append(("sub starts", var.get()))

    async def f():
        var.set("parent")
        await Ping(sub())

    def scenario():
        var.set("main")
        drv.fromCoroutine(f())

    _in_fresh_context(scenario)
    assert seen == [("sub starts", "main")]


# --- cancellation ----------------------------------------------------------------


def test_cancelWhileWaiting(drv, logged_errors):
    def run():
        cancelled = []
        events = []
        d = drv.Deferred(cancelled.append)

        async def f():
            try:
                await d
            except defer.CancelledError as e:
                events.append(("cancelled inside", type(e), e.args))
                raise

        result = drv.fromCoroutine(f())
        result.cancel()
        assert cancelled == [d]
        assert events == [("cancelled inside", defer.CancelledError, ())]
        assert outcome(result) == ("failure", defer.CancelledError, ())
        # the CancelledError went to the driver's callback: d holds None
        assert holds(d) == ("value", None)

    run()
    assert logged_errors() == []


def test_cancelWhileWaitingOnDeferredWithoutCanceller(drv):
    d = drv.Deferred()

    async def f():
        await d

    result = drv.fromCoroutine(f())
    result.cancel()
    assert outcome(result) == ("failure", defer.CancelledError, ())
    assert holds(d) == ("value", None)


def test_cancelledCoroutineCatchesAndReturns(drv, logged_errors):
    def run():
        d = drv.Deferred()

        async def f():
            try:
                await d
            except defer.CancelledError:
                return "recovered"

        result = drv.fromCoroutine(f())
        seen = []
        result.addBoth(seen.append)
        result.cancel()  # no AlreadyCalledError
        assert seen == ["recovered"]

    run()
    assert logged_errors() == []


def test_cancelledCoroutineCatchesAndAwaitsAnother(drv):
    d = drv.Deferred()
    e = drv.Deferred()
    events = []

    async def f():
        try:
            await d
        except defer.CancelledError:
            events.append("caught")
        got = await e
        events.append(("got", got))
        return got + 1

    result = drv.fromCoroutine(f())
    seen = []
    result.addBoth(seen.append)
    result.cancel()
    assert events == ["caught"]
    assert seen == []
    assert not e.called
    e.callback(1)
    assert events == ["caught", ("got", 1)]
    assert seen == [2]
    assert holds(e) == ("value", None)


def test_cancelledCoroutineCatchesAndRaises(drv):
    d = drv.Deferred()

    async def f():
        try:
            await d
        except defer.CancelledError:
            raise Boom("instead")

    result = drv.fromCoroutine(f())
    result.cancel()
    assert outcome(result) == ("failure", Boom, ("instead",))


def test_cancelTwiceWhileWaiting(drv):
    cancelled = []
    d = drv.Deferred(cancelled.append)

    async def f():
        await d

    result = drv.fromCoroutine(f())
    result.cancel()
    result.cancel()
    assert cancelled == [d]
    assert outcome(result) == ("failure", defer.CancelledError, ())


@pytest.mark.parametrize("catch", [False, True], ids=["raises", "catches"])
def test_cancelAgainWhileTheFirstCancelIsDelivered(drv, catch):
    """A callback of the awaited Deferred (after the driver's) cancels the
    coroutine's Deferred again while the first cancel() is still delivering
    the CancelledError: a no-op, and the first cancel's outcome arrives."""
    events = []
    d = drv.Deferred()

    async def f():
        try:
            await d
        except defer.CancelledError:
            events.append("coroutine cancelled")
            if catch:
                return "caught"
            raise

    result = drv.fromCoroutine(f())

    def cancel_again(r):
        events.append(("d callback", r))
        result.cancel()
        events.append("cancelled again")

    d.addBoth(cancel_again)
    seen = []
    result.addBoth(seen.append)
    result.cancel()
    assert events == ["coroutine cancelled", ("d callback", None), "cancelled again"]
    assert len(seen) == 1
    if catch:
        assert seen == ["caught"]
    else:
        assert isinstance(seen[0], Failure) and seen[0].type is defer.CancelledError
        seen[0].trap(defer.CancelledError)


def test_cancelAgainReachesTheNextAwaitedDeferred(drv):
    cancelled = []
    d = drv.Deferred(lambda x: cancelled.append("d"))
    e = drv.Deferred(lambda x: cancelled.append("e"))
    events = []

    async def f():
        for awaited in (d, e):
            try:
                await awaited
            except defer.CancelledError:
                events.append("caught")
        return "done"

    result = drv.fromCoroutine(f())
    result.cancel()
    assert cancelled == ["d"]
    assert events == ["caught"]
    result.cancel()
    assert cancelled == ["d", "e"]
    assert events == ["caught", "caught"]
    assert outcome(result) == ("value", "done")


def test_cancellerOfAwaitedDeferredRaising(drv, logged_errors):
    """Twisted cancels the awaited Deferred from an errback on the coroutine's
    Deferred: the canceller's exception does not escape cancel(), it becomes
    the coroutine's result.  The coroutine itself is not told: it goes on
    waiting, and what it returns later goes nowhere."""
    events = []

    def run():
        def canceller(d):
            events.append("canceller")
            raise Boom("canceller")

        d = drv.Deferred(canceller)

        async def f():
            got = await d
            events.append(("resumed", got))
            return got

        result = drv.fromCoroutine(f())
        result.cancel()
        assert events == ["canceller"]
        assert holds(result) == ("failure", Boom)
        d.callback(5)
        assert events == ["canceller", ("resumed", 5)]
        assert outcome(result) == ("failure", Boom, ("canceller",))
        assert holds(d) == ("value", None)

    run()
    assert logged_errors() == []


def test_cancellerOfAwaitedDeferredRaisingUnhandled(drv, logged_errors):
    """Left unhandled, the failure the raising canceller gave the coroutine's
    Deferred is logged; so is, in Twisted, a later failure of the coroutine,
    which goes to the private Deferred nobody listens to."""

    def run():
        def canceller(d):
            raise Boom("canceller")

        d = drv.Deferred(canceller)

        async def f():
            await d
            raise ValueError("after")

        result = drv.fromCoroutine(f())
        result.cancel()
        d.callback(None)
        assert holds(result) == ("failure", Boom)

    run()
    logged = logged_errors()
    assert sorted(logged, key=repr) == sorted(unhandled(Boom) + unhandled(ValueError), key=repr)


def test_cancellerOfAwaitedDeferredRaisingLoggedFromACycle(drv, logged_errors):
    """As above, with the coroutine's own failure holding (through its
    traceback's frame) the Deferred the canceller failed: both are garbage at
    once, and both unhandled failures are logged, though logging the one
    brings the other back to life."""

    def run():
        holder = []

        def canceller(d):
            raise Boom("canceller")

        d = drv.Deferred(canceller)

        async def f():
            await d
            assert holder
            raise ValueError("coroutine")

        result = drv.fromCoroutine(f())
        holder.append(result)
        result.cancel()
        d.callback(None)

    run()
    assert sorted(logged_errors(), key=repr) == sorted(
        unhandled(Boom) + unhandled(ValueError), key=repr
    )


def test_coroutineCancellingItselfWhileRunning(drv):
    """cancel() from inside the running coroutine (after it has waited once):
    Twisted's driver cancels the Deferred it last waited on, already fired,
    so nothing happens and the coroutine's result still arrives."""
    d = drv.Deferred()
    e = drv.Deferred()
    holder = []
    events = []

    async def f():
        await d
        holder[0].cancel()
        events.append("after cancel")
        got = await e
        return ("done", got)

    holder.append(drv.fromCoroutine(f()))
    d.callback(1)
    assert events == ["after cancel"]
    assert not e.called
    e.callback(2)
    assert outcome(holder[0]) == ("value", ("done", 2))


# Not tested: cancel() from inside the running coroutine before it ever waited;
# Twisted's driver then fails an ``assert`` (so it behaves differently under -O).


def test_cancelAfterCompletionIsANoOp(drv):
    async def f():
        return 1

    result = drv.fromCoroutine(f())
    result.cancel()
    assert outcome(result) == ("value", 1)


def test_cancelAfterFailureIsANoOp(drv):
    async def f():
        raise Boom()

    result = drv.fromCoroutine(f())
    result.cancel()
    assert outcome(result) == ("failure", Boom, ())


def test_cancelAfterResumedCompletion(drv):
    d = drv.Deferred()

    async def f():
        return await d

    result = drv.fromCoroutine(f())
    d.callback(3)
    result.cancel()
    assert outcome(result) == ("value", 3)


def test_cancellerThatFiresTheAwaitedDeferred(drv):
    """A canceller that gives d a result: the coroutine gets that result."""
    d = drv.Deferred(lambda x: x.callback("from canceller"))

    async def f():
        got = await d
        return ("got", got)

    result = drv.fromCoroutine(f())
    result.cancel()
    assert outcome(result) == ("value", ("got", "from canceller"))
    assert holds(d) == ("value", None)


def test_cancellerThatFailsTheAwaitedDeferred(drv):
    d = drv.Deferred(lambda x: x.errback(Boom("from canceller")))

    async def f():
        await d

    result = drv.fromCoroutine(f())
    result.cancel()
    assert outcome(result) == ("failure", Boom, ("from canceller",))


def test_cancelPropagatesThroughNestedDrivenDeferreds(drv):
    cancelled = []
    d = drv.Deferred(cancelled.append)
    events = []

    async def inner():
        try:
            await d
        except defer.CancelledError:
            events.append("inner caught")
            raise

    async def outer():
        try:
            await drv.fromCoroutine(inner())
        except defer.CancelledError:
            events.append("outer caught")
            return "outer done"

    result = drv.fromCoroutine(outer())
    result.cancel()
    assert cancelled == [d]
    assert events == ["inner caught", "outer caught"]
    assert outcome(result) == ("value", "outer done")


def test_cancelInlineCallbacksWaitingOnYieldedGenerator(drv):
    cancelled = []
    d = drv.Deferred(cancelled.append)

    def sub():
        yield d

    @drv.inlineCallbacks
    def f():
        try:
            yield sub()
        except defer.CancelledError:
            return "caught"

    result = f()
    result.cancel()
    assert cancelled == [d]
    assert outcome(result) == ("value", "caught")


def test_cancelInlineCallbacks(drv):
    d = drv.Deferred()

    @drv.inlineCallbacks
    def f():
        try:
            yield d
        except defer.CancelledError:
            got = yield 5
            return ("caught", got)

    result = f()
    result.cancel()
    assert outcome(result) == ("value", ("caught", 5))


def test_cancelTheAwaitedDeferredDirectly(drv):
    d = drv.Deferred()

    async def f():
        try:
            await d
        except defer.CancelledError:
            return "inner cancelled"

    result = drv.fromCoroutine(f())
    d.cancel()
    assert outcome(result) == ("value", "inner cancelled")


def test_cancelWhileWaitingOnACustomAwaitable(drv):
    """A custom awaitable handing a Deferred to the driver: that Deferred is cancelled."""
    cancelled = []
    d = drv.Deferred(cancelled.append)

    async def f():
        try:
            await Hand(d)
        except defer.CancelledError:
            return "caught"

    result = drv.fromCoroutine(f())
    result.cancel()
    assert cancelled == [d]
    assert outcome(result) == ("value", "caught")


# --- nothing kept alive -----------------------------------------------------------


def _scenario_await(drv, d, coro, handle):
    result = drv.fromCoroutine(coro)
    handle(result)
    d.callback(1)


def _scenario_fail(drv, d, coro, handle):
    result = drv.fromCoroutine(coro)
    handle(result)
    d.errback(Boom())


def _scenario_cancel(drv, d, coro, handle):
    result = drv.fromCoroutine(coro)
    handle(result)
    result.cancel()


def _scenario_cancel_raising(drv, d, coro, handle):
    result = drv.fromCoroutine(coro)
    handle(result)
    result.cancel()  # d's canceller raises
    d.callback(2)


def _scenario_pending(drv, d, coro, handle):
    handle(drv.fromCoroutine(coro))


def _expected_log(scenario, handled, end):
    outer = {
        _scenario_await: ValueError if end == "raise" else None,
        _scenario_fail: Boom,
        _scenario_cancel: defer.CancelledError,
        _scenario_cancel_raising: Boom,
        _scenario_pending: None,
    }[scenario]
    logged = []
    if outer is not None and not handled:
        logged += unhandled(outer)
    if scenario is _scenario_cancel_raising and end == "raise":
        # the coroutine goes on, and fails into the private Deferred
        logged += unhandled(ValueError)
    return sorted(logged, key=repr)


@pytest.mark.parametrize(
    "scenario",
    [_scenario_await, _scenario_fail, _scenario_cancel, _scenario_cancel_raising, _scenario_pending],
    ids=["await", "fail", "cancel", "cancel-raising", "pending"],
)
@pytest.mark.parametrize("handled", [True, False], ids=["handled", "unhandled"])
@pytest.mark.parametrize("end", ["return", "raise"])
def test_nothingKeptAlive(drv, scenario, handled, end, logged_errors):
    """Once the program drops them, the coroutine, its Deferred and the
    Deferred it awaited are collected, and what is logged is Twisted's.

    (logged_errors strips the logged Failures of their frames, which would
    otherwise keep the awaited Deferred alive in twisted.logger's buffer.)
    """
    import weakref

    refs = []

    def run():
        def canceller(d):
            raise Boom("canceller")

        d = drv.Deferred(canceller if scenario is _scenario_cancel_raising else None)

        async def f():
            await d
            if end == "raise":
                raise ValueError("end")
            return "ok"

        coro = f()

        def handle(result):
            refs.append(weakref.ref(result))
            if handled:
                result.addBoth(lambda r: None)

        refs.append(weakref.ref(d))
        refs.append(weakref.ref(coro))
        scenario(drv, d, coro, handle)

    run()
    logged = sorted(logged_errors(), key=repr)
    assert logged == _expected_log(scenario, handled, end)
    assert [ref() for ref in refs] == [None, None, None]


# --- recursion and depth ---------------------------------------------------------

N = 10_000


def test_manyFiredAwaits(drv):
    ds = [fired(drv, 1) for _ in range(N)]

    async def f():
        total = 0
        for d in ds:
            total += await d
        return total

    assert outcome(drv.fromCoroutine(f())) == ("value", N)


def test_manyFiredDeferredsHandedToTheDriver(drv):
    """Each Deferred fires inside the driver's addBoth: taken without recursion."""
    ds = [fired(drv, 1) for _ in range(N)]

    async def f():
        total = 0
        for d in ds:
            total += await Hand(d)
        return total

    assert outcome(drv.fromCoroutine(f())) == ("value", N)
    assert holds(ds[0]) == holds(ds[-1]) == ("value", None)


def test_manyFiredYields(drv):
    ds = [fired(drv, 1) for _ in range(N)]

    @drv.inlineCallbacks
    def f():
        total = 0
        for d in ds:
            total += yield d
        return total

    assert outcome(f()) == ("value", N)


def test_manyFailedYields(drv, logged_errors):
    def run():
        @drv.inlineCallbacks
        def f():
            caught = 0
            for _ in range(N):
                try:
                    yield failed(drv, Boom())
                except Boom:
                    caught += 1
            return caught

        assert outcome(f()) == ("value", N)

    run()
    assert logged_errors() == []


def test_manyPlainYields(drv):
    @drv.inlineCallbacks
    def f():
        total = 0
        for _ in range(N):
            total += yield 1
        return total

    assert outcome(f()) == ("value", N)


def test_manyFiredCoroutinesYielded(drv):
    async def one():
        return 1

    @drv.inlineCallbacks
    def f():
        total = 0
        for _ in range(N):
            total += yield one()
        return total

    assert outcome(f()) == ("value", N)


def test_manyUnfiredAwaits(drv):
    ds = [drv.Deferred() for _ in range(N)]

    async def f():
        total = 0
        for d in ds:
            total += await d
        return total

    result = drv.fromCoroutine(f())
    for d in ds:
        assert not result.called
        d.callback(1)
    assert outcome(result) == ("value", N)
    assert holds(ds[-1]) == ("value", None)


DEPTH = 60


def test_deepNestingOfDrivenCoroutines(drv):
    d = drv.Deferred()

    async def level(n):
        if n == 0:
            return await d
        return 1 + await drv.fromCoroutine(level(n - 1))

    result = drv.fromCoroutine(level(DEPTH))
    assert not result.called
    d.callback(0)
    assert outcome(result) == ("value", DEPTH)


def test_deepNestingOfYieldedGenerators(drv):
    d = drv.Deferred()

    def level(n):
        if n == 0:
            return (yield d)
        return 1 + (yield level(n - 1))

    result = drv.inlineCallbacks(lambda: level(DEPTH))
    # the lambda returns a generator: it is accepted
    result = result()
    d.callback(0)
    assert outcome(result) == ("value", DEPTH)


def test_deepNestingCancelled(drv):
    cancelled = []
    d = drv.Deferred(cancelled.append)

    async def level(n):
        if n == 0:
            return await d
        return 1 + await drv.fromCoroutine(level(n - 1))

    result = drv.fromCoroutine(level(DEPTH))
    result.cancel()
    assert cancelled == [d]
    assert outcome(result) == ("failure", defer.CancelledError, ())


def test_deepNestingOfDrivenFailures(drv, logged_errors):
    def run():
        d = drv.Deferred()

        async def level(n):
            if n == 0:
                await d
                raise Boom("deep")
            return await drv.fromCoroutine(level(n - 1))

        result = drv.fromCoroutine(level(DEPTH))
        d.callback(None)
        assert outcome(result) == ("failure", Boom, ("deep",))

    run()
    assert logged_errors() == []


# --- foreign awaitables ---------------------------------------------------------------


def test_customAwaitableYieldingAPlainValue(drv):
    """What a foreign awaitable yields that is no Deferred is sent straight back."""

    async def f():
        first = await Ping("a")
        second = await Ping(42)
        return first, second

    assert outcome(drv.fromCoroutine(f())) == (
        "value",
        (("sent back", "a"), ("sent back", 42)),
    )


def test_customAwaitableYieldingAFailure(drv):
    """A Failure yielded by a foreign awaitable is thrown back into it."""
    failure = Failure(Boom("plain"))

    async def f():
        return await Ping(failure)

    assert outcome(drv.fromCoroutine(f())) == ("value", ("thrown back", Boom, ("plain",)))


def test_customAwaitableYieldingACoroutine(drv):
    """A coroutine yielded to the driver is run, and its result sent back."""

    async def sub():
        return "sub"

    async def f():
        return await Ping(sub())

    assert outcome(drv.fromCoroutine(f())) == ("value", ("sent back", "sub"))


def test_customAwaitableYieldingAnUnfiredDeferred(drv):
    d = drv.Deferred()

    async def f():
        return await Ping(d)

    result = drv.fromCoroutine(f())
    assert not result.called
    d.callback("d")
    assert outcome(result) == ("value", ("sent back", "d"))
    assert holds(d) == ("value", None)


def test_customAwaitableYieldingAFailedDeferred(drv, logged_errors):
    def run():
        d = failed(drv, Boom("handed"))

        async def f():
            try:
                await Hand(d)
            except Boom as e:
                return e.args

        assert outcome(drv.fromCoroutine(f())) == ("value", ("handed",))
        assert holds(d) == ("value", None)

    run()
    assert logged_errors() == []


# A subclass of cdeferred's Deferred overriding addBoth is not used here: the
# C driver takes a fired C Deferred's result without calling its addBoth (a
# known difference listed in the README), so only a subclass of Twisted's
# Deferred, foreign to the C core, is handed to both drivers.


class RaisingAddBoth(defer.Deferred):
    """A Deferred (for the drivers) whose addBoth raises."""

    def addBoth(self, *args, **kwargs):
        raise Boom("addBoth")


def test_addBothRaisingAtTheFirstWait(drv):
    """The exception escapes from fromCoroutine itself; the coroutine stays suspended."""
    steps = []

    async def f():
        steps.append("start")
        await RaisingAddBoth()
        steps.append("never")

    with pytest.raises(Boom, match="addBoth"):
        drv.fromCoroutine(f())
    assert steps == ["start"]


def test_addBothRaisingAfterResuming(drv):
    """The exception escapes into the code that resumed the coroutine: here the
    awaited Deferred's callback chain, where it becomes that Deferred's failure."""
    d = drv.Deferred()
    steps = []

    async def f():
        await d
        steps.append("resumed")
        await RaisingAddBoth()
        steps.append("never")

    result = drv.fromCoroutine(f())
    d.callback(None)
    assert steps == ["resumed"]
    assert not result.called
    assert outcome(d) == ("failure", Boom, ("addBoth",))


def test_addBothRaisingYieldedFromInlineCallbacks(drv):
    @drv.inlineCallbacks
    def f():
        yield RaisingAddBoth()

    with pytest.raises(Boom, match="addBoth"):
        f()
