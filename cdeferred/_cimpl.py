"""
The C implementation: Python classes over the C cores.

``Deferred`` lists the C core first, so its methods win in the MRO, and
Twisted's Deferred second, so instances *are* Twisted Deferreds: isinstance
holds, and Twisted's ``__init_subclass__`` registers the class in
``_DEFERRED_SUBCLASSES``, which is how Twisted's own chaining, inlineCallbacks
and ensureDeferred recognise a Deferred.

Coroutines and inlineCallbacks generators are driven by the C driver
(``csrc/driver.c``) instead of Twisted's Python trampoline, and
``DeferredList``/``gatherResults`` collect in C (``csrc/deferredlist.c``).
"""

from functools import wraps
from types import GeneratorType

from twisted.internet import defer

from ._cdeferred import (
    ControllableCore,
    DeferredCore,
    DeferredListCore,
    from_coroutine,
    use_core_dealloc,
)
from ._pydeferred import make_shield


class Deferred(DeferredCore, defer.Deferred):
    __doc__ = defer.Deferred.__doc__

    @classmethod
    def fromCoroutine(cls, coro):
        """
        Run a coroutine (or generator) that awaits Deferreds; return a
        Deferred fired with its outcome.  As Twisted's, whatever class it is
        called on, the Deferred is a plain ``cdeferred.Deferred``.

        @raise NotACoroutineError: C{coro} is not a coroutine or generator.
        """
        return from_coroutine(Deferred, coro)


class ControllableDeferred(ControllableCore, Deferred):
    """
    A Deferred the client controls: fire it early, deactivate() it, or cancel()
    it; in each case the upstream Deferred it follows is cancelled, and what
    upstream delivers afterwards is swallowed.
    """


class DeferredList(DeferredListCore, Deferred, defer.DeferredList):
    __doc__ = defer.DeferredList.__doc__


def gatherResults(deferredList, consumeErrors=False):
    """
    Twisted's gatherResults on the C DeferredList: a Deferred fired with the
    list of results, or with the first failure (a L{defer.FirstError}).
    """
    return DeferredList(
        deferredList, fireOnOneErrback=True, consumeErrors=consumeErrors
    ).addCallback(defer._parseDeferredListResult)


def ensureDeferred(coro):
    """
    Twisted's ensureDeferred on the C driver: a Deferred is returned as it is,
    a coroutine or generator is run by C{Deferred.fromCoroutine}.
    """
    if type(coro) in defer._DEFERRED_SUBCLASSES:
        return coro
    try:
        return from_coroutine(Deferred, coro)
    except defer.NotACoroutineError:
        raise defer.NotACoroutineError(f"{coro!r} is not a coroutine or a Deferred")


def inlineCallbacks(f):
    """
    Twisted's inlineCallbacks on the C driver: calling C{f} returns a
    Deferred fired with what its generator returns (or raises); each
    C{yield}ed Deferred is waited on and its result sent back in.
    """

    @wraps(f)
    def unwindGenerator(*args, **kwargs):
        try:
            gen = f(*args, **kwargs)
        except defer._DefGen_Return:
            raise TypeError(
                "inlineCallbacks requires %r to produce a generator; instead"
                "caught returnValue being used in a non-generator" % (f,)
            )
        if not isinstance(gen, GeneratorType):
            raise TypeError(
                "inlineCallbacks requires %r to produce a generator; "
                "instead got %r" % (f, gen)
            )
        return from_coroutine(Deferred, gen)

    return unwindGenerator


for _public in (
    Deferred,
    ControllableDeferred,
    DeferredList,
    gatherResults,
    ensureDeferred,
    inlineCallbacks,
):
    _public.__module__ = "cdeferred"
del _public
# These classes add nothing to the core's instances: skip subtype_dealloc.
for _cls in (Deferred, ControllableDeferred, DeferredList):
    if not use_core_dealloc(_cls):
        raise ImportError(f"{_cls.__name__} has a layout of its own")
del _cls
shield = make_shield(Deferred)
