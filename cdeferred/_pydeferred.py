"""
The pure-Python reference implementation of cdeferred.

It is the oracle the C core is tested against, and the implementation used
where the extension cannot be built.  Everything Twisted already does is
inherited from Twisted's Deferred unchanged (above all ``_runCallbacks``), so
code that uses only Twisted's API sees exactly Twisted's behaviour; only the
third chain (cancellers), ``cancel(msg)``, ``ControllableDeferred`` and
``shield`` are added.

Data model, shared with the C core so ``d._callbacks`` reads the same in both:
a link that carries a canceller is the 3-tuple
``((cb, args, kw), (eb, args, kw), (canceller, cargs, ckw))``; every other link
stays Twisted's 2-tuple.  Twisted's ``_runCallbacks`` only looks at ``item[0]``
and ``item[1]``, so it runs either shape, and a link that has run is popped
off the list, which is how links that ran lose their canceller.
"""

from twisted.internet import defer as _defer
from twisted.internet.defer import _NONE_KWARGS, CancelledError, _failthru, passthru
from twisted.python.failure import Failure

from ._logging import logCancellerFailure


def _cancelledError(msg):
    """
    The CancelledError a cancellation ends with.  Without a message it has no
    args at all, exactly as Twisted raises it, so code comparing
    ``failure.value.args`` sees no difference unless it passed a message.
    """
    if msg is None:
        return CancelledError()
    return CancelledError(msg)


def _acceptsMessage(deferred):
    """
    Whether ``deferred.cancel(msg)`` may be called: only cdeferred's own
    Deferreds (either implementation) take a message; Twisted's cancel()
    takes no arguments.
    """
    if isinstance(deferred, Deferred):
        return True
    # Imported here: the package imports this module before it has chosen
    # (and built) the C implementation.
    from . import _CDeferred

    return _CDeferred is not None and isinstance(deferred, _CDeferred)


def _cancelAny(deferred, msg):
    """
    Cancel a Deferred of any kind, handing the message on when it can take
    one.  Cancellation must never be severed just because the Deferred knows
    nothing of cancellers or messages.
    """
    if msg is not None and _acceptsMessage(deferred):
        deferred.cancel(msg)
    else:
        deferred.cancel()


def _indexOf(callbacks, link):
    """
    Where ``link`` (by identity) sits in ``callbacks`` now, or None when it is
    gone (it ran, or someone removed it).
    """
    for index, item in enumerate(callbacks):
        if item is link:
            return index
    return None


class Deferred(_defer.Deferred):
    """
    Twisted's Deferred plus a third chain: each link may carry a canceller.

    Results flow from the responder (who made the Deferred) to the invoker
    (who added callbacks last); cancellation flows back the other way.
    ``cancel()`` calls the cancellers of the links that have not run, last
    added first, so the innermost user frees what it holds first, then the
    creator's canceller, and only then, if nothing produced a result,
    errbacks with CancelledError as Twisted does.
    """

    def addCallbacks(
        self,
        callback,
        errback=None,
        callbackArgs=(),
        callbackKeywords=_NONE_KWARGS,
        errbackArgs=(),
        errbackKeywords=_NONE_KWARGS,
        canceller=None,
    ):
        """
        Twisted's addCallbacks; ``canceller``, when given, is called as
        ``canceller(d)`` if ``d`` is cancelled before this link has run.
        Without a canceller the link is stored exactly as Twisted stores it.
        """
        if canceller is None:
            return super().addCallbacks(
                callback,
                errback,
                callbackArgs,
                callbackKeywords,
                errbackArgs,
                errbackKeywords,
            )
        if not callable(canceller):
            raise TypeError(f"canceller must be callable, not {canceller!r}")
        # Twisted accepts None for every container (an old default), and
        # None for the errback meaning "pass the failure on".
        if errback is None:
            errback = _failthru
        if callbackArgs is None:
            callbackArgs = ()
        if callbackKeywords is None:
            callbackKeywords = {}
        if errbackArgs is None:
            errbackArgs = ()
        if errbackKeywords is None:
            errbackKeywords = {}
        return self._addLink(
            (
                (callback, callbackArgs, callbackKeywords),
                (errback, errbackArgs, errbackKeywords),
                (canceller, (), _NONE_KWARGS),
            )
        )

    def addCanceller(self, fn, *args, **kwargs):
        """
        Add a link that leaves results and failures untouched and only carries
        a canceller, called as ``fn(d, *args, **kwargs)`` if ``d`` is
        cancelled before the link is reached.  This is how a layer that adds
        no callbacks of its own still gets to free what it holds.
        """
        if not callable(fn):
            raise TypeError(f"canceller must be callable, not {fn!r}")
        return self._addLink(
            (
                (passthru, (), _NONE_KWARGS),
                (_failthru, (), _NONE_KWARGS),
                (fn, args, kwargs),
            )
        )

    def _addLink(self, link):
        """
        Append a link the way Twisted's add* methods do: a Deferred that
        already has a result runs it at once.
        """
        self._callbacks.append(link)
        if self.called:
            self._runCallbacks()
        return self

    def cancel(self, msg=None):
        """
        Cancel this Deferred; ``msg``, when given, becomes the
        CancelledError's argument.

        Without a result yet: the pending links' cancellers run last added
        first, then the creator's canceller as in Twisted, and if none of them
        fired this Deferred it errbacks with CancelledError.  If a canceller
        fires it, the cancellers further up do not run: the result is on its
        way to them.

        Fired but waiting on a Deferred that a callback returned: the pending
        links' cancellers run, then the awaited Deferred is cancelled,
        whatever kind it is.  Fired and waiting on nothing: nothing happens.
        """
        if not self.called:
            self._cancelPending()
            if not self.called:
                self.errback(Failure(_cancelledError(msg)))
        elif isinstance(self.result, _defer.Deferred):
            waitingOn = self.result
            self._runLinkCancellers(lambda: self.result is waitingOn)
            # A canceller that fired the awaited Deferred has given this one
            # its result: there is nothing left to cancel.
            if self.result is waitingOn:
                _cancelAny(waitingOn, msg)

    def _cancelPending(self):
        """
        The first two steps of cancelling a Deferred that has no result:
        link cancellers, then the creator's canceller unless one of them
        fired it.
        """
        self._runLinkCancellers(lambda: not self.called)
        if not self.called:
            self._callCreatorCanceller()

    def _callCreatorCanceller(self):
        """
        Twisted's treatment of ``Deferred(canceller=...)``: call it and let its
        exception propagate; without one, arrange for the responder's
        eventual callback to be swallowed, since cancelling it is about to
        give this Deferred a result the responder does not know about.
        """
        canceller = self._canceller
        if canceller:
            canceller(self)
        else:
            self._suppressAlreadyCalled = True

    def _runLinkCancellers(self, stillCancelling):
        """
        Call the cancellers of the links pending now, last added first, while
        ``stillCancelling()`` holds (it stops holding when a canceller gives
        this Deferred its result).

        Each canceller is taken off its link before it is called, so it runs
        at most once even if it re-enters cancel().  A link that ran, or was
        removed, in the meantime keeps nothing to call.  Links added while
        cancelling were not pending when cancellation was asked for and are
        left alone.  A canceller raising an Exception is logged and the others
        still run, since one layer failing to clean up must not stop the
        rest; KeyboardInterrupt and SystemExit propagate.
        """
        pending = [
            (index, link)
            for index, link in enumerate(self._callbacks)
            if len(link) == 3
        ]
        for index, link in reversed(pending):
            if not stillCancelling():
                return
            # Cancellers may add, run or reorder links (inlineCallbacks swaps
            # the whole list), so find the link again unless it has not moved.
            callbacks = self._callbacks
            if index >= len(callbacks) or callbacks[index] is not link:
                index = _indexOf(callbacks, link)
                if index is None:
                    continue
            callbacks[index] = link[:2]
            fn, args, kwargs = link[2]
            try:
                fn(self, *args, **kwargs)
            except Exception:
                logCancellerFailure(Failure(), fn, self)


class ControllableDeferred(Deferred):
    """
    A cut point the client owns, between the upstream Deferred it follows and
    the callbacks the client adds to it.

    The client can fire it early (callback/errback before upstream
    delivered), ``deactivate()`` it, or ``cancel()`` it; in each case the
    upstream is cancelled so every layer above frees what it holds, and
    whatever upstream delivers afterwards is consumed silently: no
    AlreadyCalledError, no "Unhandled error in Deferred".

    The first fire wins, with or without an upstream: once it has fired or
    been deactivated, callback() and errback() are consumed silently, because
    racing producers (a timeout, the client, the responder) are the normal
    case here, not a bug.
    """

    # The Deferred followed, until it delivers or this one cuts loose from it.
    _upstream = None
    _deactivated = False

    def __init__(self, upstream=None, canceller=None):
        """
        Follow ``upstream`` (any Deferred, Twisted's too) as chainDeferred
        would: one link on it delivers its result or failure here and returns
        None, so upstream's failure counts as handled.  ``canceller`` is the
        creator's canceller, as for Deferred.
        """
        if canceller is not None and not callable(canceller):
            raise TypeError(f"canceller must be callable, not {canceller!r}")
        if upstream is not None and not isinstance(upstream, _defer.Deferred):
            raise TypeError(f"upstream must be a Deferred, not {upstream!r}")
        super().__init__(canceller)
        if upstream is not None:
            self._upstream = upstream
            self._chainedTo = upstream
            upstream.addBoth(self._deliver)

    @property
    def active(self):
        """True while this Deferred can still fire: not fired, not deactivated."""
        return not (self.called or self._deactivated)

    def _deliver(self, result):
        """
        The link on upstream.  A delivery that arrives after this Deferred cut
        loose (fired early, deactivated, cancelled) is dropped; returning None
        either way leaves upstream with no failure to report.
        """
        if self._detach() is not None:
            Deferred.callback(self, result)
        return None

    def _detach(self):
        """
        Stop following upstream and return it (None if it already delivered
        or was let go), so its later delivery is swallowed.
        """
        upstream = self._upstream
        self._upstream = None
        if upstream is not None and self._chainedTo is upstream:
            self._chainedTo = None
        return upstream

    def _fire(self, result):
        """
        Fire now.  If upstream has not delivered, this is the cut: let go of
        it first (so its delivery is swallowed), fire, then cancel it so its
        cancellers run; in that order the client's callbacks see the client's
        result, not whatever cancelling upstream produces.
        """
        upstream = self._detach()
        Deferred.callback(self, result)
        if upstream is not None:
            upstream.cancel()

    def callback(self, result):
        """Fire with ``result`` if still active; otherwise consume it silently."""
        if self.active:
            self._fire(result)

    def errback(self, fail=None):
        """
        Fail with ``fail`` if still active; otherwise consume it silently.
        The Failure is built before cutting loose from upstream, so a bad
        argument (no current exception) changes nothing.
        """
        if self.active:
            if fail is None:
                fail = Failure(captureVars=self.debug)
            elif not isinstance(fail, Failure):
                fail = Failure(fail)
            self._fire(fail)

    def deactivate(self):
        """
        Never fire: callbacks added here will not run.  The result will never
        be used, so every layer frees what it holds for it, as on cancel: this
        Deferred's pending link cancellers (last first), its creator's
        canceller, then the upstream is cancelled.  Later callback, errback
        and upstream deliveries are consumed silently.  A no-op once fired or
        deactivated.
        """
        if not self.active:
            return
        self._deactivated = True
        upstream = self._detach()
        self._runLinkCancellers(lambda: True)
        # The callbacks will never run; holding them only keeps what they
        # reference alive.
        del self._callbacks[:]
        canceller = self._canceller
        self._canceller = None
        if canceller:
            canceller(self)
        if upstream is not None:
            upstream.cancel()

    def cancel(self, msg=None):
        """
        Without a result: this Deferred's own pending link cancellers (the
        client's layer), then its creator's canceller, then the upstream is
        let go of and cancelled (its resulting delivery is swallowed), and if
        none of that fired this Deferred it errbacks with CancelledError(msg).
        A canceller that fires it is an early fire, which cancels upstream
        itself.  Deactivated: nothing to do.  Fired: the generic rule (cancel
        what it is waiting on, if anything).
        """
        if self._deactivated:
            return
        if self.called:
            Deferred.cancel(self, msg)
            return
        self._cancelPending()
        if self.called:
            return
        upstream = self._detach()
        if upstream is not None:
            _cancelAny(upstream, msg)
        if not self.called:
            self.errback(Failure(_cancelledError(msg)))


def make_shield(deferred_class):
    """
    Build ``shield`` for a Deferred class, so both implementations share one
    definition (the C side does ``shield = make_shield(Deferred)``).
    """

    def shield(deferred):
        """
        Return a new Deferred that follows ``deferred`` but whose cancellation
        does not reach it: for work that must finish (a commit) even when the
        caller stops waiting, in the spirit of asyncio.shield.

        The result is handed over and ``deferred`` is left with None, as with
        chainDeferred.  Once the shield has fired (it was cancelled), the
        result is left on ``deferred`` unchanged: nobody took it, so a failure
        is still reported as unhandled when ``deferred`` is collected rather
        than disappearing.
        """
        shielded = deferred_class()

        def forward(result):
            if shielded.called:
                return result
            shielded.callback(result)
            return None

        deferred.addBoth(forward)
        return shielded

    return shield


shield = make_shield(Deferred)

# The reference runs coroutines on Twisted's own driver and collects with
# Twisted's DeferredList: the behaviour the C driver (csrc/driver.c) and the C
# DeferredList (csrc/deferredlist.c) are tested against.
ensureDeferred = _defer.ensureDeferred
inlineCallbacks = _defer.inlineCallbacks
DeferredList = _defer.DeferredList
gatherResults = _defer.gatherResults
