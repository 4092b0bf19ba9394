"""
cdeferred's own Python classes (and install()'s stand-ins) are given the
core's dealloc instead of CPython's subtype_dealloc (use_core_dealloc).  What
subtype_dealloc would have done must still happen: instance dicts and weak
references cleared, a __del__ added later run, an unhandled failure logged;
and a class that adds to the instances is refused.
"""

import gc
import sys
import weakref

import pytest

import cdeferred

pytestmark = pytest.mark.skipif(cdeferred._cimpl is None, reason="needs the C core")

if cdeferred._cimpl is not None:
    from cdeferred._cdeferred import DeferredCore, use_core_dealloc


class Witness:
    """Records its own collection."""

    def __init__(self, log):
        self.log = log

    def __del__(self):
        self.log.append("freed")


@pytest.mark.parametrize("name", ["Deferred", "ControllableDeferred"])
def test_ownClassesUseTheCoreDealloc(name):
    cls = getattr(cdeferred._cimpl, name)
    assert use_core_dealloc(cls) is True  # idempotent
    log = []
    d = cls()
    d.attribute = Witness(log)
    ref = weakref.ref(d, lambda _: log.append("weakref"))
    del d
    assert sorted(log) == ["freed", "weakref"]
    assert ref() is None


def test_deferredListDealloc():
    log = []
    members = [cdeferred._cimpl.Deferred() for _ in range(3)]
    dl = cdeferred._cimpl.DeferredList(members)
    dl.extra = Witness(log)
    del dl
    gc.collect()  # the members' links hold the list through _cbDeferred
    del members
    gc.collect()
    assert log == ["freed"]


def test_delAssignedLaterRuns():
    class Sub(cdeferred._cimpl.Deferred):
        pass

    assert use_core_dealloc(Sub) is True
    log = []
    Sub.__del__ = lambda self: log.append("del")
    d = Sub()
    del d
    assert log == ["del"]


def test_unhandledFailureStillLogged():
    from twisted.logger import globalLogPublisher

    seen = []

    def observe(event):
        if "Unhandled error in Deferred" in str(event.get("log_format", "")):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        d = cdeferred._cimpl.Deferred()
        d.errback(ValueError("lost"))
        del d
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(observe)
    assert len(seen) == 1


def test_classWithSlotsIsRefused():
    class Slotted(cdeferred._cimpl.Deferred):
        __slots__ = ("extra",)

    assert use_core_dealloc(Slotted) is False
    log = []
    d = Slotted()
    d.extra = Witness(log)
    del d
    assert log == ["freed"]


def test_classWithDelIsRefused():
    class WithDel(cdeferred._cimpl.Deferred):
        def __del__(self):
            pass

    assert use_core_dealloc(WithDel) is False


def test_notADeferredClass():
    with pytest.raises(TypeError):
        use_core_dealloc(int)
    with pytest.raises(TypeError):
        use_core_dealloc(cdeferred._cimpl.Deferred())
    assert use_core_dealloc(DeferredCore) is False  # not a heap subclass of a core


def test_typeReferenceBalanced():
    cls = cdeferred._cimpl.Deferred
    before = sys.getrefcount(cls)
    for _ in range(1000):
        cls()
    assert sys.getrefcount(cls) == before
