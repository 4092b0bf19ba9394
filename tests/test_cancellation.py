"""The third chain: link cancellers and cancel(msg) (DESIGN.md section 3.2)."""

import gc
import weakref

import pytest
from twisted.internet import defer

import cdeferred
from twisted.internet.defer import AlreadyCalledError, CancelledError
from twisted.python.failure import Failure

from cancel_helpers import add_layer, canceller_failures, recorder, unhandled_failures


def catch(deferred):
    """Collect what reaches the end of ``deferred``'s chain, handling failures."""
    seen = []
    deferred.addBoth(seen.append)
    return seen


# -- adding links ------------------------------------------------------------


def test_addCancellerStoresThreeTuple(impl):
    """A link with a canceller is stored as a 3-tuple; other links stay Twisted's 2-tuples."""
    d = impl.Deferred()
    d.addCallback(str)
    d.addCanceller(print, 1, k=2)
    d.addCallbacks(str, canceller=repr)
    assert [len(link) for link in d._callbacks] == [2, 3, 3]
    assert d._callbacks[1][2] == (print, (1,), {"k": 2})
    assert d._callbacks[2][2][0] is repr


def test_addCancellerPassesResultThrough(impl):
    """A canceller-only link passes a result on unchanged."""
    d = impl.Deferred()
    d.addCanceller(print)
    seen = catch(d)
    d.callback("value")
    assert seen == ["value"]


def test_addCancellerPassesFailureThrough(impl):
    """A canceller-only link passes a failure on unchanged."""
    d = impl.Deferred()
    d.addCanceller(print)
    seen = catch(d)
    d.errback(ValueError("boom"))
    assert isinstance(seen[0].value, ValueError)


def test_addMethodsReturnSelf(impl):
    """addCanceller and addCallbacks with a canceller return the Deferred itself."""
    d = impl.Deferred()
    assert d.addCanceller(print) is d
    assert d.addCallbacks(str, canceller=print) is d


@pytest.mark.parametrize("bad", [None, 3, "name"])
def test_addCancellerRejectsNonCallable(impl, bad):
    """addCanceller with something that cannot be called raises TypeError and adds nothing."""
    d = impl.Deferred()
    with pytest.raises(TypeError):
        d.addCanceller(bad)
    assert d._callbacks == []


def test_addCallbacksRejectsNonCallableCanceller(impl):
    """addCallbacks with a canceller that cannot be called raises TypeError and adds nothing."""
    d = impl.Deferred()
    with pytest.raises(TypeError):
        d.addCallbacks(str, canceller=3)
    assert d._callbacks == []


def test_addCallbacksWithCancellerAcceptsNoneContainers(impl):
    """As in Twisted, None is accepted for the args and keywords of both callbacks."""
    d = impl.Deferred()
    d.addCallbacks(
        lambda r: r + 1,
        lambda f: f,
        callbackArgs=None,
        callbackKeywords=None,
        errbackArgs=None,
        errbackKeywords=None,
        canceller=print,
    )
    seen = catch(d)
    d.callback(1)
    assert seen == [2]


def test_addCallbacksWithCancellerPassesArguments(impl):
    """The callback and errback of a link with a canceller get their args and keywords."""
    calls = []
    ok = impl.Deferred()
    ok.addCallbacks(
        lambda r, a, b: calls.append((r, a, b)),
        callbackArgs=(1,),
        callbackKeywords={"b": 2},
        canceller=print,
    )
    ok.callback("r")
    bad = impl.Deferred()
    bad.addCallbacks(
        str,
        lambda f, a, b: calls.append((f.type, a, b)),
        errbackArgs=(3,),
        errbackKeywords={"b": 4},
        canceller=print,
    )
    bad.errback(KeyError())
    assert calls == [("r", 1, 2), (KeyError, 3, 4)]


def test_linkAddedAfterFiringRunsAndItsCancellerNever(impl):
    """A link added to a fired Deferred runs at once, so its canceller is never called."""
    order = []
    d = impl.Deferred()
    d.callback(1)
    d.addCallbacks(lambda r: r + 1, canceller=recorder(order, "late"))
    seen = catch(d)
    d.cancel()
    assert seen == [2]
    assert order == []


# -- rule 1 and 2: order ------------------------------------------------------


def test_layersCancelledInnermostFirstThenCreator(impl):
    """
    Cancellers of layers W, X, Y run Y, X, W, then the creator's canceller, then the client
    sees CancelledError.
    """
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    for layer in "WXY":
        add_layer(d, order, layer)
    seen = catch(d)
    d.cancel()
    assert order == ["Y", "X", "W", "creator"]
    assert seen[0].check(CancelledError)


def test_addCallbacksCancellersInterleaveWithAddCanceller(impl):
    """Cancellers from addCallbacks and addCanceller run in one order: last added first."""
    order = []
    d = impl.Deferred()
    d.addCallbacks(str, canceller=recorder(order, 1))
    d.addCallback(str)
    d.addCanceller(recorder(order, 2))
    d.addErrback(lambda f: None)
    d.addCallbacks(str, canceller=recorder(order, 3))
    d.cancel()
    assert order == [3, 2, 1]


def test_cancellerArguments(impl):
    """addCanceller's fn gets (d, *args, **kwargs); addCallbacks' canceller gets (d)."""
    calls = []
    d = impl.Deferred()
    d.addCallbacks(str, canceller=lambda *a, **kw: calls.append((a, kw)))
    d.addCanceller(lambda *a, **kw: calls.append((a, kw)), 1, 2, key="value")
    d.addErrback(lambda f: None)
    d.cancel()
    assert calls == [((d, 1, 2), {"key": "value"}), ((d,), {})]


def test_creatorCancellerExceptionPropagates(impl):
    """An exception from the creator's canceller leaves cancel(), after the link cancellers ran."""
    order = []

    def creator(d):
        raise ZeroDivisionError()

    d = impl.Deferred(creator)
    d.addCanceller(recorder(order, "link"))
    with pytest.raises(ZeroDivisionError):
        d.cancel()
    assert order == ["link"]
    assert not d.called


# -- rule 3: a canceller that fires d -----------------------------------------


def test_cancellerThatFiresStopsTheRest(impl):
    """A canceller that gives d a result stops the cancellers further up and the creator's."""
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "W")

    def x_has_a_cached_answer(d):
        order.append("X")
        d.callback("cached")

    d.addCanceller(x_has_a_cached_answer)
    add_layer(d, order, "Y")
    seen = catch(d)
    d.cancel()
    assert order == ["Y", "X"]
    assert seen == ["cached"]


def test_cancellerThatErrbacksStopsTheRest(impl):
    """
    A canceller that errbacks d decides its failure, and the creator's canceller does not run.
    """
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "W")
    d.addCanceller(lambda d: d.errback(KeyError("mine")))
    seen = catch(d)
    d.cancel("ignored")
    assert order == []
    assert seen[0].check(KeyError)


def test_creatorCancellerThatFires(impl):
    """A creator's canceller that fires d replaces the CancelledError, as in Twisted."""
    d = impl.Deferred(lambda d: d.callback("instead"))
    seen = catch(d)
    d.cancel("msg")
    assert seen == ["instead"]


# -- rule 4: CancelledError ---------------------------------------------------


def test_cancelledErrorCarriesMessage(impl):
    """cancel(msg) errbacks with CancelledError(msg)."""
    d = impl.Deferred()
    seen = catch(d)
    d.cancel("client gave up")
    assert seen[0].check(CancelledError)
    assert seen[0].value.args == ("client gave up",)


def test_cancelledErrorWithoutMessageHasNoArgs(impl):
    """cancel() errbacks with CancelledError() without arguments, as Twisted does."""
    d = impl.Deferred()
    seen = catch(d)
    d.cancel()
    assert seen[0].value.args == ()


def test_oneLaterDeliverySwallowedWithoutCreatorCanceller(impl):
    """
    Without a creator's canceller the responder's one later callback is swallowed, a second is
    not.
    """
    d = impl.Deferred()
    d.addCanceller(print)
    seen = catch(d)
    d.cancel()
    d.callback("late")
    assert len(seen) == 1 and seen[0].check(CancelledError)
    with pytest.raises(AlreadyCalledError):
        d.callback("later still")


def test_laterDeliveryNotSwallowedWithCreatorCanceller(impl):
    """
    With a creator's canceller that did not fire d, a later callback raises AlreadyCalledError,
    as in Twisted.
    """
    d = impl.Deferred(lambda d: None)
    catch(d)
    d.cancel()
    with pytest.raises(AlreadyCalledError):
        d.callback("late")


# -- rule 5: a canceller that raises ------------------------------------------


def test_raisingCancellerIsLoggedAndOthersRun(impl, captured_log):
    """
    A link canceller that raises is logged with its failure and the cancellers further up still
    run.
    """
    order = []
    error = ValueError("cleanup failed")

    def broken(d):
        order.append("X")
        raise error

    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "W")
    d.addCanceller(broken)
    add_layer(d, order, "Y")
    seen = catch(d)
    d.cancel()
    assert order == ["Y", "X", "W", "creator"]
    assert seen[0].check(CancelledError)
    logged = canceller_failures(captured_log)
    assert len(logged) == 1
    assert logged[0].value is error
    event = [e for e in captured_log if "log_failure" in e][0]
    assert event["canceller"] is broken
    assert event["deferred"] is d


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_baseExceptionFromCancellerPropagates(impl, exception):
    """
    KeyboardInterrupt or SystemExit from a link canceller leaves cancel() and stops
    cancellation.
    """
    order = []

    def interrupted(d):
        raise exception()

    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "W")
    d.addCanceller(interrupted)
    add_layer(d, order, "Y")
    with pytest.raises(exception):
        d.cancel()
    assert order == ["Y"]
    assert not d.called


# -- fired, waiting on another Deferred ---------------------------------------


def _waiting_on(impl, inner, order):
    """An outer Deferred of ``impl`` whose callback returned ``inner``, with a layer after it."""
    outer = impl.Deferred(recorder(order, "outer creator"))
    outer.addCallbacks(lambda _: inner, canceller=recorder(order, "ran"))
    add_layer(outer, order, "outer Y")
    add_layer(outer, order, "outer Z")
    outer.callback(None)
    assert outer.result is inner
    return outer


def test_waitingOnInnerCancelsPendingThenInner(impl):
    """
    Waiting on an inner Deferred: d's pending cancellers run last first, then the inner is
    cancelled with the message.
    """
    order = []
    inner = impl.Deferred(recorder(order, "inner creator"))
    add_layer(inner, order, "inner W")
    outer = _waiting_on(impl, inner, order)
    seen = catch(outer)
    outer.cancel("stop")
    assert order == ["outer Z", "outer Y", "inner W", "inner creator"]
    assert seen[0].check(CancelledError)
    assert seen[0].value.args == ("stop",)


def test_waitingOnTwistedDeferredCancelsIt(impl):
    """
    Waiting on a plain Twisted Deferred: pending cancellers run, then the Twisted Deferred is
    cancelled (without the message it cannot take).
    """
    order = []
    inner = defer.Deferred(recorder(order, "inner creator"))
    outer = _waiting_on(impl, inner, order)
    seen = catch(outer)
    outer.cancel("stop")
    assert order == ["outer Z", "outer Y", "inner creator"]
    assert seen[0].check(CancelledError)
    assert seen[0].value.args == ()


def test_waitingOnOtherImplementationGetsMessage(impl):
    """
    Waiting on a Deferred of the other cdeferred implementation, the inner one is cancelled with
    the message.
    """
    others = [
        cls
        for cls in (cdeferred._PyDeferred, cdeferred._CDeferred)
        if cls is not None and not isinstance(impl.Deferred(), cls)
    ]
    if not others:
        pytest.skip("only one implementation is built")
    order = []
    inner = others[0](recorder(order, "inner creator"))
    outer = _waiting_on(impl, inner, order)
    seen = catch(outer)
    outer.cancel("stop")
    assert order == ["outer Z", "outer Y", "inner creator"]
    assert seen[0].value.args == ("stop",)


def test_cancelReachesThroughTwistedDeferredInTheMiddle(impl):
    """
    In a 3-deep chain whose middle is a Twisted Deferred, cancel still reaches the origin's
    cancellers and creator's canceller.
    """
    order = []
    origin = impl.Deferred(recorder(order, "origin creator"))
    add_layer(origin, order, "origin W")
    middle = defer.Deferred()
    middle.addCallback(lambda _: origin)
    middle.callback(None)
    top = impl.Deferred()
    top.addCallback(lambda _: middle)
    add_layer(top, order, "top Y")
    top.callback(None)
    seen = catch(top)
    top.cancel()
    assert order == ["top Y", "origin W", "origin creator"]
    assert seen[0].check(CancelledError)


def test_cancellerThatFiresInnerStopsWaitingCancellation(impl):
    """
    While waiting, a canceller that fires the inner Deferred gives d its result: nothing else
    is cancelled.
    """
    order = []
    inner = impl.Deferred(recorder(order, "inner creator"))
    outer = impl.Deferred()
    outer.addCallback(lambda _: inner)
    add_layer(outer, order, "Y")
    outer.addCanceller(lambda d: inner.callback("answer"))
    outer.callback(None)
    seen = catch(outer)
    outer.cancel()
    assert order == []
    assert seen == ["answer"]


def test_firedAndNotWaitingCancelDoesNothing(impl):
    """cancel() on a Deferred that has a result and waits on nothing changes nothing."""
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    d.callback("done")
    d.pause()
    add_layer(d, order, "paused layer")
    d.cancel("no")
    d.unpause()
    assert order == []
    assert catch(d) == ["done"]


# -- at most once -------------------------------------------------------------


def test_cancellerRunsAtMostOnce(impl):
    """
    A second cancel() after the creator's canceller raised does not call the link cancellers
    again.
    """
    order = []
    calls = []

    def creator(d):
        calls.append(d)
        if len(calls) == 1:
            raise RuntimeError("not yet")

    d = impl.Deferred(creator)
    add_layer(d, order, "W")
    add_layer(d, order, "Y")
    with pytest.raises(RuntimeError):
        d.cancel()
    seen = catch(d)
    d.cancel()
    assert order == ["Y", "W"]
    assert len(calls) == 2
    assert seen[0].check(CancelledError)


def test_linksLoseTheirCanceller(impl):
    """Links that ran are gone and pending links that were cancelled keep no canceller."""
    order = []
    inner = impl.Deferred()
    d = impl.Deferred()
    d.addCallbacks(lambda _: inner, canceller=recorder(order, "ran"))
    add_layer(d, order, "pending")
    d.callback(None)
    assert [len(link) for link in d._callbacks] == [2, 3]
    inner.pause()
    d.cancel()
    assert order == ["pending"]
    assert [len(link) for link in d._callbacks] == [2, 2]


# -- reentrancy ---------------------------------------------------------------


def test_cancelFromInsideOwnCallbackDoesNothing(impl):
    """cancel() from inside one of d's own callbacks is a no-op: d is running with a result."""
    order = []
    d = impl.Deferred(recorder(order, "creator"))

    def cancel_self(result):
        d.cancel()
        return result + 1

    d.addCallback(cancel_self)
    add_layer(d, order, "Y")
    seen = catch(d)
    d.callback(1)
    assert order == []
    assert seen == [2]


def test_cancelFromInsideCallbackOfAnotherDeferred(impl):
    """A callback of one Deferred may cancel another; its cancellers run right there."""
    order = []
    victim = impl.Deferred(recorder(order, "victim creator"))
    add_layer(victim, order, "victim Y")
    seen = catch(victim)
    trigger = impl.Deferred()
    trigger.addCallback(lambda _: victim.cancel("from callback"))
    trigger.callback(None)
    assert order == ["victim Y", "victim creator"]
    assert seen[0].value.args == ("from callback",)


def test_cancelFromInsideCanceller(impl):
    """A link canceller that calls cancel() again does not rerun any canceller and d fails once."""
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "W")

    def again(d):
        order.append("X")
        d.cancel("inner")

    d.addCanceller(again)
    add_layer(d, order, "Y")
    seen = catch(d)
    d.cancel("outer")
    assert order == ["Y", "X", "W", "creator"]
    assert len(seen) == 1
    assert seen[0].value.args == ("inner",)


def test_cancellerThatReshapesTheChain(impl):
    """
    A canceller that shifts the links still runs the others once each, and a link it removed
    keeps nothing to call.
    """
    order = []
    d = impl.Deferred()
    add_layer(d, order, "W")
    add_layer(d, order, "X")
    x_link = d._callbacks[-1]
    add_layer(d, order, "V")

    def reshape(d):
        order.append("Y")
        d._callbacks.remove(x_link)
        identity = (lambda r: r, (), {})
        d._callbacks.insert(0, (identity, identity))

    d.addCanceller(reshape)
    seen = catch(d)
    d.cancel()
    assert order == ["Y", "V", "W"]
    assert seen[0].check(CancelledError)


def test_cancelWhilePaused(impl):
    """
    A paused Deferred runs its cancellers and takes the CancelledError, which its callbacks see
    on unpause.
    """
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "Y")
    d.pause()
    seen = catch(d)
    d.cancel()
    assert order == ["Y", "creator"]
    assert d.called and seen == []
    d.unpause()
    assert seen[0].check(CancelledError)


# -- Twisted's API unchanged --------------------------------------------------


def test_chainDeferredDoesNotForwardCancel(impl):
    """
    As in Twisted, cancelling the Deferred chained with chainDeferred does not cancel the
    source.
    """
    order = []
    source = impl.Deferred(recorder(order, "source creator"))
    add_layer(source, order, "source Y")
    target = impl.Deferred()
    source.chainDeferred(target)
    seen = catch(target)
    target.cancel()
    assert order == []
    assert not source.called
    assert seen[0].check(CancelledError)


def test_plainCancelIsTwisted(impl):
    """
    With no cancellers in play, cancel() does what Twisted's does: creator's canceller, then
    CancelledError().
    """
    calls = []
    ours = impl.Deferred(calls.append)
    theirs = defer.Deferred(calls.append)
    results = [catch(ours), catch(theirs)]
    ours.cancel()
    theirs.cancel()
    assert calls == [ours, theirs]
    for seen in results:
        assert seen[0].check(CancelledError)
        assert seen[0].value.args == ()


def test_cancelledDeferredFailureUnhandledIsLogged(impl, captured_log):
    """
    A cancelled Deferred whose CancelledError nobody handles is reported at collection, as in
    Twisted.
    """
    d = impl.Deferred()
    d.addCanceller(print)
    d.cancel()
    del d
    failures = unhandled_failures(captured_log)
    assert len(failures) == 1 and failures[0].check(CancelledError)


# -- memory -------------------------------------------------------------------


def test_cancelledDeferredIsCollected(impl):
    """A cancelled Deferred with link cancellers and a creator's canceller does not stay alive."""

    def creator(d):
        d.errback(Failure(CancelledError("by creator")))

    d = impl.Deferred(creator)
    d.addCanceller(lambda d: d)
    d.addCallbacks(lambda r: d, canceller=lambda d: None)
    d.addErrback(lambda f: None)
    d.cancel()
    ref = weakref.ref(d)
    del d
    gc.collect()
    assert ref() is None
