"""
install() / uninstall(): Twisted creates cdeferred Deferreds, old ones keep
working, and everything is given back.

These tests install in this process and always uninstall afterwards (the
``installed`` fixture); each runs for every implementation (``impl``: the C
core, a Python subclass of it, and the pure-Python reference).  Twisted's own
suites under install() and a real web program are in test_twisted_suites.py.
"""

import gc
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
from conftest import NO_EXTENSIONS
from twisted.internet import base, defer, task
from twisted.python.failure import Failure

import cdeferred
from cdeferred import _install

# Subprocesses import the cdeferred this process imported (the installed
# package, or the checkout when it is on the path).
PACKAGE_PARENT = str(Path(_install.__file__).resolve().parent.parent)
TwistedDeferred = _install._TwistedDeferred
TwistedDeferredList = _install._TwistedDeferredList


@pytest.fixture
def installed(impl):
    """install() with the implementation's Deferred; uninstall() afterwards."""
    assert _install.installed() is None, "a previous test left install() in effect"
    _install.install(deferred_class=impl.Deferred)
    try:
        yield impl
    finally:
        _install.uninstall()
    assert defer.Deferred is TwistedDeferred


def results(d):
    """The current result of C{d} (a callback that records it)."""
    box = []
    d.addBoth(box.append)
    assert box, f"{d!r} has not fired"
    return box[0]


def test_deferredIsReplaced(installed):
    """
    After install(), C{defer.Deferred} and C{defer.DeferredList} make
    instances of the installed class, which are still Twisted Deferreds.
    """
    assert _install.installed() is installed.Deferred
    assert issubclass(defer.Deferred, installed.Deferred)
    assert issubclass(defer.DeferredList, defer.Deferred)
    d = defer.Deferred()
    assert isinstance(d, installed.Deferred)
    assert isinstance(d, TwistedDeferred)
    assert repr(d).startswith("<Deferred at 0x")
    dl = defer.DeferredList([])
    assert isinstance(dl, installed.Deferred)
    assert results(dl) == []


def test_registryOrder(installed):
    """
    C{_DEFERRED_SUBCLASSES} stays the same list object, begins with the new
    C{Deferred} and C{DeferredList} (test_defer asserts the start), keeps
    every class it held before, and holds nothing twice.
    """
    registry = defer._DEFERRED_SUBCLASSES
    assert registry[:2] == [defer.Deferred, defer.DeferredList]
    assert TwistedDeferred in registry
    assert TwistedDeferredList in registry
    assert installed.Deferred in registry
    assert len(set(map(id, registry))) == len(registry)


def test_helpersCreateInstalledDeferreds(installed):
    """
    Every helper of twisted.internet.defer built on Deferred, and a module
    that bound the name at import (twisted.internet.task), creates the
    installed Deferreds, with Twisted's results.
    """
    D = installed.Deferred
    made = {}

    made["succeed"] = defer.succeed(1)
    made["fail"] = defer.fail(ValueError("x"))
    made["execute"] = defer.execute(lambda: 2)
    made["maybeDeferred"] = defer.maybeDeferred(lambda: 3)
    made["maybeDeferred raising"] = defer.maybeDeferred(lambda: 1 / 0)
    made["gatherResults"] = defer.gatherResults([defer.succeed(4), defer.succeed(5)])
    made["DeferredList"] = defer.DeferredList([defer.succeed(6)])
    made["race"] = defer.race([defer.Deferred(), defer.succeed(7)])

    @defer.inlineCallbacks
    def inline():
        value = yield defer.succeed(8)
        return value

    async def coroutine():
        return await defer.succeed(9)

    made["inlineCallbacks"] = inline()
    made["ensureDeferred"] = defer.ensureDeferred(coroutine())
    made["fromCoroutine"] = defer.Deferred.fromCoroutine(coroutine())
    made["DeferredLock"] = defer.DeferredLock().acquire()
    made["DeferredSemaphore"] = defer.DeferredSemaphore(1).acquire()
    queue = defer.DeferredQueue()
    made["DeferredQueue"] = queue.get()
    queue.put(10)
    clock = task.Clock()
    made["deferLater"] = task.deferLater(clock, 1, lambda: 11)
    clock.advance(1)

    for name, d in made.items():
        assert isinstance(d, D), name
        assert type(d) in defer._DEFERRED_SUBCLASSES, name

    values = {name: results(d) for name, d in made.items()}
    assert values["succeed"] == 1
    assert values["fail"].check(ValueError)
    assert values["execute"] == 2
    assert values["maybeDeferred"] == 3
    assert values["maybeDeferred raising"].check(ZeroDivisionError)
    assert values["gatherResults"] == [4, 5]
    assert values["DeferredList"] == [(True, 6)]
    assert values["race"] == (1, 7)
    assert values["inlineCallbacks"] == 8
    assert values["ensureDeferred"] == 9
    assert values["fromCoroutine"] == 9
    assert values["DeferredQueue"] == 10
    assert values["deferLater"] == 11


def test_isinstanceForDeferredsMadeBefore(impl):
    """
    Deferreds (and a Twisted subclass) made before install() still pass
    C{isinstance}/C{issubclass} against the new names; non-Deferreds do not;
    a subclass of the new Deferred made afterwards is an ordinary subclass.
    """

    class Before(defer.Deferred):
        pass

    old = defer.Deferred()
    oldList = defer.DeferredList([])
    before = Before()
    _install.install(deferred_class=impl.Deferred)
    try:
        assert isinstance(old, defer.Deferred)
        assert isinstance(before, defer.Deferred)
        assert isinstance(oldList, defer.Deferred)
        assert isinstance(oldList, defer.DeferredList)
        assert not isinstance(old, defer.DeferredList)
        assert issubclass(TwistedDeferred, defer.Deferred)
        assert issubclass(Before, defer.Deferred)
        assert issubclass(TwistedDeferredList, defer.DeferredList)
        assert issubclass(impl.Deferred, defer.Deferred)
        assert isinstance(impl.Deferred(), defer.Deferred)
        # ... without lending that answer to cdeferred's classes: Twisted's
        # Deferreds are not cdeferred's (cdeferred's code relies on it).
        for _ in range(2):  # the second time from the ABC caches
            assert not isinstance(old, impl.Deferred)
            assert not isinstance(before, impl.Deferred)
            assert not isinstance(oldList, impl.Deferred)
            assert not issubclass(TwistedDeferred, impl.Deferred)
            assert not isinstance(old, impl.ControllableDeferred)
        for other in (None, 1, "Deferred", object(), Failure(ValueError())):
            assert not isinstance(other, defer.Deferred)
            assert not isinstance(other, defer.DeferredList)
        assert not issubclass(int, defer.Deferred)

        class After(defer.Deferred):
            pass

        class AfterList(defer.DeferredList):
            pass

        assert After in defer._DEFERRED_SUBCLASSES
        assert isinstance(After(), defer.Deferred)
        assert isinstance(After(), impl.Deferred)
        assert not isinstance(old, After)
        assert not issubclass(TwistedDeferred, After)
        assert isinstance(AfterList([]), defer.DeferredList)
        assert not isinstance(oldList, AfterList)
    finally:
        _install.uninstall()
        defer._DEFERRED_SUBCLASSES[:] = [
            c
            for c in defer._DEFERRED_SUBCLASSES
            if c.__name__ not in ("Before", "After", "AfterList")
        ]
    # Twisted's own answers are unchanged afterwards.
    assert not isinstance(old, impl.Deferred)
    assert isinstance(impl.Deferred(), defer.Deferred)


def test_oldAndNewDeferredsChain(impl):
    """
    Deferreds made before install() and after it chain into each other both
    ways, and are awaited by inlineCallbacks, coroutines and DeferredList.
    """
    old1, old2, old3 = TwistedDeferred(), TwistedDeferred(), TwistedDeferred()
    _install.install(deferred_class=impl.Deferred)
    try:
        new = defer.Deferred()
        new.addCallback(lambda _: old1)  # a new one waits on an old one
        newInner = defer.Deferred()
        old2.addCallback(lambda _: newInner)  # an old one waits on a new one

        @defer.inlineCallbacks
        def inline():
            value = yield old3
            return value + 1

        async def coroutine(d):
            return await d

        viaInline = inline()
        viaCoroutine = defer.ensureDeferred(coroutine(newInner))
        dl = defer.DeferredList([old3, new])

        new.callback(None)
        assert new._chainedTo is old1
        old2.callback(None)
        assert old2._chainedTo is newInner
        old3.callback(41)
    finally:
        _install.uninstall()
    old1.callback("old1")
    newInner.callback("inner")
    assert results(viaInline) == 42
    assert results(new) == "old1"
    assert results(viaCoroutine) == "inner"
    # The coroutine's await consumed newInner's result before old2 got it.
    assert results(old2) is None
    assert results(dl) == [(True, None), (True, "old1")]


def test_installTwiceIsNoop(installed):
    """
    A second install() of the same class changes nothing; installing another
    class while one is installed is refused.
    """
    registry = list(defer._DEFERRED_SUBCLASSES)
    deferred, deferredList = defer.Deferred, defer.DeferredList
    _install.install(deferred_class=installed.Deferred)
    assert defer.Deferred is deferred
    assert defer.DeferredList is deferredList
    assert defer._DEFERRED_SUBCLASSES == registry

    class Other(TwistedDeferred):
        pass

    try:
        with pytest.raises(ValueError):
            _install.install(deferred_class=Other)
        assert defer.Deferred is deferred
    finally:
        defer._DEFERRED_SUBCLASSES.remove(Other)


def test_installDefaultsToCdeferred():
    """
    Without an argument, install() puts in place C{cdeferred.Deferred} (the
    C core when built, else the reference), and a second plain call is a
    no-op.
    """
    import cdeferred

    _install.install()
    try:
        assert _install.installed() is cdeferred.Deferred
        deferred = defer.Deferred
        _install.install()
        assert defer.Deferred is deferred
        assert isinstance(defer.succeed(None), cdeferred.Deferred)
    finally:
        _install.uninstall()


def test_uninstallRestores(impl):
    """
    uninstall() gives back Twisted's classes everywhere install() put its own
    (defer, and modules that bound the names), puts them first again in
    C{_DEFERRED_SUBCLASSES}, and Deferreds made while installed keep working
    with Twisted's.  A second uninstall() is a no-op.
    """
    registry = defer._DEFERRED_SUBCLASSES
    before = list(registry)
    _install.install(deferred_class=impl.Deferred)
    pending = defer.Deferred()
    standIn = defer.Deferred
    assert base.Deferred is standIn
    assert task.Deferred is standIn
    _install.uninstall()
    _install.uninstall()

    assert _install.installed() is None
    assert defer.Deferred is TwistedDeferred
    assert defer.DeferredList is TwistedDeferredList
    assert base.Deferred is TwistedDeferred
    assert base.DeferredList is TwistedDeferredList
    assert task.Deferred is TwistedDeferred
    assert defer._DEFERRED_SUBCLASSES is registry
    assert registry[:2] == [TwistedDeferred, TwistedDeferredList]
    # The classes made by install() stay registered (their instances live
    # on), after everything that was there before.
    assert [c for c in registry if c in before] == before
    assert standIn in registry

    assert type(defer.succeed(None)) is TwistedDeferred
    assert isinstance(pending, defer.Deferred)
    chained = defer.succeed(None).addCallback(lambda _: pending)
    pending.callback("later")
    assert results(chained) == "later"


def test_reinstallReusesClasses(impl):
    """
    install() after uninstall() puts back the same classes: the registry
    does not grow with each cycle.
    """
    _install.install(deferred_class=impl.Deferred)
    first = defer.Deferred, defer.DeferredList
    _install.uninstall()
    size = len(defer._DEFERRED_SUBCLASSES)
    _install.install(deferred_class=impl.Deferred)
    try:
        assert (defer.Deferred, defer.DeferredList) == first
        assert len(defer._DEFERRED_SUBCLASSES) == size
        assert defer._DEFERRED_SUBCLASSES[:2] == list(first)
    finally:
        _install.uninstall()


def test_rebindsOnlyTwistedModules(installed):
    """
    Imported twisted.* modules that bound Deferred/DeferredList by name are
    rebound; modules outside Twisted keep what they bound (install() must be
    called before them, as a reactor is installed).
    """
    _install.uninstall()
    outsider = types.ModuleType("cdeferred_test_outsider")
    outsider.Deferred = TwistedDeferred
    sys.modules[outsider.__name__] = outsider
    try:
        _install.install(deferred_class=installed.Deferred)
        assert base.Deferred is defer.Deferred
        assert base.DeferredList is defer.DeferredList
        assert outsider.Deferred is TwistedDeferred
    finally:
        del sys.modules[outsider.__name__]


def test_setDebuggingActsOnEveryDeferred(installed):
    """
    setDebugging() under install() acts as without it: every Deferred,
    Twisted's own included, sees the flag, and getDebugging() reads it;
    after uninstall() the flag is where Twisted keeps it.
    """
    old = TwistedDeferred()
    try:
        defer.setDebugging(True)
        assert defer.getDebugging() is True
        assert TwistedDeferred.debug is True
        assert old.debug is True
        assert defer.Deferred().debug is True
        assert installed.Deferred().debug is True
        assert "debug" not in vars(defer.Deferred)
        _install.uninstall()
        assert defer.getDebugging() is True
        _install.install(deferred_class=installed.Deferred)
    finally:
        defer.setDebugging(False)
    assert TwistedDeferred.debug is False
    assert defer.Deferred().debug is False


def test_registerActsOnTwistedClass(installed):
    """
    C{defer.Deferred.register(cls)} under install() registers C{cls} with
    Twisted's Deferred, as it would without install().
    """

    class Virtual:
        pass

    defer.Deferred.register(Virtual)
    assert isinstance(Virtual(), defer.Deferred)
    assert issubclass(Virtual, TwistedDeferred)


def test_installedDeferredList(installed):
    """
    The installed DeferredList runs the C DeferredList on the C core and
    Twisted's own DeferredList code on the reference, with the same
    behaviour: its flags, FirstError, consumeErrors and cancellation of the
    list's members.
    """
    if installed.is_c:
        from cdeferred._cdeferred import DeferredListCore

        assert issubclass(defer.DeferredList, DeferredListCore)
        for name in ("__init__", "_cbDeferred", "cancel"):
            assert getattr(defer.DeferredList, name) is getattr(DeferredListCore, name)
    else:
        assert defer.DeferredList.__init__ is TwistedDeferredList.__init__
        assert defer.DeferredList._cbDeferred is TwistedDeferredList._cbDeferred
        assert defer.DeferredList.cancel is TwistedDeferredList.cancel
    assert issubclass(defer.DeferredList, installed.Deferred)

    first = defer.DeferredList(
        [defer.Deferred(), defer.succeed("one")], fireOnOneCallback=True
    )
    assert results(first) == ("one", 1)

    failing = defer.Deferred()
    errs = defer.DeferredList([failing], fireOnOneErrback=True, consumeErrors=True)
    failing.errback(ValueError("bad"))
    error = results(errs)
    assert error.check(defer.FirstError)
    assert error.value.subFailure.check(ValueError)
    assert results(failing) is None  # consumed

    members = [defer.Deferred(), defer.Deferred()]
    cancelled = defer.DeferredList(members, consumeErrors=True)
    cancelled.cancel()
    assert [ok for ok, _ in results(cancelled)] == [False, False]


def test_refusesClassesTwistedWouldNotRecognise():
    """
    install() refuses what is not a Twisted Deferred subclass, and a
    subclass missing from C{_DEFERRED_SUBCLASSES} (Twisted's chaining would
    treat its instances as plain values).
    """
    with pytest.raises(TypeError):
        _install.install(deferred_class=object)
    with pytest.raises(TypeError):
        _install.install(deferred_class=defer.succeed(None))

    class Unregistered(TwistedDeferred):
        pass

    defer._DEFERRED_SUBCLASSES.remove(Unregistered)
    with pytest.raises(TypeError):
        _install.install(deferred_class=Unregistered)
    assert _install.installed() is None
    assert defer.Deferred is TwistedDeferred


def test_plainPythonSubclassCanBeInstalled():
    """
    Any registered subclass of Twisted's Deferred can be installed, e.g. a
    plain Python one (how install() was tried before the C core existed).
    """

    class Stand(TwistedDeferred):
        pass

    _install.install(deferred_class=Stand)
    try:
        assert type(defer.succeed(1)).__mro__[1] is Stand
        assert results(defer.gatherResults([defer.succeed(1)])) == [1]
    finally:
        _install.uninstall()
        defer._DEFERRED_SUBCLASSES[:] = [
            c for c in defer._DEFERRED_SUBCLASSES if Stand not in c.__mro__
        ]


def test_unhandledErrorStillLogged(installed, captured_log):
    """
    A Deferred made by Twisted's helpers under install() and collected with
    a failure still logs "Unhandled error in Deferred:".
    """
    d = defer.fail(ValueError("lost"))
    del d
    gc.collect()
    messages = [e.get("log_format") for e in captured_log]
    assert "Unhandled error in Deferred:" in messages


@pytest.mark.parametrize("extensions", ["0", "1"])
def test_installFirstInFreshProcess(extensions):
    """
    In a fresh process, install() called first: Twisted modules imported
    afterwards (reactor, task, web client) bind the installed classes.
    """
    if extensions == "0" and NO_EXTENSIONS:
        pytest.skip("CDEFERRED_NO_EXTENSIONS=1: the C core is not under test")
    code = "\n".join(
        [
            "import cdeferred._install as i",
            "i.install()",
            "from twisted.internet import defer, task, base, reactor",
            "from twisted.web import _newclient, client",
            "D = defer.Deferred",
            "assert D.__module__ == 'cdeferred._install'",
            "assert task.Deferred is D and base.Deferred is D",
            "assert _newclient.Deferred is D and base.DeferredList is defer.DeferredList",
            "import cdeferred",
            "assert i.installed() is cdeferred.Deferred",
            "print(cdeferred.IMPLEMENTATION)",
        ]
    )
    env = {"CDEFERRED_NO_EXTENSIONS": extensions, "PYTHONPATH": PACKAGE_PARENT}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),  # `-c` puts the cwd first on sys.path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("c" if extensions == "0" else "python")


def test_standInsCannotBeInstalled(installed):
    """The classes install() makes are not themselves installable."""
    standIn = defer.Deferred
    _install.uninstall()
    with pytest.raises(TypeError):
        _install.install(deferred_class=standIn)
    _install.install(deferred_class=installed.Deferred)


@pytest.mark.parametrize("extensions", ["0", "1"])
def test_claimsDoNotLeakInFreshProcess(extensions):
    """
    In a fresh process (empty ABC caches), whichever question comes first,
    Twisted's Deferreds pass isinstance against the installed names but
    never against cdeferred's own classes.
    """
    if extensions == "0" and NO_EXTENSIONS:
        pytest.skip("CDEFERRED_NO_EXTENSIONS=1: the C core is not under test")
    code = "\n".join(
        [
            "from collections.abc import Awaitable",
            "from twisted.internet import defer",
            "import cdeferred, cdeferred._install as i",
            "T = defer.Deferred; old = T(); oldList = defer.DeferredList([])",
            "i.install()",
            "for _ in range(2):",
            "    assert not isinstance(old, cdeferred.Deferred)",
            "    assert not isinstance(oldList, cdeferred.ControllableDeferred)",
            "    assert not issubclass(T, cdeferred.Deferred)",
            "    assert isinstance(old, defer.Deferred)",
            "    assert isinstance(oldList, defer.DeferredList)",
            "    assert issubclass(T, defer.Deferred)",
            "    assert isinstance(old, Awaitable)",
            "    assert not isinstance(old, cdeferred.Deferred)",
            "    assert not issubclass(defer.DeferredList, cdeferred.ControllableDeferred)",
            "print('ok')",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "CDEFERRED_NO_EXTENSIONS": extensions, "PYTHONPATH": PACKAGE_PARENT},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tempfile.gettempdir(),  # `-c` puts the cwd first on sys.path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_inlineCallbacksRunsOnTheCDriver(installed):
    """
    On the C core, install() also puts cdeferred's inlineCallbacks (the C
    driver) in place of Twisted's, for generators decorated from then on;
    uninstall() gives Twisted's back.  On the reference it stays Twisted's.
    """
    twisted_inline = _install._twistedInlineCallbacks
    if installed.is_c:
        assert defer.inlineCallbacks is cdeferred._cimpl.inlineCallbacks
    else:
        assert defer.inlineCallbacks is twisted_inline

    @defer.inlineCallbacks
    def gen(d):
        value = yield d
        return value + 1

    source = defer.Deferred()
    made = gen(source)
    assert isinstance(made, installed.Deferred)
    source.callback(1)
    assert results(made) == 2

    async def coroutine(d):
        return await d

    other = defer.Deferred()
    made = defer.ensureDeferred(coroutine(other))
    assert isinstance(made, installed.Deferred)
    other.callback("x")
    assert results(made) == "x"
    _install.uninstall()
    assert defer.inlineCallbacks is twisted_inline
