"""The benchmark scenarios.

A scenario is built for one Deferred class ``D`` by ``make(D)``, which returns a
*loop* function: ``loop(n)`` performs the operation ``n`` times in a tight loop and
returns what the last iteration produced, which ``check`` then validates (once,
before timing), so an implementation that gets a scenario wrong is reported as an
error instead of timed.  Keeping the loop inside the scenario (rather than
calling a per-operation function from the timer) means the per-operation figure
carries only a ``for`` loop's overhead, the same for every implementation and
for the floor.

The helper scenarios (coroutine, inlineCallbacks, DeferredList,
gatherResults) use the implementation's own helpers: ``D.fromCoroutine``, and
``inlineCallbacks``/``DeferredList``/``gatherResults`` from ``D``'s module --
cdeferred's C driver and C DeferredList for the C core, Twisted's own for
Twisted and for the pure-Python reference (which re-exports Twisted's).  That
is what a program gets after ``cdeferred.install()`` or by importing these
names from cdeferred.
"""

import importlib
from itertools import repeat

from twisted.internet import defer

# --- the four callbacks, shared by the Deferred scenarios and the floor -----------


def _cb1(result):
    return result + 1


def _cb2(result):
    return result + 1


def _cb3(result):
    return result + 1


def _cb4(result):
    return result + 1


def _return_arg(result, other):
    """A callback returning another Deferred (passed as a callback argument)."""
    return other


def _raise(result):
    raise ValueError(result)


def _trap_value_error(failure):
    failure.trap(ValueError)
    return None


def _consume(failure):
    return None


def _noop_canceller(d):
    pass


async def _await_all(fired, unfired):
    total = 0
    for d in fired:
        total += await d
    for d in unfired:
        total += await d
    return total


def _yield_all(ds):
    total = 0
    for d in ds:
        total += yield d
    return total


def _helper_of(D, name):
    """The helper ``name`` (inlineCallbacks, DeferredList, gatherResults) of
    D's module; Twisted's when that module has none."""
    module = importlib.import_module(D.__module__)
    return getattr(module, name, getattr(defer, name))


def _result(d):
    # ``result`` is absent until a Deferred fires, as in Twisted.
    return getattr(d, "result", "<no result>")


def _expect(actual, expected, what="result"):
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


# --- scenarios ---------------------------------------------------------------------


class Scenario:
    """One timed operation.

    ``key`` is the stable identifier (JSON, ``--scenario``), ``title`` the table
    label, ``doc`` what is measured (README, ``--list``).  A scenario with
    ``per_implementation=False`` (the floor) does not use a Deferred and is timed
    once per round instead of once per implementation.
    """

    def __init__(self, key, title, doc, make, check, per_implementation=True):
        self.key = key
        self.title = title
        self.doc = doc
        self.make = make
        self.check = check
        self.per_implementation = per_implementation

    def __repr__(self):
        return f"<Scenario {self.key}>"


def _make_create(D):
    def loop(n):
        for _ in repeat(None, n):
            d = D()
        return d

    return loop


def _check_create(d):
    _expect(d.called, False, "called")


def _make_callbacks_then_fire(D):
    cb1, cb2, cb3, cb4 = _cb1, _cb2, _cb3, _cb4

    def loop(n):
        for _ in repeat(None, n):
            d = D()
            d.addCallback(cb1)
            d.addCallback(cb2)
            d.addCallback(cb3)
            d.addCallback(cb4)
            d.callback(0)
        return d

    return loop


def _check_four(d):
    _expect(_result(d), 4)


def _make_floor(D=None):
    cb1, cb2, cb3, cb4 = _cb1, _cb2, _cb3, _cb4

    def loop(n):
        for _ in repeat(None, n):
            r = 0
            r = cb1(r)
            r = cb2(r)
            r = cb3(r)
            r = cb4(r)
        return r

    return loop


def _check_floor(r):
    _expect(r, 4)


def _make_fire_then_callbacks(D):
    cb1, cb2, cb3, cb4 = _cb1, _cb2, _cb3, _cb4

    def loop(n):
        for _ in repeat(None, n):
            d = D()
            d.callback(0)
            d.addCallback(cb1)
            d.addCallback(cb2)
            d.addCallback(cb3)
            d.addCallback(cb4)
        return d

    return loop


def _make_errback_trap(D):
    raise_, trap = _raise, _trap_value_error

    def loop(n):
        for _ in repeat(None, n):
            d = D()
            d.addCallback(raise_)
            d.addErrback(trap)
            d.callback(0)
        return d

    return loop


def _check_fired_none(d):
    _expect(d.called, True, "called")
    _expect(_result(d), None)


def _make_chain_fired(D):
    ret = _return_arg

    def loop(n):
        for _ in repeat(None, n):
            inner = D()
            inner.callback(1)
            outer = D()
            outer.addCallback(ret, inner)
            outer.callback(0)
        return outer

    return loop


def _check_chained(outer):
    _expect(_result(outer), 1)


def _make_chain_unfired(D):
    ret = _return_arg

    def loop(n):
        for _ in repeat(None, n):
            inner = D()
            outer = D()
            outer.addCallback(ret, inner)
            outer.callback(0)
            inner.callback(1)
        return outer

    return loop


def _make_cancel_plain(D):
    consume = _consume

    def loop(n):
        for _ in repeat(None, n):
            d = D()
            d.addErrback(consume)
            d.cancel()
        return d

    return loop


def _make_cancel_canceller(D):
    consume, canceller = _consume, _noop_canceller

    def loop(n):
        for _ in repeat(None, n):
            d = D(canceller)
            d.addErrback(consume)
            d.cancel()
        return d

    return loop


COROUTINE_FIRED = 100
COROUTINE_UNFIRED = 20


def _make_coroutine(D):
    from_coroutine = getattr(D, "fromCoroutine", None) or defer.ensureDeferred
    coro_fn = _await_all
    fired_values = range(COROUTINE_FIRED)
    unfired_count = range(COROUTINE_UNFIRED)

    def loop(n):
        for _ in repeat(None, n):
            fired = []
            for i in fired_values:
                d = D()
                d.callback(i)
                fired.append(d)
            unfired = [D() for _ in unfired_count]
            result = from_coroutine(coro_fn(fired, unfired))
            for d in unfired:
                d.callback(1)
        return result

    return loop


def _check_coroutine(result):
    _expect(_result(result), sum(range(COROUTINE_FIRED)) + COROUTINE_UNFIRED)


INLINE_YIELDS = 100


def _make_inline_callbacks(D):
    gen_fn = _helper_of(D, "inlineCallbacks")(_yield_all)
    values = range(INLINE_YIELDS)

    def loop(n):
        for _ in repeat(None, n):
            ds = []
            for i in values:
                d = D()
                d.callback(i)
                ds.append(d)
            result = gen_fn(ds)
        return result

    return loop


def _check_inline_callbacks(result):
    _expect(_result(result), sum(range(INLINE_YIELDS)))


GATHER_SIZE = 100


def _make_deferred_list(D):
    DeferredList = _helper_of(D, "DeferredList")
    count = range(GATHER_SIZE)

    def loop(n):
        for _ in repeat(None, n):
            ds = [D() for _ in count]
            dl = DeferredList(ds)
            i = 0
            for d in ds:
                d.callback(i)
                i += 1
        return dl

    return loop


def _check_deferred_list(dl):
    _expect(_result(dl), [(True, i) for i in range(GATHER_SIZE)])


def _make_gather_results(D):
    gather = _helper_of(D, "gatherResults")
    count = range(GATHER_SIZE)

    def loop(n):
        for _ in repeat(None, n):
            ds = [D() for _ in count]
            g = gather(ds)
            i = 0
            for d in ds:
                d.callback(i)
                i += 1
        return g

    return loop


def _check_gather_results(g):
    _expect(_result(g), list(range(GATHER_SIZE)))


SCENARIOS = [
    Scenario(
        "create", "create",
        "D(): create a Deferred and drop it.",
        _make_create, _check_create,
    ),
    Scenario(
        "callbacks_then_fire", "4 callbacks, then fire",
        "D(), addCallback x4, then callback(0): the callbacks run when it fires.",
        _make_callbacks_then_fire, _check_four,
    ),
    Scenario(
        "floor", "floor: the 4 functions called directly",
        "The same four callback functions called directly (r = cb(r) four times), "
        "no Deferred: the floor 'callbacks_then_fire' is compared with.",
        _make_floor, _check_floor, per_implementation=False,
    ),
    Scenario(
        "fire_then_callbacks", "fire, then 4 callbacks",
        "D(), callback(0), then addCallback x4: each callback runs as it is added.",
        _make_fire_then_callbacks, _check_four,
    ),
    Scenario(
        "errback_trap", "errback chain (raise + trap)",
        "D(), addCallback(raises ValueError), addErrback(failure.trap(ValueError)), "
        "callback(0): exception to Failure and back to a result.",
        _make_errback_trap, _check_fired_none,
    ),
    Scenario(
        "chain_fired", "chained, inner already fired",
        "A callback of the outer Deferred returns an inner Deferred that has already "
        "fired: its result is taken over at once (2 Deferreds per op).",
        _make_chain_fired, _check_chained,
    ),
    Scenario(
        "chain_unfired", "chained, inner fired later",
        "A callback of the outer Deferred returns an unfired inner Deferred: the outer "
        "pauses and resumes when the inner fires (2 Deferreds per op).",
        _make_chain_unfired, _check_chained,
    ),
    Scenario(
        "cancel", "cancel, no canceller",
        "D(), addErrback(consume), cancel(): CancelledError through the errback.",
        _make_cancel_plain, _check_fired_none,
    ),
    Scenario(
        "cancel_canceller", "cancel, with canceller",
        "D(canceller) with a canceller that does nothing, addErrback(consume), cancel().",
        _make_cancel_canceller, _check_fired_none,
    ),
    Scenario(
        "coroutine", f"coroutine: await {COROUTINE_FIRED} fired + {COROUTINE_UNFIRED} unfired",
        f"D.fromCoroutine on a coroutine that awaits {COROUTINE_FIRED} already-fired "
        f"and then {COROUTINE_UNFIRED} unfired Deferreds of the implementation, which "
        "are fired one by one after the coroutine starts; includes creating and "
        f"firing the {COROUTINE_FIRED + COROUTINE_UNFIRED} Deferreds. fromCoroutine is the "
        "implementation's own if it overrides it, Twisted's (making a Twisted "
        "Deferred) otherwise.",
        _make_coroutine, _check_coroutine,
    ),
    Scenario(
        "inline_callbacks", f"inlineCallbacks: {INLINE_YIELDS} yields",
        f"An @inlineCallbacks generator yielding {INLINE_YIELDS} already-fired "
        "Deferreds of the implementation (created and fired in the op), driven "
        "by the implementation's inlineCallbacks (cdeferred.inlineCallbacks for "
        "the C core; Twisted's for Twisted and the reference).",
        _make_inline_callbacks, _check_inline_callbacks,
    ),
    Scenario(
        "deferred_list", f"DeferredList of {GATHER_SIZE}",
        f"The implementation's DeferredList (C for the C core, Twisted's "
        f"otherwise) over {GATHER_SIZE} unfired Deferreds of the implementation, "
        "then each fired.",
        _make_deferred_list, _check_deferred_list,
    ),
    Scenario(
        "gather_results", f"gatherResults of {GATHER_SIZE}",
        f"The implementation's gatherResults over {GATHER_SIZE} unfired Deferreds "
        "of the implementation, then each fired (as for DeferredList).",
        _make_gather_results, _check_gather_results,
    ),
]

SCENARIOS_BY_KEY = {s.key: s for s in SCENARIOS}

#: The scenario whose cost is reported as a multiple of the floor.
FLOOR_KEY = "floor"
FLOOR_COMPARED = "callbacks_then_fire"


# --- memory ------------------------------------------------------------------------


def make_pending(D, callbacks):
    """A pending Deferred with ``callbacks`` callbacks (the same shared functions,
    so only the Deferred's own storage for them counts)."""
    d = D()
    for cb in (_cb1, _cb2, _cb3, _cb4)[:callbacks]:
        d.addCallback(cb)
    return d


MEMORY_CALLBACKS = (0, 4)
