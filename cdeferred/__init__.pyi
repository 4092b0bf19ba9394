# Type stubs for cdeferred.
#
# At run time cdeferred.Deferred is a subclass of Twisted's Deferred (the C
# core first, Twisted's class second), and it is declared as one here: every
# API typed to take a twisted.internet.defer.Deferred[T] accepts it, and
# Twisted's own methods (callback, errback, pause, asFuture, __await__, ...)
# keep Twisted's annotations.
#
# addCallback/addErrback/addBoth return the Deferred they were called on, whose
# result type is now whatever the added function produces.  Overloads compute
# that type from the function's return type; the first one that matches wins,
# so the narrow forms come first:
#
# - returning a Deferred[R] (Twisted's or ours) makes the chain wait for it:
#   the next result is R;
# - returning a Failure sends it down the errback chain: it adds nothing to
#   the result type (a callback that only ever returns Failures leaves the
#   next result type free: annotate the variable the chain is stored in);
# - an errback that returns a value recovers: the result becomes T | R.
#
# Because these classes subclass Twisted's, mypy requires each of Twisted's
# overloads to be matched, in Twisted's order, by one here that is at least
# as general; the forms below are laid out to meet that, and they return
# cdeferred.Deferred so a chain keeps its cancellation methods.
#
# Known limits (of mypy's inference, shared with Twisted's own annotations):
# a function returning "Deferred[R] | R" gives "object"; a lambda returning a
# Deferred gives "Any".  Annotate such functions, or the variable.

from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from typing import Any, Literal, Protocol, TypeVar, overload

from twisted.internet.defer import Deferred as _TwistedDeferred
from twisted.internet.defer import DeferredList as _TwistedDeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from typing_extensions import Concatenate, ParamSpec, Self

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

__version__: str

# "c" when the compiled core is in use, "python" on the pure-Python reference.
IMPLEMENTATION: Literal["c", "python"]

_T = TypeVar("_T")  # what a Deferred fires with
_R = TypeVar("_R")  # what an added function makes of it
_V = TypeVar("_V")  # a value a pass-through function hands back unchanged
_P = ParamSpec("_P")  # the extra arguments given to add*() for the function

# A Deferred that a callback returns for the chain to wait on: Twisted's class,
# so ours and any other subclass count.
_Waitable = _TwistedDeferred

class _Scheduler(Protocol):
    # What addTimeout needs of its clock: IReactorTime.callLater.  Structural,
    # so twisted.internet.task.Clock and reactors fit without the mypy-zope
    # plugin (which is what tells mypy that they provide IReactorTime).
    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> Any: ...

class Deferred(_TwistedDeferred[_T]):
    """Twisted's Deferred in C, plus a third chain: a canceller on each link."""

    def __init__(self, canceller: Callable[[Deferred[Any]], object] | None = None) -> None: ...

    # addCallback: f(result, *args, **kwargs) on success.
    @overload
    def addCallback(
        self,
        callback: Callable[Concatenate[_T, _P], Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addCallback(
        self,
        callback: Callable[Concatenate[_T, _P], _Waitable[_R] | Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addCallback(
        self,
        callback: Callable[Concatenate[_T, _P], _R | Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addCallback(
        self,
        callback: Callable[Concatenate[_T, _P], _Waitable[_R]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addCallback(
        self,
        callback: Callable[Concatenate[_T, _P], _Waitable[_R] | _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addCallback(
        self,
        callback: Callable[Concatenate[_T, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...

    # addErrback: f(failure, *args, **kwargs) on failure; results pass by.
    @overload
    def addErrback(
        self,
        errback: Callable[Concatenate[Failure, _P], _Waitable[_R]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T | _R]: ...
    @overload
    def addErrback(
        self,
        errback: Callable[Concatenate[Failure, _P], Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]: ...
    @overload
    def addErrback(
        self,
        errback: Callable[Concatenate[Failure, _P], _R | Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T | _R]: ...

    # addBoth: f(result or failure, *args, **kwargs) either way.
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_T | Failure, _P], Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_T | Failure, _P], _Waitable[_R] | Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_T | Failure, _P], _R | Failure],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_T | Failure, _P], _Waitable[_R]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_T | Failure, _P], _Waitable[_R] | _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_T | Failure, _P], _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_R]: ...
    # Twisted's last form, a generic pass-through (def f(x: V) -> V), kept so
    # that this method overrides Twisted's.  The catch-all above matches such
    # a function first, so it gives Deferred[T | Failure], as with Twisted's.
    @overload
    def addBoth(
        self,
        callback: Callable[Concatenate[_V, _P], _V],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]: ...

    # addCallbacks: a callback, an errback and, new here, a canceller.  The
    # first form is for a pair that both return Deferreds (or Failures), the
    # second takes anything Twisted's addCallbacks takes.
    @overload
    def addCallbacks(
        self,
        callback: Callable[..., _Waitable[_R] | Failure],
        errback: Callable[..., _Waitable[_R] | Failure] | None = None,
        callbackArgs: tuple[Any, ...] = (),
        callbackKeywords: Mapping[str, Any] = ...,
        errbackArgs: tuple[Any, ...] = (),
        errbackKeywords: Mapping[str, Any] = ...,
        canceller: Callable[[Deferred[Any]], object] | None = None,
    ) -> Deferred[_R]: ...
    @overload
    def addCallbacks(
        self,
        callback: (
            Callable[..., _R]
            | Callable[..., _Waitable[_R]]
            | Callable[..., Failure]
            | Callable[..., _R | _Waitable[_R] | Failure]
        ),
        errback: (
            Callable[..., _R]
            | Callable[..., _Waitable[_R]]
            | Callable[..., Failure]
            | Callable[..., _R | _Waitable[_R] | Failure]
            | None
        ) = None,
        callbackArgs: tuple[Any, ...] = (),
        callbackKeywords: Mapping[str, Any] = ...,
        errbackArgs: tuple[Any, ...] = (),
        errbackKeywords: Mapping[str, Any] = ...,
        canceller: Callable[[Deferred[Any]], object] | None = None,
    ) -> Deferred[_R]: ...
    def addCanceller(
        self,
        canceller: Callable[Concatenate[Self, _P], object],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Self:
        """Add a link that passes results and failures through and carries
        only a canceller, called as ``canceller(d, *args, **kwargs)``."""

    def cancel(self, msg: object = None) -> None:
        """Cancel: the pending links' cancellers (last added first), then the
        creator's canceller, then errback with CancelledError(msg) if none of
        them fired this Deferred."""

    # Twisted's methods that return this Deferred, so typed to return ours.
    def addTimeout(
        self,
        timeout: float,
        clock: IReactorTime | _Scheduler,
        onTimeoutCancel: Callable[[_T | Failure, float], _R | Failure] | None = None,
    ) -> Deferred[_T | _R]: ...
    def chainDeferred(self, d: _TwistedDeferred[_T]) -> Deferred[None]: ...

class ControllableDeferred(Deferred[_T]):
    """A cut point the client owns: fire it early, deactivate() it or
    cancel() it; each time the upstream Deferred it follows is cancelled and
    whatever upstream delivers afterwards is swallowed."""

    def __init__(
        self,
        upstream: _TwistedDeferred[_T] | None = None,
        canceller: Callable[[Deferred[Any]], object] | None = None,
    ) -> None: ...
    @property
    def active(self) -> bool:
        """True while this Deferred can still fire: not fired, not deactivated."""

    def deactivate(self) -> None:
        """Never fire; run the pending cancellers and cancel upstream."""

def shield(deferred: _TwistedDeferred[_T]) -> Deferred[_T]:
    """A Deferred that follows ``deferred`` but whose cancellation does not
    reach it."""

# Twisted's DeferredList as type checkers see it (overloads on
# fireOnOneCallback); on the C core it collects in C.
DeferredList = _TwistedDeferredList

def gatherResults(
    deferredList: Iterable[_TwistedDeferred[_T]], consumeErrors: bool = False
) -> _TwistedDeferred[list[_T]]:
    """A Deferred fired with the list of results, or with the first failure."""

def ensureDeferred(
    coro: Coroutine[Any, Any, _T] | Generator[Any, Any, _T] | _TwistedDeferred[_T],
) -> _TwistedDeferred[_T]:
    """Run a coroutine or generator on the C driver; a Deferred is returned as
    it is."""

def inlineCallbacks(
    f: Callable[_P, Generator[Any, Any, _T]],
) -> Callable[_P, _TwistedDeferred[_T]]:
    """Twisted's inlineCallbacks, driven in C."""

def install(deferred_class: type[_TwistedDeferred[Any]] | None = None) -> None:
    """Make Twisted create cdeferred Deferreds (a no-op when already done)."""

def uninstall() -> None:
    """Give Twisted its own Deferred and DeferredList back."""
