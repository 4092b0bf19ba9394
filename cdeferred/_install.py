"""
``install()`` and ``uninstall()``: make Twisted create cdeferred Deferreds.

How it works: cdeferred's Deferred already *is* a Twisted Deferred (a
subclass, registered in ``twisted.internet.defer._DEFERRED_SUBCLASSES`` by
Twisted's own ``__init_subclass__``), so install() only rebinds names:

- ``twisted.internet.defer.Deferred`` becomes a *stand-in*: a small subclass of
  cdeferred's Deferred.  Every helper in ``defer.py`` (``succeed``, ``fail``,
  ``execute``, ``maybeDeferred``, ``gatherResults``, ``race``,
  ``inlineCallbacks``, ``ensureDeferred``, the locks and the queue) looks
  ``Deferred`` up as a module global when it is called, so from then on they
  all build cdeferred Deferreds.
- ``twisted.internet.defer.DeferredList`` becomes a stand-in too: a subclass
  of the Deferred stand-in.  On the C core its methods are the C
  DeferredList's (``DeferredListCore``, listed first); on the reference its
  namespace holds the very functions of Twisted's DeferredList (nothing is
  copied or rewritten), which look ``Deferred`` up as a global and so follow
  the rebinding.
- Twisted's original class cannot be given a new base (``__bases__``
  assignment fails: the layouts differ), so ``_DEFERRED_SUBCLASSES`` is kept
  the same list object and reordered in place to begin with
  ``[Deferred, DeferredList]`` as Twisted itself lays it out, followed by
  every class it held before: the originals stay recognised, so Deferreds
  made before install() keep chaining.
- Twisted modules already imported that bound the names at their import
  (``from twisted.internet.defer import Deferred``) are rebound as well; the
  ones imported later read the new names from ``defer``.

Why stand-ins and not cdeferred's Deferred itself: after the swap,
``isinstance(d, defer.Deferred)`` must stay true for the Deferreds made before
it (Twisted's own class and its subclasses).  Twisted's Deferred is an ABC,
but ``register()`` refuses to make a class a virtual subclass of its own
subclass ("Refusing to create an inheritance cycle"), and widening
``isinstance`` on the public ``cdeferred.Deferred`` would make cdeferred's own
code take Twisted's Deferreds for its own.  So the stand-ins have a metaclass
that answers ``isinstance``/``issubclass`` for the Twisted class they stand
for, when asked about themselves only (see ``_StandInMeta``).  The stand-ins
add no methods: instances run the cdeferred code unchanged (the C core
recognises subclasses by a real type check).  They are named
``cdeferred._install.Deferred``/``DeferredList`` so that a repr tells them
from Twisted's; instances print as ``<Deferred at 0x...>`` as Twisted's do.

Measured on Twisted 26.10 with this approach, against both implementations:
Twisted's Deferred suites (test_defer, test_defer_await, test_defer_yieldfrom,
test_inlinecb, trial's test_deferred) all pass, so the import hook the design
considered (substituting the class while defer.py executes) is not needed --
and it could not run first anyway, since cdeferred imports defer to subclass
its Deferred.  See tools/run_twisted_suites.py and tests/test_twisted_suites.py.
"""

import sys
from abc import ABCMeta

from twisted.internet import defer as _defer

__all__ = ["install", "uninstall", "installed"]

# Twisted's own classes, taken once, when cdeferred is first imported (nothing
# before cdeferred rebinds them).
_TwistedDeferred = _defer.Deferred
_TwistedDeferredList = _defer.DeferredList
_twistedInlineCallbacks = _defer.inlineCallbacks

# Stand-in class -> the Twisted class it answers isinstance/issubclass for.
_STANDS_FOR = {}

# Names of DeferredList's namespace that belong to the class object itself,
# not to its behaviour: the new class gets its own.
_NOT_COPIED = frozenset(
    {
        "__dict__",
        "__weakref__",
        "__module__",
        "__qualname__",
        "__orig_bases__",
        "__abstractmethods__",
        "_abc_impl",
    }
)


# The Python-level frame of ABCMeta.__subclasscheck__ (abc.py), the one in
# which an ABC walks its subclasses ("is it a subclass of one of my
# subclasses?").  None if some Python implements it without a frame.
_ABC_SUBCLASSCHECK_CODE = getattr(ABCMeta.__subclasscheck__, "__code__", None)


class _StandInMeta(ABCMeta):
    """
    Metaclass of the stand-ins.

    Asked about itself, a stand-in answers ``isinstance`` and ``issubclass``
    as the Twisted class it stands for would, so Deferreds made before
    install() (Twisted's class, its subclasses made at import time) still
    pass ``isinstance(d, defer.Deferred)``, and ``issubclass(Twisted's
    Deferred, defer.Deferred)`` holds.  ``register()`` registers on that
    Twisted class.

    That answer is never lent to the stand-in's ancestors: an ABC answers
    ``issubclass(C, A)`` by also asking each subclass of ``A`` about ``C``,
    so a stand-in claiming Twisted's Deferred would make
    ``isinstance(twisted_deferred, cdeferred.Deferred)`` true, and cdeferred
    would take Twisted's Deferreds for its own.  When the question comes
    from such a walk (the caller is ABCMeta's own ``__subclasscheck__``), a
    stand-in answers by real inheritance only.  (The walk is also why the
    checks below use ``type``'s own answers where they do: asking the
    Twisted class's ABC check from here would come back here.)

    Assigning ``debug`` to the Deferred stand-in (``setDebugging()`` does
    ``Deferred.debug = on``) assigns it to Twisted's Deferred, which every
    Deferred inherits it from, as without install().

    Subclasses of a stand-in are ordinary ABCs.
    """

    def __instancecheck__(cls, instance):
        original = _STANDS_FOR.get(cls)
        if original is None:
            return ABCMeta.__instancecheck__(cls, instance)
        return isinstance(instance, original) or type.__instancecheck__(cls, instance)

    def __subclasscheck__(cls, subclass):
        original = _STANDS_FOR.get(cls)
        if original is None:
            return ABCMeta.__subclasscheck__(cls, subclass)
        if type.__subclasscheck__(cls, subclass):
            return True
        if sys._getframe(1).f_code is _ABC_SUBCLASSCHECK_CODE:
            return False  # an ancestor's walk: see the class docstring
        return issubclass(subclass, original)

    def register(cls, subclass):
        original = _STANDS_FOR.get(cls)
        if original is None:
            return ABCMeta.register(cls, subclass)
        return original.register(subclass)

    def __setattr__(cls, name, value):
        if name == "debug" and _STANDS_FOR.get(cls) is _TwistedDeferred:
            cls = _TwistedDeferred
        type.__setattr__(cls, name, value)


class _State:
    """What install() did, so that uninstall() can undo exactly that."""

    base = None  # the Deferred class installed (cdeferred.Deferred or a test's)
    deferred = None  # its stand-in, now defer.Deferred
    deferredList = None  # the DeferredList stand-in, now defer.DeferredList


_state = _State()
# Stand-ins already built, per installed base class: installing again after
# uninstall() reuses them, so _DEFERRED_SUBCLASSES does not grow.
_standIns = {}


def installed():
    """
    The Deferred class install() put in place (the class ``defer.Deferred``
    stands in for), or None when Twisted's own is in use.
    """
    return _state.base


def _defaultDeferredClass():
    # Imported late: cdeferred/__init__.py imports this module.
    import cdeferred

    return cdeferred.Deferred


def _onCore(cls):
    """Whether C{cls} runs on the C core (False on the pure-Python reference)."""
    import cdeferred

    if cdeferred._cimpl is None:
        return False
    from ._cdeferred import DeferredCore

    return issubclass(cls, DeferredCore)


def _makeStandIns(base):
    """
    The two stand-ins for C{base}: C{Deferred} (a subclass of C{base}) and
    C{DeferredList} (a subclass of the first, with the C DeferredList core
    or, on the reference, Twisted's DeferredList functions).  Creating them appends them to C{_DEFERRED_SUBCLASSES}
    (Twisted's C{__init_subclass__}).
    """
    deferred = _StandInMeta(
        "Deferred",
        (base,),
        {
            "__module__": __name__,
            "__qualname__": "Deferred",
            "__doc__": base.__doc__ or _TwistedDeferred.__doc__,
        },
    )
    namespace = {
        name: value
        for name, value in vars(_TwistedDeferredList).items()
        if name not in _NOT_COPIED
    }
    bases = (deferred,)
    if _onCore(base):
        # The C core has DeferredList's methods in C: they go first, and
        # Twisted's functions stay out of the way.
        from ._cdeferred import DeferredListCore

        namespace = {"__doc__": _TwistedDeferredList.__doc__}
        bases = (DeferredListCore, deferred, _TwistedDeferredList)
    namespace["__module__"] = __name__
    namespace["__qualname__"] = "DeferredList"
    deferredList = _StandInMeta("DeferredList", bases, namespace)
    if _onCore(base):
        from ._cdeferred import use_core_dealloc

        use_core_dealloc(deferred)
        use_core_dealloc(deferredList)
    _STANDS_FOR[deferred] = _TwistedDeferred
    _STANDS_FOR[deferredList] = _TwistedDeferredList
    return deferred, deferredList


def _putFirst(first):
    """
    Reorder C{_DEFERRED_SUBCLASSES} in place (other code, the C core among
    it, holds this very list) so it begins with C{first}, the other entries
    following in their present order.
    """
    registry = _defer._DEFERRED_SUBCLASSES
    rest = [cls for cls in registry if not any(cls is f for f in first)]
    registry[:] = list(first) + rest


def _twistedModules():
    """The imported modules of the C{twisted} package, skipping odd entries."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "twisted" or name.startswith("twisted.")):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        yield namespace


def _rebind(replacements):
    """
    In every imported Twisted module, rebind each global whose value is a key
    of C{replacements} (by identity) to the matching value.
    """
    for namespace in _twistedModules():
        for name, value in list(namespace.items()):
            for old, new in replacements:
                if value is old:
                    namespace[name] = new
                    break


def _replacements(deferred, deferredList):
    """
    (Twisted's object, what install() puts in its place) pairs: the classes,
    and on the C core Twisted's inlineCallbacks, so that generators decorated
    from then on run on the C driver (ensureDeferred and fromCoroutine reach
    it through the Deferred class already).
    """
    pairs = [(_TwistedDeferred, deferred), (_TwistedDeferredList, deferredList)]
    if _onCore(deferred):
        from ._cimpl import inlineCallbacks

        pairs.append((_twistedInlineCallbacks, inlineCallbacks))
    return pairs


def install(deferred_class=None):
    """
    Make Twisted create cdeferred Deferreds: C{twisted.internet.defer.Deferred},
    C{DeferredList} and every helper built on them (C{succeed}, C{fail},
    C{maybeDeferred}, C{gatherResults}, C{inlineCallbacks}, C{ensureDeferred},
    ...), in C{twisted.internet.defer} and in the Twisted modules already
    imported or imported later.  Deferreds made before the call keep working
    and keep passing C{isinstance(d, defer.Deferred)}.

    Call it early, as a reactor is installed: code outside Twisted that has
    already bound C{Deferred} by name keeps the class it bound.

    @param deferred_class: the class to install, a registered subclass of
        Twisted's Deferred; C{cdeferred.Deferred} when omitted.
    @raise ValueError: when another class is already installed.
    @raise TypeError: when C{deferred_class} is not a Twisted Deferred
        subclass listed in C{_DEFERRED_SUBCLASSES} (Twisted would take its
        instances for plain values).
    """
    base = _defaultDeferredClass() if deferred_class is None else deferred_class
    if _state.base is not None:
        if _state.base is base:
            return
        raise ValueError(
            f"{_state.base!r} is already installed; call uninstall() first"
        )
    if not (isinstance(base, type) and issubclass(base, _TwistedDeferred)):
        raise TypeError(f"{base!r} is not a subclass of Twisted's Deferred")
    if base in _STANDS_FOR:
        raise TypeError(f"{base!r} is made by install() itself")
    if base not in _defer._DEFERRED_SUBCLASSES:
        raise TypeError(
            f"{base!r} is not in twisted.internet.defer._DEFERRED_SUBCLASSES; "
            "Twisted would not recognise its instances as Deferreds"
        )
    if base not in _standIns:
        _standIns[base] = _makeStandIns(base)
    deferred, deferredList = _standIns[base]

    _putFirst([deferred, deferredList])
    _rebind(_replacements(deferred, deferredList))
    _state.base, _state.deferred, _state.deferredList = base, deferred, deferredList


def uninstall():
    """
    Give Twisted its own Deferred and DeferredList back, undoing install().
    Deferreds made while installed keep working.  A no-op when nothing is
    installed.
    """
    if _state.base is None:
        return
    _rebind(
        [(new, old) for old, new in _replacements(_state.deferred, _state.deferredList)]
    )
    _putFirst([_TwistedDeferred, _TwistedDeferredList])
    _state.base = _state.deferred = _state.deferredList = None
