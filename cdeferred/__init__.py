"""
cdeferred: Twisted's Deferred in C, with layered cancellation.

``Deferred`` is a drop-in for ``twisted.internet.defer.Deferred`` (it *is* one:
``isinstance`` holds and Twisted's own machinery accepts it), plus a third chain
of cancellers, ``ControllableDeferred`` and ``shield``.  ``install()`` makes all of
Twisted create these Deferreds.  ``ensureDeferred``, ``inlineCallbacks`` and
``Deferred.fromCoroutine`` drive coroutines in C; ``DeferredList`` and
``gatherResults`` collect in C.
"""

from . import _pydeferred
from ._compat import USE_EXTENSIONS

if USE_EXTENSIONS:
    try:
        from . import _cimpl
    except ImportError:  # no compiler at install time, or not CPython
        _cimpl = None
else:
    _cimpl = None

_impl = _cimpl if _cimpl is not None else _pydeferred

#: ``"c"`` when the compiled core is in use, ``"python"`` on the reference.
IMPLEMENTATION = "c" if _cimpl is not None else "python"

Deferred = _impl.Deferred
ControllableDeferred = _impl.ControllableDeferred
shield = _impl.shield
DeferredList = _impl.DeferredList
gatherResults = _impl.gatherResults
ensureDeferred = _impl.ensureDeferred
inlineCallbacks = _impl.inlineCallbacks

from ._install import install, uninstall  # noqa: E402  (needs Deferred above)

# Both implementations, for tests and benchmarks (asyncio's _CFuture/_PyFuture).
_PyDeferred = _pydeferred.Deferred
_CDeferred = _cimpl.Deferred if _cimpl is not None else None

__version__ = "0.1.0"

__all__ = [
    "Deferred",
    "ControllableDeferred",
    "shield",
    "DeferredList",
    "gatherResults",
    "ensureDeferred",
    "inlineCallbacks",
    "install",
    "uninstall",
    "IMPLEMENTATION",
    "__version__",
]
