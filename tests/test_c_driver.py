"""
The C coroutine driver (csrc/driver.c) behind cdeferred's
``Deferred.fromCoroutine``, ``ensureDeferred`` and ``inlineCallbacks``,
against Twisted's own trampoline: every behaviour test runs on both, and on
the two mixtures (the C driver awaiting Twisted's Deferreds, Twisted's driver
awaiting C Deferreds).  A Hypothesis differential test compares random
coroutine programs event by event.

Not compared (legitimately different): traceback frames, which name Twisted's
``_inlineCallbacks`` in one and nothing in the other.
"""

import contextvars
import gc
import os
import types
import warnings

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


def _twisted():
    return types.SimpleNamespace(
        name="twisted",
        Deferred=defer.Deferred,
        Driven=defer.Deferred,
        fromCoroutine=defer.Deferred.fromCoroutine,
        ensureDeferred=defer.ensureDeferred,
        inlineCallbacks=defer.inlineCallbacks,
    )


def _c(awaited):
    return types.SimpleNamespace(
        name="c",
        Deferred=awaited,
        Driven=_cimpl.Deferred,
        fromCoroutine=_cimpl.Deferred.fromCoroutine,
        ensureDeferred=_cimpl.ensureDeferred,
        inlineCallbacks=_cimpl.inlineCallbacks,
    )


@pytest.fixture(
    params=["twisted", "c", "c-awaiting-twisted", "twisted-awaiting-c"]
)
def drv(request):
    if request.param == "twisted":
        return _twisted()
    if request.param == "c":
        return _c(_cimpl.Deferred)
    if request.param == "c-awaiting-twisted":
        return _c(defer.Deferred)
    ns = _twisted()
    ns.Deferred = _cimpl.Deferred
    return ns


class Boom(Exception):
    pass


def outcome(d):
    """What d holds now: ('ok', value), ('fail', type) or ('pending',)."""
    seen = []

    def look(result):
        seen.append(result)
        # A success is left in place; a Failure is taken (handled).
        return None if isinstance(result, Failure) else result

    d.addBoth(look)
    if not seen:
        return ("pending",)
    (r,) = seen
    if isinstance(r, Failure):
        return ("fail", r.type)
    return ("ok", r)


@pytest.fixture
def unhandled():
    """Unhandled-error reports logged while the test runs."""
    events = []

    def observe(event):
        if "Unhandled error in Deferred" in str(event.get("log_format", "")):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def test_returnsDeferredOfTheDriverClass(drv):
    async def main():
        return 5

    d = drv.fromCoroutine(main())
    assert type(d) is drv.Driven
    assert outcome(d) == ("ok", 5)


def test_awaitFiredUnfiredAndFailed(drv, unhandled):
    fired, later, failed = drv.Deferred(), drv.Deferred(), drv.Deferred()
    fired.callback(1)
    failed.errback(Boom("x"))
    events = []

    async def main():
        events.append(await fired)
        events.append(await later)
        try:
            await failed
        except Boom as e:
            events.append(("caught", str(e)))
        return "done"

    d = drv.ensureDeferred(main())
    assert events == [1]
    assert outcome(d) == ("pending",)
    later.callback(2)
    assert events == [1, 2, ("caught", "x")]
    assert outcome(d) == ("ok", "done")
    # The Deferred the driver waited on (through its callback) holds None.
    assert later.result is None
    del failed
    gc.collect()
    assert unhandled == []


def test_raisedExceptionBecomesFailure(drv):
    async def main():
        raise Boom("bad")

    d = drv.ensureDeferred(main())
    assert outcome(d) == ("fail", Boom)


def test_baseExceptionBecomesFailure(drv):
    class Stop(BaseException):
        pass

    async def main():
        raise Stop()

    assert outcome(drv.ensureDeferred(main())) == ("fail", Stop)


def test_failureDeliveredLaterIsRaisedInside(drv, unhandled):
    waited = drv.Deferred()

    async def main():
        try:
            await waited
        except Boom:
            return "handled"

    d = drv.ensureDeferred(main())
    waited.errback(Boom())
    assert outcome(d) == ("ok", "handled")
    assert waited.result is None
    del waited
    gc.collect()
    assert unhandled == []


def test_nestedCoroutine(drv):
    inner_d = drv.Deferred()

    async def inner():
        return (await inner_d) * 2

    async def outer():
        return await inner() + 1

    d = drv.ensureDeferred(outer())
    inner_d.callback(10)
    assert outcome(d) == ("ok", 21)


def test_inlineCallbacksYieldsPlainValuesGeneratorsAndCoroutines(drv):
    waited = drv.Deferred()

    def sub():
        value = yield waited
        return value + 1

    async def coro():
        return "c"

    @drv.inlineCallbacks
    def main():
        plain = yield 7
        from_gen = yield sub()
        from_coro = yield coro()
        return (plain, from_gen, from_coro)

    d = main()
    assert type(d) is drv.Driven
    waited.callback(1)
    assert outcome(d) == ("ok", (7, 2, "c"))


def test_inlineCallbacksNeedsAGenerator(drv):
    def notGenerator():
        return 1

    with pytest.raises(TypeError, match="inlineCallbacks requires"):
        drv.inlineCallbacks(notGenerator)()


def test_returnValueStillWorks(drv):
    @drv.inlineCallbacks
    def main():
        yield 1  # a plain value: sent straight back
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            defer.returnValue(3)

    assert outcome(main()) == ("ok", 3)


def test_nonLocalReturnValueWarns(drv):
    def helper():
        defer.returnValue("from helper")

    @drv.inlineCallbacks
    def main():
        yield 1
        helper()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = main()
    messages = [str(w.message) for w in caught if "causing" in str(w.message)]
    assert messages == [
        "returnValue() in 'helper' causing 'main' to exit: returnValue should "
        "only be invoked by functions decorated with inlineCallbacks"
    ]
    assert outcome(d) == ("ok", "from helper")


def test_notACoroutine(drv):
    with pytest.raises(defer.NotACoroutineError, match="is not a coroutine$"):
        drv.fromCoroutine(5)
    with pytest.raises(defer.NotACoroutineError, match="not a coroutine or a Deferred"):
        drv.ensureDeferred(5)


def test_ensureDeferredPassesDeferredsThrough(drv):
    d = drv.Deferred()
    assert drv.ensureDeferred(d) is d


def test_contextIsCopied(drv):
    var = contextvars.ContextVar("var", default="outside")
    waited = drv.Deferred()
    seen = []

    async def main():
        var.set("inside")
        await waited
        seen.append(var.get())

    var.set("before")
    d = drv.ensureDeferred(main())
    assert var.get() == "before"
    waited.callback(None)
    assert seen == ["inside"]
    assert var.get() == "before"
    assert outcome(d) == ("ok", None)


def test_cancelWhileWaiting(drv):
    cancelled = []
    waited = drv.Deferred(lambda d: cancelled.append(d))

    async def main():
        await waited

    d = drv.ensureDeferred(main())
    d.cancel()
    assert cancelled == [waited]
    assert outcome(d) == ("fail", defer.CancelledError)


def test_cancelCaughtAndReturned(drv):
    waited = drv.Deferred()

    async def main():
        try:
            await waited
        except defer.CancelledError:
            return "recovered"

    d = drv.ensureDeferred(main())
    d.cancel()
    assert outcome(d) == ("ok", "recovered")


def test_cancelCaughtThenWaitsAgain(drv):
    first, second = drv.Deferred(), drv.Deferred()

    async def main():
        try:
            await first
        except defer.CancelledError:
            pass
        return await second

    d = drv.ensureDeferred(main())
    d.cancel()
    assert outcome(d) == ("pending",)
    second.callback("after")
    assert outcome(d) == ("ok", "after")
    d.cancel()  # fired: nothing happens
    assert outcome(d) == ("ok", "after")


def test_cancelTwiceCancelsTheNextWait(drv):
    first, second = drv.Deferred(), drv.Deferred()
    log = []

    async def main():
        for waited in (first, second):
            try:
                await waited
            except defer.CancelledError:
                log.append("cancelled")
        return len(log)

    d = drv.ensureDeferred(main())
    d.cancel()
    d.cancel()
    assert log == ["cancelled", "cancelled"]
    assert outcome(d) == ("ok", 2)


def test_cancelAfterCompletionIsNoOp(drv):
    async def main():
        return 1

    d = drv.ensureDeferred(main())
    d.cancel()
    assert outcome(d) == ("ok", 1)


@pytest.mark.parametrize("how", ["fired", "fires-in-addBoth"])
def test_manySynchronousAwaitsDoNotRecurse(drv, how):
    D = drv.Deferred

    def make(i):
        d = D()
        if how == "fired":
            d.callback(i)
        else:
            # Fires as soon as someone adds a callback (inside addBoth).
            original = d.addBoth
            d.addBoth = lambda *a, **k: (d.callback(i), original(*a, **k))[1]
        return d

    # A generator: `yield` gets what the driver sends in.  (`await` on a
    # Deferred that fires inside the driver's addBoth reads the Deferred's
    # result afterwards, which the driver's callback has made None -- in
    # Twisted's driver as in ours.)
    @drv.inlineCallbacks
    def main():
        total = 0
        for i in range(10_000):
            total += yield make(i)
        return total

    assert outcome(main()) == ("ok", sum(range(10_000)))


def test_deepNesting(drv):
    async def level(n):
        if n == 0:
            d = drv.Deferred()
            d.callback(0)
            return await d
        return await level(n - 1) + 1

    assert outcome(drv.ensureDeferred(level(200))) == ("ok", 200)


class Awaitable:
    """A custom awaitable yielding a plain value to the driver."""

    def __await__(self):
        value = yield "plain"
        return ("sent back", value)


def test_customAwaitableYieldingPlainValue(drv):
    async def main():
        return await Awaitable()

    assert outcome(drv.ensureDeferred(main())) == ("ok", ("sent back", "plain"))


def test_addBothRaisingPropagates(drv):
    class Odd(drv.Deferred):
        def addBoth(self, *args, **kwargs):
            raise Boom("addBoth")

    if Odd not in defer._DEFERRED_SUBCLASSES:
        pytest.skip("not recognised as a Deferred")

    async def main():
        await Odd()

    with pytest.raises(Boom):
        drv.ensureDeferred(main())


def test_installedClassIsMade():
    cdeferred.install()
    try:

        async def main():
            return 1

        assert type(defer.ensureDeferred(main())) is defer.Deferred
        assert type(_cimpl.Deferred.fromCoroutine(main())) is defer.Deferred
    finally:
        cdeferred.uninstall()


# --- differential: random coroutine programs ----------------------------------

step = st.one_of(
    st.tuples(st.just("fired"), st.integers(0, 9)),
    st.tuples(st.just("failed"), st.booleans()),  # re-raise after catching?
    st.tuples(st.just("unfired"), st.booleans()),  # with a canceller?
    st.tuples(st.just("nested"), st.integers(0, 3)),
    st.tuples(st.just("plain"), st.integers(0, 9)),
)
action = st.tuples(st.integers(0, 7), st.sampled_from(["cb", "eb", "cancel", "cancel_inner"]))
programs = st.fixed_dictionaries(
    {
        "steps": st.lists(step, max_size=8),
        "actions": st.lists(action, max_size=10),
        "reraise_cancel": st.booleans(),
        "fail_end": st.booleans(),
        "generator": st.booleans(),
    }
)


def _show(value):
    if isinstance(value, Failure):
        return ("failure", value.type.__name__)
    return value


def run_program(program, ns):
    D = ns.Deferred
    log = []
    pending = {}

    def make(i, spec):
        kind = spec[0]
        if kind == "fired":
            d = D()
            d.callback(spec[1])
        elif kind == "failed":
            d = D()
            d.errback(Boom(i))
        elif spec[1]:
            d = D(lambda d, i=i: log.append(("canceller", i)))
            pending[i] = d
        else:
            d = D()
            pending[i] = d
        return d

    def body():
        count = 0
        for i, spec in enumerate(program["steps"]):
            if spec[0] == "nested":
                inner = _nested(spec[1])
                value = yield (inner if program["generator"] else ns.ensureDeferred(inner))
                log.append(("nested", value))
                continue
            if spec[0] == "plain":
                if program["generator"]:
                    log.append(("plain", (yield spec[1])))
                continue
            d = make(i, spec)
            try:
                log.append(("got", i, (yield d)))
            except Boom as e:
                log.append(("caught", str(e)))
                if spec[1]:
                    raise
            except defer.CancelledError:
                log.append(("cancelled", i))
                if program["reraise_cancel"]:
                    raise
            count += 1
        if program["fail_end"]:
            raise Boom("end")
        return count

    async def _nested(n):
        total = 0
        for j in range(n):
            d = D()
            d.callback(j)
            total += await d
        return total

    class AsCoroutine:
        """body() as an awaitable for the coroutine flavour."""

        def __await__(self):
            return (yield from body())

    async def main():
        return await AsCoroutine()

    if program["generator"]:
        out = ns.inlineCallbacks(body)()
    else:
        out = ns.fromCoroutine(main())
    out.addBoth(lambda r: log.append(("outer", _show(r))) or None)
    for i, act in program["actions"]:
        try:
            if act == "cancel":
                out.cancel()
            elif i in pending:
                d = pending[i]
                if act == "cb":
                    d.callback(i * 10)
                elif act == "eb":
                    d.errback(Boom(f"late {i}"))
                else:
                    d.cancel()
        except Exception as e:
            log.append(("api error", type(e).__name__))
    for i in sorted(pending):
        d = pending[i]
        log.append(("inner", i, _show(getattr(d, "result", "<none>"))))
        d.addErrback(lambda f: None)
    return log


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(programs)
def test_sameEventsAsTwistedsDriver(program):
    twisted_log = run_program(program, _twisted())
    c_log = run_program(program, _c(_cimpl.Deferred))
    assert c_log == twisted_log
