"""
Differential test of what Twisted lacks: the canceller chain, cancel(msg),
ControllableDeferred and shield.  Hypothesis generates a program of random
operations; the program runs once on the C implementation and once on the
pure-Python reference, and every observable event must be the same: which
callbacks and cancellers ran with what, what the API calls raised, what was
logged, and each Deferred's final state.

CDEFERRED_HYPOTHESIS_EXAMPLES sets the number of programs (default 150).
"""

import gc
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

import cdeferred
from cdeferred import _pydeferred

pytestmark = pytest.mark.skipif(cdeferred._cimpl is None, reason="needs the C core")

EXAMPLES = int(os.environ.get("CDEFERRED_HYPOTHESIS_EXAMPLES", "150"))
MAX_DEFERREDS = 5

idx = st.integers(0, MAX_DEFERREDS - 1)
msg = st.sampled_from([None, "stop", "timeout"])
canceller_kind = st.sampled_from(["record", "raise", "fire", "errback", "cancel_self", "cancel_other"])
callback_kind = st.sampled_from(["value", "raise", "return_other", "record"])

operation = st.one_of(
    st.tuples(st.just("new"), st.booleans(), st.one_of(st.none(), idx), st.booleans()),
    st.tuples(st.just("addCallback"), idx, callback_kind, idx),
    st.tuples(st.just("addErrback"), idx),
    st.tuples(st.just("addCanceller"), idx, canceller_kind, idx),
    st.tuples(st.just("addCallbacks"), idx, callback_kind, canceller_kind, idx),
    st.tuples(st.just("callback"), idx, st.integers(0, 9)),
    st.tuples(st.just("errback"), idx),
    st.tuples(st.just("cancel"), idx, msg),
    st.tuples(st.just("deactivate"), idx),
    st.tuples(st.just("pause"), idx),
    st.tuples(st.just("unpause"), idx),
    st.tuples(st.just("shield"), idx),
)
programs = st.lists(operation, min_size=1, max_size=25)


class Run:
    """One execution of a program on one implementation, recording events."""

    def __init__(self, module):
        self.module = module
        self.deferreds = []
        self.events = []

    def name(self, d):
        try:
            return f"D{self.deferreds.index(d)}"
        except ValueError:
            return "D?"

    def describe(self, value):
        if isinstance(value, Failure):
            return ("Failure", value.type.__name__, tuple(map(str, value.value.args)))
        if isinstance(value, (int, str, type(None))):
            return value
        if value in self.deferreds:
            return self.name(value)
        return re.sub(r"0x[0-9a-f]+", "0x?", repr(value))

    def get(self, i):
        return self.deferreds[i] if i < len(self.deferreds) else None

    def callback_fn(self, kind, owner, other):
        def fn(result):
            self.events.append(("callback", kind, owner, self.describe(result)))
            if kind == "raise":
                raise ValueError(f"from {owner}")
            if kind == "return_other" and other is not None:
                return other
            return f"{owner}:{self.describe(result)}"

        return fn

    def canceller_fn(self, kind, owner, other):
        def fn(d, *args):
            self.events.append(("canceller", kind, owner, self.name(d), args))
            if kind == "raise":
                raise KeyError(f"canceller of {owner}")
            if kind == "fire":
                d.callback(f"fired by canceller of {owner}")
            elif kind == "errback":
                d.errback(RuntimeError(f"canceller of {owner}"))
            elif kind == "cancel_self":
                d.cancel("again")
            elif kind == "cancel_other" and other is not None:
                other.cancel()

        return fn

    def call(self, label, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:  # recorded, compared across implementations
            self.events.append(("raised", label, type(e).__name__))
            return None
        return result

    def apply(self, op):
        kind = op[0]
        if kind == "new":
            _, controllable, upstream_index, with_canceller = op
            if len(self.deferreds) >= MAX_DEFERREDS:
                return
            n = len(self.deferreds)
            canceller = self.canceller_fn("record", f"creator{n}", None) if with_canceller else None
            if controllable:
                upstream = self.get(upstream_index) if upstream_index is not None else None
                d = self.call("new", self.module.ControllableDeferred, upstream, canceller)
            else:
                d = self.module.Deferred(canceller)
            if d is not None:
                self.deferreds.append(d)
            return
        d = self.get(op[1])
        if d is None:
            return
        owner = self.name(d)
        if kind == "addCallback":
            self.call(kind, d.addCallback, self.callback_fn(op[2], owner, self.get(op[3])))
        elif kind == "addErrback":
            self.call(kind, d.addErrback, lambda f: self.events.append(("errback", owner, self.describe(f))))
        elif kind == "addCanceller":
            self.call(kind, d.addCanceller, self.canceller_fn(op[2], owner, self.get(op[3])), op[1])
        elif kind == "addCallbacks":
            self.call(
                kind, d.addCallbacks, self.callback_fn(op[2], owner, self.get(op[4])),
                lambda f: f, canceller=self.canceller_fn(op[3], owner, self.get(op[4])),
            )
        elif kind == "callback":
            self.call(kind, d.callback, op[2])
        elif kind == "errback":
            self.call(kind, d.errback, ZeroDivisionError(owner))
        elif kind == "cancel":
            self.call(kind, d.cancel, op[2])
        elif kind == "deactivate":
            if hasattr(d, "deactivate"):
                self.call(kind, d.deactivate)
        elif kind == "pause":
            d.pause()
        elif kind == "unpause":
            self.call(kind, d.unpause)
        elif kind == "shield" and len(self.deferreds) < MAX_DEFERREDS:
            shielded = self.call(kind, self.module.shield, d)
            if shielded is not None:
                self.deferreds.append(shielded)

    def final_state(self):
        return [
            (
                self.name(d),
                d.called,
                d.paused,
                self.describe(getattr(d, "result", "<no result>")),
                getattr(d, "active", None),
            )
            for d in self.deferreds
        ]


def execute(module, program):
    logged = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failure = event.get("log_failure")
            logged.append(
                (event.get("log_format"), failure.type.__name__ if failure is not None else None)
            )

    # Garbage left by earlier programs (or held by Hypothesis while it
    # shrinks) would log its unhandled errors inside this window: flush it.
    gc.collect()
    globalLogPublisher.addObserver(observe)
    try:
        run = Run(module)
        for op in program:
            run.apply(op)
        state = run.final_state()
        del run.deferreds[:]
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    return run.events, state, sorted(logged, key=repr)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs)
def test_cImplementationMatchesPythonReference(program):
    """The C core and the Python reference produce the same events, states and logs."""
    c_result = execute(cdeferred._cimpl, program)
    py_result = execute(_pydeferred, program)
    assert c_result[0] == py_result[0], "events differ"
    assert c_result[1] == py_result[1], "final states differ"
    assert c_result[2] == py_result[2], "logged errors differ"
