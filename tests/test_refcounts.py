"""
Reference counts of the objects the C core hands around stay balanced.
(tests/test_leaks.py runs the long loops in subprocesses; these are the quick
checks that pin specific bugs.)
"""

import sys

import pytest

pytestmark = pytest.mark.c_extension


def _growth(action, repeat=1000):
    """How much each watched object's refcount grew over ``repeat`` calls."""
    watched = action()  # warm up; returns the objects to watch
    before = [sys.getrefcount(obj) for obj in watched]
    for _ in range(repeat):
        action()
    after = [sys.getrefcount(obj) for obj in watched]
    return [a - b for a, b in zip(after, before)]


def test_awaitIteratorTypeNotLeaked(impl):
    """Creating and dropping the iterator of ``await d`` leaves its type's refcount as it was."""
    if not impl.is_c:
        pytest.skip("the iterator type is the C core's")
    d = impl.Deferred()
    d.callback(1)

    def action():
        it = d.__await__()
        return [type(it), d]

    assert _growth(action) == [0, 0]


def test_passthruLinkChainsToDeferredResult(impl):
    """A Deferred given as the result is waited on even when the next link is an errback only."""
    inner = impl.Deferred()
    outer = impl.Deferred()
    outer.addErrback(lambda f: f)  # its callback side is a pass-through
    seen = []
    outer.addCallback(seen.append)
    outer.callback(inner)
    assert seen == []
    inner.callback("late")
    assert seen == ["late"]


def test_callbackArgumentsAndTypesNotLeaked(impl):
    """Callbacks, their arguments and results are released once a fired chain is dropped."""
    def cb(result, extra, key=None):
        return result

    arg = object()
    kwarg = object()
    value = object()

    def action():
        d = impl.Deferred()
        d.addCallback(cb, arg, key=kwarg)
        d.addCallbacks(cb, cb, callbackArgs=(arg,), errbackArgs=(arg,), canceller=cb)
        d.addCanceller(cb, arg)
        d.callback(value)
        return [cb, arg, kwarg, value, type(d)]

    assert _growth(action) == [0, 0, 0, 0, 0]


def test_awaitIteratorsReusedSafely(impl):
    """Await iterators are recycled (a small free list): many alive at once,
    dropped and made again, each still follows its own Deferred, and the
    Deferreds and the type are released."""
    deferreds = [impl.Deferred() for _ in range(200)]
    for i, d in enumerate(deferreds[:100]):
        d.callback(i)

    def action():
        held = [d.__await__() for d in deferreds]
        del held
        again = [d.__await__() for d in deferreds]
        outcomes = []
        for it, d in zip(again, deferreds):
            try:
                outcomes.append(("yield", next(it) is d))
            except StopIteration as stop:
                outcomes.append(("return", stop.value))
        return outcomes

    outcomes = action()
    assert outcomes[:100] == [("return", i) for i in range(100)]
    assert outcomes[100:] == [("yield", True)] * 100
    watched = [type(deferreds[0].__await__())] + deferreds
    before = [sys.getrefcount(obj) for obj in watched]
    action()
    assert [sys.getrefcount(obj) for obj in watched] == before
