"""
Differential test of the coroutine driver.  Hypothesis generates programs: one
or two coroutines, each a list of steps, ending by returning a value or
raising (an Exception or a BaseException).  A step awaits a fired value, a
fired failure, an unfired Deferred (with or without a canceller, which may
record, fire, fail or raise; with or without a callback of its own before the
driver's), a Deferred an earlier step awaited (again), a nested coroutine (run
inline, through fromCoroutine, or handed to the driver) or a plain value through
a foreign awaitable; each await catches some exceptions or none.  A step may
also set a context variable, fire a pending Deferred, or cancel a coroutine's
Deferred, from inside the running coroutine.  After the coroutines have started,
a script does the same from outside, and pauses, unpauses and adds callbacks to
the awaited Deferreds.

The program runs on Twisted's Deferred with Twisted's ``fromCoroutine`` (the
oracle) and on ``cdeferred._cimpl.Deferred`` with its ``fromCoroutine``, and on
the two mixtures (the C driver awaiting Twisted's Deferreds, Twisted's driver
awaiting C Deferreds).  Every observable event must be the same: what each
await got or raised, the context variable each coroutine, callback and
canceller saw, what the coroutines' Deferreds fired with, what the API calls
raised, what every Deferred holds at the end, and what was logged.

Each await is done one of two ways: ``await d`` (Deferred.__await__) or by
handing ``d`` to the driver as an inlineCallbacks ``yield`` does (the driver
adds its callback even to a fired Deferred, so that Deferred ends up holding
None).

Not compared (legitimately different): traceback frames; what a coroutine's
Deferred holds between a cancel() and the coroutine's end (Twisted chains it to
a private Deferred of its trampoline), only what its callbacks receive and its
final ``called``; and when an unhandled failure is logged (see execute()).
Not generated: what makes Twisted's code fail an ``assert`` (cancelling a
running coroutine that never waited; awaiting a failed Deferred while it runs
its callbacks).

CDEFERRED_HYPOTHESIS_EXAMPLES sets the number of programs (default 150).
"""

import contextvars
import gc
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

import cdeferred

pytestmark = pytest.mark.skipif(cdeferred._cimpl is None, reason="needs the C core")

EXAMPLES = int(os.environ.get("CDEFERRED_HYPOTHESIS_EXAMPLES", "150"))

# (name, the Deferred class the coroutines await, the driver's fromCoroutine)
TWISTED = ("twisted", defer.Deferred, defer.Deferred.fromCoroutine)
if cdeferred._cimpl is not None:
    _C = cdeferred._cimpl.Deferred
    IMPLEMENTATIONS = {
        "c": ("c", _C, _C.fromCoroutine),
        # the mixtures: C driver awaiting Twisted's Deferreds, and the reverse
        "c-awaiting-twisted": ("c-awaiting-twisted", defer.Deferred, _C.fromCoroutine),
        "twisted-awaiting-c": ("twisted-awaiting-c", _C, defer.Deferred.fromCoroutine),
    }


class Boom(Exception):
    pass


class CustomBase(BaseException):
    pass


var = contextvars.ContextVar("var", default="unset")

# --- programs -------------------------------------------------------------------

value = st.integers(0, 9)
how = st.sampled_from(["await", "hand"])
catch = st.sampled_from(["none", "boom", "cancelled", "exception"])
canceller = st.sampled_from([None, "record", "fire", "errback", "raise"])
# a callback on an awaited Deferred: passes the result on, replaces it,
# raises, or returns a new unfired Deferred (which the program can fire)
callback_kind = st.sampled_from(["pass", "replace", "raise", "chain"])
outcome = st.sampled_from(["value", "value", "boom", "base"])
ending = st.one_of(
    st.tuples(st.just("return"), value),
    st.tuples(st.just("raise"), st.sampled_from(["Boom", "CustomBase"])),
)

# What a step and the outside script may do to the Deferreds of the program:
# fire the i-th pending awaited Deferred, cancel the i-th coroutine Deferred.
fire = st.tuples(st.just("fire"), st.integers(0, 7), outcome, value)
cancel_driven = st.tuples(st.just("cancel"), st.integers(0, 3))

leaf_step = st.one_of(
    st.tuples(st.just("fired"), how, value),
    st.tuples(st.just("failed"), how, catch),
    st.tuples(st.just("unfired"), how, canceller, catch, st.none()),
    st.tuples(st.just("unfired"), how, canceller, catch, st.one_of(st.none(), callback_kind)),
    st.tuples(st.just("plain"), value),
    st.tuples(st.just("setvar"), value),
    # await again the i-th Deferred some step created, whatever its state
    st.tuples(st.just("again"), how, st.integers(0, 7), catch),
    fire,
    cancel_driven,
)
nested_step = st.tuples(
    st.just("nested"),
    st.sampled_from(["inline", "fromCoroutine", "hand"]),
    catch,
    st.lists(leaf_step, max_size=3),
    ending,
)
coroutine = st.tuples(
    st.lists(st.one_of(leaf_step, leaf_step, nested_step), max_size=5), ending
)
action = st.one_of(
    fire,
    fire,
    cancel_driven,
    st.tuples(st.just("cancel_awaited"), st.integers(0, 7)),
    st.tuples(st.just("pause"), st.integers(0, 7)),
    st.tuples(st.just("addCallback"), st.integers(0, 7), callback_kind),
    st.tuples(st.just("unpause"), st.integers(0, 7)),
)
programs = st.tuples(
    st.lists(coroutine, min_size=1, max_size=2), st.lists(action, max_size=10)
)


# --- running one ----------------------------------------------------------------


def _catches(kind, exc):
    if kind == "none":
        return False
    if kind == "boom":
        return isinstance(exc, Boom)
    if kind == "cancelled":
        return isinstance(exc, defer.CancelledError)
    return isinstance(exc, Exception)


class Plain:
    """A foreign awaitable yielding a plain value, which the driver sends back."""

    def __init__(self, value):
        self.value = value

    def __await__(self):
        got = yield self.value
        return ("sent back", got)


class Hand:
    """Hands an object to the driver as inlineCallbacks' ``yield`` does."""

    def __init__(self, thing):
        self.thing = thing

    def __await__(self):
        return (yield self.thing)


class Run:
    def __init__(self, implementation):
        _, self.Deferred, self.fromCoroutine = implementation
        self.events = []
        self.awaited = []  # (name, Deferred) of every Deferred a step created
        self.driven = []  # (name, Deferred) returned by fromCoroutine
        # Drivers (named after their coroutine) that have waited on an unfired
        # Deferred at least once.  Twisted's driver asserts that a cancelled
        # coroutine waits on something, which fails for a running coroutine
        # that never waited (and passes under -O): those are not cancelled.
        self.waited = set()
        # How many fire/cancel calls of the program are under way: the
        # Deferreds they fire may be running their callbacks (see "again").
        self.firing = 0
        self.paused = []  # one entry per pause() the program made

    def describe(self, value):
        if isinstance(value, Failure):
            return ("Failure", value.type.__name__, tuple(map(str, value.value.args)))
        if isinstance(value, defer.Deferred):
            for name, d in self.awaited + self.driven:
                if d is value:
                    return ("Deferred", name)
            return ("Deferred", "?")
        if isinstance(value, BaseException):
            return ("exception", type(value).__name__, tuple(map(str, value.args)))
        if isinstance(value, tuple):
            return tuple(self.describe(v) for v in value)
        return value

    def call(self, label, fn, *args):
        try:
            return fn(*args)
        except BaseException as e:  # recorded and compared
            self.events.append(("raised", label, self.describe(e)))
            return None

    def canceller(self, kind, name):
        if kind is None:
            return None

        def cancel(d):
            self.events.append(("canceller", name, var.get()))
            if kind == "fire":
                d.callback(f"fired by canceller of {name}")
            elif kind == "errback":
                d.errback(Boom(f"canceller of {name}"))
            elif kind == "raise":
                raise Boom(f"raised by canceller of {name}")

        return cancel

    def callback(self, kind, name):
        """A callback of the given kind (see callback_kind) on Deferred name."""

        def fn(result):
            self.events.append(("callback", kind, name, self.describe(result), var.get()))
            if kind == "replace":
                return f"replaced at {name}"
            if kind == "raise":
                raise Boom(f"callback of {name}")
            if kind == "chain":
                chained = self.Deferred()
                self.awaited.append((f"{name}>", chained))
                return chained
            return result

        return fn

    def observe(self, name, d):
        """Record what d's callbacks receive, passing it on unchanged."""

        def observer(result):
            self.events.append(("fired", name, self.describe(result), var.get()))
            return result

        d.addBoth(observer)

    def drive(self, name, coro):
        d = self.fromCoroutine(coro)
        self.driven.append((name, d))
        self.observe(name, d)
        return d

    def apply(self, op, who):
        """A fire or cancel, from a step (who: its label) or from the script."""
        self.firing += 1
        try:
            self._apply(op, who)
        finally:
            self.firing -= 1

    def _apply(self, op, who):
        kind = op[0]
        if kind == "fire":
            _, i, result, v = op
            # the i-th awaited Deferred that has not fired yet
            pending = [(name, d) for name, d in self.awaited if not d.called]
            if not pending:
                return
            name, d = pending[i % len(pending)]
            self.events.append((who, "fires", name, result))
            if result == "value":
                self.call(f"callback {name}", d.callback, v)
            elif result == "boom":
                self.call(f"errback {name}", d.errback, Boom(f"fired at {name}"))
            else:
                self.call(f"errback {name}", d.errback, CustomBase(f"fired at {name}"))
        elif kind == "cancel":
            candidates = [(name, d) for name, d in self.driven if name in self.waited]
            if not candidates:
                return
            name, d = candidates[op[1] % len(candidates)]
            self.events.append((who, "cancels", name))
            self.call(f"cancel {name}", d.cancel)
        else:
            if not self.awaited:
                return
            name, d = self.awaited[op[1] % len(self.awaited)]
            self.events.append((who, kind, name))
            if kind == "cancel_awaited":
                self.call(f"cancel {name}", d.cancel)
            elif kind == "addCallback":
                self.call(f"addBoth {name}", d.addBoth, self.callback(op[2], name))
            elif kind == "pause":
                d.pause()
                self.paused.append(d)
            elif any(p is d for p in self.paused):
                # only a pause of the program's own: unpausing a Deferred that
                # waits on a chained one corrupts it (in Twisted's and C's
                # own ways: not a question for the driver)
                self.paused.remove(next(p for p in self.paused if p is d))
                self.call(f"unpause {name}", d.unpause)

    async def body(self, name, steps, end, driver):
        """A coroutine running the steps; driver: the name of the driver it
        runs under (None for one the driver wrapped itself)."""
        self.events.append(("start", name, var.get()))
        var.set(name)
        for i, step in enumerate(steps):
            label = f"{name}.{i}"
            kind = step[0]
            if kind == "setvar":
                var.set(f"{name}={step[1]}")
                continue
            if kind in ("fire", "cancel"):
                self.apply(step, label)
                self.events.append(("back in", label, var.get()))
                continue
            if kind == "plain":
                got = await Plain(step[1])
                self.events.append(("got", label, self.describe(got), var.get()))
                continue
            if kind == "nested":
                _, mode, catch_kind, inner_steps, inner_end = step
                if mode == "inline":
                    awaitable = self.body(label, inner_steps, inner_end, driver)
                elif mode == "fromCoroutine":
                    coro = self.body(label, inner_steps, inner_end, label)
                    awaitable = self.drive(label, coro)
                else:
                    awaitable = Hand(self.body(label, inner_steps, inner_end, None))
            else:
                if kind == "again":
                    _, mode, index, catch_kind = step
                    if not self.awaited:
                        continue
                    other, d = self.awaited[index % len(self.awaited)]
                    if (
                        mode == "await"
                        and self.firing
                        and d.called
                        and isinstance(d.result, Failure)
                    ):
                        # d may be running its callbacks (this coroutine was
                        # resumed by one of them): Twisted's __await__ then
                        # fails an assert (its _debugInfo is not made yet).
                        continue
                    self.events.append(("again", label, other, d.called, d.paused))
                    if (not d.called or d.paused) and driver is not None:
                        self.waited.add(driver)  # it will wait on d
                elif kind == "fired":
                    _, mode, v = step
                    d = self.Deferred()
                    d.callback(v)
                    catch_kind = "none"
                elif kind == "failed":
                    _, mode, catch_kind = step
                    d = self.Deferred()
                    d.errback(Boom(label))
                else:
                    _, mode, canceller_kind, catch_kind, before = step
                    d = self.Deferred(self.canceller(canceller_kind, label))
                    if before is not None:
                        d.addBoth(self.callback(before, label))
                    if driver is not None:
                        self.waited.add(driver)
                if kind != "again":
                    self.awaited.append((label, d))
                awaitable = d if mode == "await" else Hand(d)
            try:
                got = await awaitable
            except Exception as e:
                if not _catches(catch_kind, e):
                    self.events.append(("raising", label, self.describe(e), var.get()))
                    raise
                self.events.append(("caught", label, self.describe(e), var.get()))
                continue
            self.events.append(("got", label, self.describe(got), var.get()))
        if end[0] == "return":
            self.events.append(("return", name, end[1], var.get()))
            return f"{name} returned {end[1]}"
        self.events.append(("raise", name, end[1], var.get()))
        raise {"Boom": Boom, "CustomBase": CustomBase}[end[1]](name)

    def run(self, program):
        coroutines, actions = program
        var.set("main")
        for n, (steps, end) in enumerate(coroutines):
            name = f"c{n}"
            self.call("fromCoroutine", self.drive, name, self.body(name, steps, end, name))
        for number, act in enumerate(actions):
            var.set(f"action {number}")
            self.apply(act, f"action {number}")

    def final_state(self):
        state = []
        for name, d in self.awaited:
            state.append(
                (name, d.called, self.describe(d.result) if d.called else None, d.paused)
            )
        for name, d in self.driven:
            # only whether it fired: in between Twisted's holds a private Deferred
            state.append((name, d.called))
        return state


def execute(implementation, program):
    logged = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failure = event.get("log_failure")
            logged.append(
                (
                    event.get("log_format"),
                    failure.type.__name__ if failure is not None else None,
                    tuple(map(str, failure.value.args)) if failure is not None else None,
                )
            )
            if failure is not None:
                # twisted.logger keeps the events until logging begins: drop
                # the frames, which would keep (and so never report) other
                # failed Deferreds of the program.  Which Deferred is freed
                # first differs: Twisted's coroutine Deferred is in a cycle
                # and waits for gc.collect(), the C one goes when dropped.
                failure.cleanFailure()

    # Only what this run creates is walked by the gc.collect() below: the
    # young garbage is collected and everything older set aside (frozen).
    gc.collect(1)
    gc.freeze()
    globalLogPublisher.addObserver(observe)
    try:
        run = Run(implementation)
        contextvars.copy_context().run(run.run, program)
        state = run.final_state()
        events = run.events
        del run
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    return events, state, sorted(logged, key=repr)


@pytest.fixture(scope="module", autouse=True)
def frozen_heap():
    """execute() freezes the heap before each run, so that the gc.collect()
    after it (for the "Unhandled error in Deferred" log) walks only what the
    run made: a full collection of the whole heap costs ~20 ms.  Start from a
    collected heap, and give the frozen objects back to the collector after."""
    gc.collect()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def compare(program, implementation):
    expected = execute(TWISTED, program)
    got = execute(implementation, program)
    assert got[0] == expected[0], "events differ"
    assert got[1] == expected[1], "final states differ"
    assert got[2] == expected[2], "logged errors differ"


def test_recorderSeesWhatItShould():
    """The recorder itself: a program whose coroutine fails unhandled after
    waiting logs the failure; one that is cancelled and catches it does not."""
    failing = (
        [([("unfired", "await", "record", "none", None)], ("return", 1))],
        [("fire", 0, "boom", 0)],
    )
    events, state, logged = execute(TWISTED, failing)
    assert ("raising", "c0.0", ("exception", "Boom", ("fired at c0.0",)), "c0") in events
    assert ("c0.0", True, None, 0) in state
    assert sorted(entry[1:] for entry in logged if entry[1] is not None) == [
        ("Boom", ("fired at c0.0",)),
    ]
    assert len(logged) == 2

    cancelled = (
        [([("unfired", "hand", "record", "cancelled", None)], ("return", 1))],
        [("cancel", 0)],
    )
    events, state, logged = execute(TWISTED, cancelled)
    assert events == [
        ("start", "c0", "main"),
        ("action 0", "cancels", "c0"),
        ("canceller", "c0.0", "action 0"),
        ("caught", "c0.0", ("exception", "CancelledError", ()), "c0"),
        ("return", "c0", 1, "c0"),
        ("fired", "c0", "c0 returned 1", "action 0"),
    ]
    assert logged == []


@pytest.mark.parametrize("name", ["c", "c-awaiting-twisted", "twisted-awaiting-c"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=programs)
# Programs that once showed a difference, always run:
# the awaited Deferred's canceller raises when the coroutine is cancelled
@example(
    program=(
        [([("unfired", "await", "raise", "none", None)], ("raise", "Boom"))],
        [("cancel", 0), ("fire", 0, "value", 0)],
    )
)
# c1, resumed by the CancelledError c0's cancel() gives the Deferred both
# await, cancels c0 again while that first cancel() is still under way
@example(
    program=(
        [
            ([("unfired", "await", None, "none", None)], ("return", 0)),
            ([("again", "await", 0, "none"), ("cancel", 0)], ("return", 0)),
        ],
        [("cancel", 0)],
    )
)
def test_driverMatchesTwisted(name, program):
    """The C driver (c: awaiting C Deferreds; c-awaiting-twisted: awaiting
    Twisted's) and Twisted's driver awaiting C Deferreds (twisted-awaiting-c)
    behave as Twisted's driver awaiting Twisted's Deferreds."""
    compare(program, IMPLEMENTATIONS[name])
