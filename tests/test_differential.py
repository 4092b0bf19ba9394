"""Differential testing: the same random program on every Deferred implementation.

Hypothesis generates a program -- a list of operations on a small pool of
Deferreds: add callbacks of several kinds (returning a value, raising, returning
a Failure, returning another Deferred of the pool, re-entering the Deferred or
another one), fire, errback, pause/unpause, cancel (with and without creator
cancellers), chainDeferred, firing with a Deferred, reading ``_callbacks`` (which
switches the C core to its list storage).  The program runs on Twisted's own
Deferred (the oracle) and on each cdeferred implementation, and every observable
event must be identical: callback invocations and their arguments, the value
returned or the exception raised by each API call, warnings, the state of every
Deferred after each step (called, paused, result, _chainedTo, repr), and the
failures reported as unhandled when everything is collected.

CDEFERRED_HYPOTHESIS_EXAMPLES sets the number of examples (default 1500).
"""

import gc
import inspect
import os
import re
import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import globalLogBeginner, globalLogPublisher
from twisted.python.failure import Failure

import cdeferred

MAX_EXAMPLES = int(os.environ.get("CDEFERRED_HYPOTHESIS_EXAMPLES", "1500"))
RECURSION_HEADROOM = 250


class Boom(Exception):
    """The exception programs raise."""


def _implementations():
    impls = {"twisted": defer.Deferred}
    if cdeferred._CDeferred is not None:
        impls["c"] = cdeferred._CDeferred
        # Named like the others, so reprs compare equal.
        impls["c-subclass"] = type("Deferred", (cdeferred._CDeferred,), {})
    if getattr(cdeferred, "_PyDeferred", None) is not None:
        impls["py"] = cdeferred._PyDeferred
    return impls


IMPLEMENTATIONS = _implementations()

# ------------------------------------------------------------------ programs

CANCELLERS = ["none", "record", "fire", "errback", "raise"]
KINDS = [
    "value",          # returns a fresh tagged value
    "passthru",       # returns its argument
    "raise",          # raises Boom(tag)
    "failure",        # returns Failure(Boom(tag))
    "recover",        # returns a tagged value (meant as an errback)
    "return_d",       # returns a Deferred of the pool
    "add_reentrant",  # adds a callback to its own Deferred, returns its argument
    "fire_other",     # callback()s a Deferred of the pool
    "errback_other",  # errback()s a Deferred of the pool
    "cancel_other",   # cancel()s a Deferred of the pool (maybe its own)
    "pause_self",     # pauses its own Deferred
    "unpause_other",  # unpauses a Deferred of the pool
]
ADD_METHODS = ["addCallback", "addErrback", "addBoth", "addCallbacks"]

index = st.integers(min_value=0, max_value=7)
callback_spec = st.tuples(st.sampled_from(KINDS), index)

operation = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(CANCELLERS)),
    st.tuples(st.just("add"), index, st.sampled_from(ADD_METHODS), callback_spec, callback_spec),
    st.tuples(st.just("add"), index, st.sampled_from(ADD_METHODS), callback_spec, callback_spec),
    st.tuples(st.just("callback"), index),
    st.tuples(st.just("callback_deferred"), index, index),
    st.tuples(st.just("errback"), index),
    st.tuples(st.just("pause"), index),
    st.tuples(st.just("unpause"), index),
    st.tuples(st.just("cancel"), index),
    st.tuples(st.just("chainDeferred"), index, index),
    st.tuples(st.just("read_callbacks"), index),
)

programs = st.tuples(
    st.lists(st.sampled_from(CANCELLERS), min_size=1, max_size=3),
    st.lists(operation, max_size=30),
)


# ------------------------------------------------------------- the interpreter


class Run:
    """One program on one implementation, recording every observable event."""

    def __init__(self, cls):
        self.cls = cls
        self.pool = []
        self.events = []

    # -- normalising what we observe, so runs compare across implementations

    def index_of(self, d):
        for i, candidate in enumerate(self.pool):
            if candidate is d:
                return i
        return None

    def norm(self, value):
        if isinstance(value, defer.Deferred):
            i = self.index_of(value)
            return ("D", i) if i is not None else ("D?", type(value).__name__)
        if isinstance(value, Failure):
            if value.check(RecursionError):
                return ("F", "RecursionError")
            return ("F", value.type.__name__, self.norm(value.value.args))
        if isinstance(value, RecursionError):  # the message names the guard that tripped
            return ("E", "RecursionError")
        if isinstance(value, BaseException):
            return ("E", type(value).__name__, self.norm(value.args))
        if isinstance(value, (tuple, list)):
            return tuple(self.norm(v) for v in value)
        if value is None or isinstance(value, (str, int, bool)):
            return value
        return ("?", type(value).__name__)

    def norm_repr(self, d):
        try:
            text = repr(d)
        except RecursionError:  # a Deferred whose result is itself
            return "<repr: RecursionError>"
        for i, other in enumerate(self.pool):
            text = text.replace(f"0x{id(other):x}", f"D{i}")
        text = re.sub(r"maximum recursion depth exceeded[^>]*", "maximum recursion depth exceeded", text)
        return re.sub(r"0x[0-9a-f]+", "0x?", text)

    def snapshot(self):
        state = []
        for i, d in enumerate(self.pool):
            state.append((
                i,
                bool(d.called),
                d.paused,
                self.norm(d.result) if hasattr(d, "result") else "<no result>",
                self.norm(d._chainedTo),
                bool(d._suppressAlreadyCalled),
                bool(d._runningCallbacks),
                self.norm_repr(d),
            ))
        return tuple(state)

    # -- building blocks

    def pick(self, i):
        return self.pool[i % len(self.pool)]

    def new(self, canceller_kind):
        number = len(self.pool)
        events = self.events

        def record(d):
            events.append(("canceller", number, self.norm(d)))

        def fire(d):
            record(d)
            d.callback(f"cancelled-result-{number}")

        def errback(d):
            record(d)
            d.errback(Boom(f"canceller-errback-{number}"))

        def raising(d):
            record(d)
            raise Boom(f"canceller-raised-{number}")

        canceller = {
            "none": None, "record": record, "fire": fire, "errback": errback, "raise": raising,
        }[canceller_kind]
        d = self.cls(canceller)
        self.pool.append(d)
        return d

    def make_callback(self, owner, spec, tag):
        kind, j = spec
        target = self.pick(j)
        events = self.events
        norm = self.norm

        def fn(result, *args, **kwargs):
            events.append(("call", tag, kind, norm(result), norm(args), norm(kwargs)))
            if kind == "value":
                return f"value-{tag}"
            if kind == "passthru":
                return result
            if kind == "raise":
                raise Boom(f"raised-{tag}")
            if kind == "failure":
                return Failure(Boom(f"failure-{tag}"))
            if kind == "recover":
                return f"recovered-{tag}"
            if kind == "return_d":
                return target
            if kind == "add_reentrant":
                owner.addCallback(self.make_callback(owner, ("value", 0), f"{tag}.reentrant"))
                return result
            if kind == "fire_other":
                target.callback(f"fired-by-{tag}")
                return result
            if kind == "errback_other":
                target.errback(Boom(f"errbacked-by-{tag}"))
                return result
            if kind == "cancel_other":
                target.cancel()
                return result
            if kind == "pause_self":
                owner.pause()
                return result
            if kind == "unpause_other":
                target.unpause()
                return result
            raise AssertionError(kind)

        return fn

    def apply(self, step, op):
        name = op[0]
        if name == "new":
            return self.new(op[1])
        d = self.pick(op[1])
        if name == "add":
            _, _, method, first, second = op
            cb = self.make_callback(d, first, f"{step}a")
            if method == "addCallbacks":
                eb = self.make_callback(d, second, f"{step}b")
                return d.addCallbacks(
                    cb, eb, callbackArgs=(step,), errbackKeywords={"step": step}
                )
            return getattr(d, method)(cb, step, key=step)
        if name == "callback":
            return d.callback(f"result-{step}")
        if name == "callback_deferred":
            return d.callback(self.pick(op[2]))
        if name == "errback":
            return d.errback(Boom(f"errback-{step}"))
        if name == "pause":
            return d.pause()
        if name == "unpause":
            return d.unpause()
        if name == "cancel":
            return d.cancel()
        if name == "chainDeferred":
            return d.chainDeferred(self.pick(op[2]))
        if name == "read_callbacks":
            return len(d._callbacks)
        raise AssertionError(name)

    def run(self, program):
        initial, operations = program
        # Programs like "d.callback(d); d.cancel()" recurse until RecursionError,
        # on Twisted as elsewhere; a lower limit keeps them cheap.
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(len(inspect.stack(0)) + RECURSION_HEADROOM)
        try:
            for kind in initial:
                self.new(kind)
            self.events.append(("start", self.snapshot()))
            for step, op in enumerate(operations):
                self.run_step(step, op)
        finally:
            sys.setrecursionlimit(limit)
        self.events.append(("unhandled at collection", self.collect()))
        return self.events

    def run_step(self, step, op):
        """Apply one operation and record what it returned or raised, the warnings
        and the state.  In its own frame, so nothing it returned (a Deferred, say)
        is still referenced when the pool is collected."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome = ("returned", self.norm(self.apply(step, op)))
            except Exception as e:
                outcome = ("raised", self.norm(e))
        self.events.append((step, op) + outcome)
        for w in caught:
            self.events.append((step, "warning", w.category.__name__, str(w.message)))
        self.events.append((step, "state", self.snapshot()))

    def collect(self):
        """Drop every Deferred and return the failures reported as unhandled.

        Only failures that are results of this run's Deferreds count: a Deferred
        of an earlier run kept alive by a traceback (hypothesis keeps those of
        failing examples) may be collected during this one.
        """
        # By id, not by reference: a Failure's traceback may keep its Deferred
        # alive, and weak references are cleared before the finalizers that log
        # run.  Every Failure alive now has a distinct id, and any other Failure
        # logged during this collection is alive now too.
        candidates = {
            id(d.result) for d in self.pool if isinstance(getattr(d, "result", None), Failure)
        }
        logged = []

        def observer(event):
            failure = event.get("log_failure")
            if failure is not None and id(failure) in candidates:
                logged.append(self.norm(failure))

        gc.collect()
        # Until logging begins, Twisted keeps recent events in a buffer.  A Failure
        # kept there keeps its traceback's frames, and through them other
        # Deferreds, alive, so which of them get collected (and report) would
        # depend on the order in which they die.  Detach it meanwhile.
        buffer = getattr(globalLogBeginner, "_temporaryObserver", None)
        if buffer is not None:
            globalLogPublisher.removeObserver(buffer)
        globalLogPublisher.addObserver(observer)
        try:
            self.pool.clear()
            gc.collect()
        finally:
            globalLogPublisher.removeObserver(observer)
            if buffer is not None:
                globalLogPublisher.addObserver(buffer)
        # What is still alive (hypothesis' own records, growing with every
        # example) joins the frozen heap, so later collections stay cheap.
        gc.freeze()
        return sorted(logged, key=repr)


def first_difference(expected, actual):
    """A short description of where two event lists part ways."""
    for i, (e, a) in enumerate(zip(expected, actual)):
        if e != a:
            return f"event {i}:\n  twisted: {e!r}\n  other:   {a!r}"
    return f"lengths differ: {len(expected)} vs {len(actual)}"


def check_program(program):
    """Run the program everywhere and compare with Twisted's events."""
    expected = Run(IMPLEMENTATIONS["twisted"]).run(program)
    for name, cls in IMPLEMENTATIONS.items():
        if name == "twisted":
            continue
        actual = Run(cls).run(program)
        assert actual == expected, f"{name} differs from Twisted at {first_difference(expected, actual)}"


# ------------------------------------------------------------------- the tests


@pytest.fixture(autouse=True)
def frozen_heap():
    """Move everything alive before the test out of the collector's sight.

    Each run ends with full collections; without this each one walks the whole
    heap (pytest, Twisted, hypothesis), which would dominate the run time.
    Objects created during the test are collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs)
def test_same_events_as_twisted(program):
    """Any program of supported operations produces exactly Twisted's events on every implementation."""
    check_program(program)


# A few hand-written programs, always run, as regression anchors for the generator.
EXAMPLES = {
    "chain-then-fire-inner": (
        ["none", "record"],
        [("add", 0, "addCallback", ("return_d", 1), ("value", 0)),
         ("add", 0, "addBoth", ("passthru", 0), ("value", 0)),
         ("callback", 0), ("cancel", 0), ("callback", 1)],
    ),
    "reentrant-fire-and-cancel": (
        ["fire", "none", "raise"],
        [("add", 0, "addCallback", ("fire_other", 1), ("value", 0)),
         ("add", 1, "addCallback", ("cancel_other", 2), ("value", 0)),
         ("add", 1, "addErrback", ("recover", 0), ("value", 0)),
         ("callback", 0), ("cancel", 2), ("cancel", 2)],
    ),
    "pause-in-callback": (
        ["none"],
        [("add", 0, "addCallback", ("pause_self", 0), ("value", 0)),
         ("add", 0, "addCallback", ("add_reentrant", 0), ("value", 0)),
         ("callback", 0), ("read_callbacks", 0), ("unpause", 0)],
    ),
    "callback-with-deferred-and-chain": (
        ["none", "none"],
        [("callback_deferred", 0, 1), ("chainDeferred", 1, 0), ("cancel", 0),
         ("add", 0, "addCallbacks", ("raise", 0), ("failure", 0)), ("errback", 1)],
    ),
    "failures-outliving-their-deferreds": (
        ["none", "none"],
        [("add", 0, "addCallback", ("raise", 0), ("value", 0)), ("chainDeferred", 0, 1),
         ("callback", 0), ("add", 0, "addCallback", ("raise", 0), ("value", 0))],
    ),
    "self-return-warning": (
        ["none"],
        [("add", 0, "addCallback", ("return_d", 0), ("value", 0)), ("callback", 0), ("cancel", 0)],
    ),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_hand_written_programs(name):
    """Hand-picked programs covering chaining, re-entrancy and cancellation match Twisted."""
    check_program(EXAMPLES[name])


def test_interpreter_sees_differences():
    """The comparison is not vacuous: a Deferred subclass that behaves differently is caught."""

    class Different(defer.Deferred):
        def pause(self):
            pass

    program = (["none"], [("pause", 0), ("add", 0, "addCallback", ("value", 0), ("value", 0)),
                          ("callback", 0)])
    expected = Run(defer.Deferred).run(program)
    assert Run(Different).run(program) != expected



def test_passthru_link_with_deferred_result():
    """A link without a callback passes on a current result that is an unfired Deferred
    by waiting on it, as Twisted's passthru does."""
    check_program((
        ["none", "none"],
        [("callback_deferred", 0, 1),
         ("add", 0, "addErrback", ("recover", 0), ("value", 0)),
         ("add", 0, "addCallback", ("value", 0), ("value", 0)),
         ("callback", 1)],
    ))
