"""ControllableDeferred: the cut point the client owns (DESIGN.md section 3.3)."""

import gc
import weakref

import pytest
from twisted.internet import defer, task
from twisted.internet.defer import CancelledError
from twisted.python.failure import NoCurrentExceptionError

from cancel_helpers import add_layer, recorder, unhandled_failures


def catch(deferred):
    """Collect what reaches the end of ``deferred``'s chain, handling failures."""
    seen = []
    deferred.addBoth(seen.append)
    return seen


def layered_upstream(deferred_class, order):
    """A Deferred as the client gets it from Y: made by W's responder, with layers W, X, Y."""
    upstream = deferred_class(recorder(order, "creator"))
    for layer in "WXY":
        add_layer(upstream, order, layer)
    return upstream


# -- following upstream -------------------------------------------------------


def test_upstreamResultFlowsIn(impl):
    """
    The upstream's result reaches the ControllableDeferred's callbacks, and upstream is left
    with None.
    """
    upstream = impl.Deferred()
    cd = impl.ControllableDeferred(upstream)
    assert cd._chainedTo is upstream
    seen = catch(cd)
    upstream.callback("result")
    assert seen == ["result"]
    assert upstream.result is None
    assert cd._chainedTo is None


def test_upstreamFailureFlowsInAndIsHandledThere(impl, captured_log):
    """
    The upstream's failure reaches the ControllableDeferred, and upstream has nothing left to
    report.
    """
    upstream = impl.Deferred()
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    upstream.errback(KeyError("lost"))
    assert seen[0].check(KeyError)
    assert upstream.result is None
    del upstream, cd
    assert unhandled_failures(captured_log) == []


def test_upstreamAlreadyFiredDeliversAtOnce(impl):
    """An upstream that already has a result fires the ControllableDeferred while it is made."""
    upstream = impl.Deferred()
    upstream.callback(5)
    cd = impl.ControllableDeferred(upstream)
    assert not cd.active
    assert catch(cd) == [5]


def test_twistedUpstream(impl):
    """
    A plain Twisted Deferred works as upstream, for results and for the cut (its creator's
    canceller runs).
    """
    upstream = defer.Deferred()
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    upstream.callback("from twisted")
    assert seen == ["from twisted"]

    order = []
    upstream = defer.Deferred(recorder(order, "twisted creator"))
    upstream.addErrback(lambda f: order.append(f.value.args))
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    cd.cancel("bye")
    assert order == ["twisted creator", ()]
    assert seen[0].value.args == ("bye",)


@pytest.mark.parametrize("bad", [3, "upstream", object()])
def test_upstreamMustBeADeferred(impl, bad):
    """Something that is not a Deferred as upstream raises TypeError."""
    with pytest.raises(TypeError):
        impl.ControllableDeferred(bad)


def test_cancellerMustBeCallable(impl):
    """A creator's canceller that cannot be called raises TypeError."""
    with pytest.raises(TypeError):
        impl.ControllableDeferred(canceller=3)


# -- the cut: early callback / errback ----------------------------------------


def test_earlyCallbackCutsAndCancelsUpstream(impl):
    """
    callback() before upstream delivered fires now and cancels upstream, whose layers free
    their resources.
    """
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    cd.callback("early")
    assert seen == ["early"]
    assert order == ["Y", "X", "W", "creator"]
    assert upstream.called


def test_earlyErrbackCutsAndCancelsUpstream(impl):
    """
    errback() before upstream delivered fails now with the client's failure and cancels
    upstream.
    """
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    cd.errback(ValueError("client says no"))
    assert seen[0].check(ValueError)
    assert order == ["Y", "X", "W", "creator"]


def test_clientSeesItsResultBeforeUpstreamIsCancelled(impl):
    """
    On the cut the client's callbacks run before upstream's cancellers, with the client's
    result.
    """
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream)
    cd.addCallback(order.append)
    cd.callback("early")
    assert order == ["early", "Y", "X", "W", "creator"]


def test_laterUpstreamFailureSwallowed(impl, captured_log):
    """
    A failure upstream delivers after the cut is consumed: no AlreadyCalledError, no unhandled-
    error log.
    """
    upstream = impl.Deferred()
    upstream.pause()
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    cd.callback("early")
    upstream.unpause()
    assert seen == ["early"]
    assert upstream.result is None
    del upstream, cd
    assert unhandled_failures(captured_log) == []


def test_laterUpstreamResultSwallowed(impl, captured_log):
    """
    A result upstream delivers after the cut (here from its creator's canceller) is consumed
    silently.
    """
    upstream = impl.Deferred(lambda d: d.callback("late"))
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    cd.errback(KeyError("early"))
    assert len(seen) == 1 and seen[0].check(KeyError)
    assert upstream.result is None
    del upstream, cd
    assert unhandled_failures(captured_log) == []


def test_laterTwistedUpstreamFailureSwallowed(impl, captured_log):
    """A Twisted upstream's late CancelledError after the cut is consumed too."""
    upstream = defer.Deferred()
    upstream.pause()
    cd = impl.ControllableDeferred(upstream)
    catch(cd)
    cd.callback("early")
    upstream.unpause()
    del upstream, cd
    assert unhandled_failures(captured_log) == []


def test_errbackWithoutExceptionChangesNothing(impl):
    """
    errback() with no argument outside an except block raises, and the Deferred still follows
    upstream.
    """
    upstream = impl.Deferred()
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    with pytest.raises(NoCurrentExceptionError):
        cd.errback()
    assert cd.active
    upstream.callback("still connected")
    assert seen == ["still connected"]


# -- first fire wins ----------------------------------------------------------


def test_secondFireIsConsumed(impl):
    """After the first callback, further callback() and errback() calls are consumed silently."""
    cd = impl.ControllableDeferred()
    seen = catch(cd)
    cd.callback(1)
    cd.callback(2)
    cd.errback(KeyError())
    cd.errback()
    assert seen == [1]


def test_firstFireWinsWithoutUpstream(impl):
    """Without upstream, racing producers do not raise: the first errback wins."""
    cd = impl.ControllableDeferred()
    seen = catch(cd)
    cd.errback(KeyError("first"))
    cd.callback("second")
    assert seen[0].check(KeyError)


# -- active -------------------------------------------------------------------


def test_active(impl):
    """active is True until the Deferred fires, is cancelled or is deactivated."""
    fired, cancelled, deactivated = (impl.ControllableDeferred() for _ in range(3))
    assert fired.active and cancelled.active and deactivated.active
    fired.callback(None)
    catch(cancelled)
    cancelled.cancel()
    deactivated.deactivate()
    assert not (fired.active or cancelled.active or deactivated.active)


def test_activeIsReadOnly(impl):
    """active cannot be assigned."""
    cd = impl.ControllableDeferred()
    with pytest.raises(AttributeError):
        cd.active = False


# -- deactivate ---------------------------------------------------------------


def test_deactivateCancelsEverythingInOrderButNeverFires(impl):
    """
    deactivate() runs own link cancellers, own creator's canceller, then upstream's, and no
    callback runs.
    """
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream, canceller=recorder(order, "cd creator"))
    add_layer(cd, order, "client")
    seen = catch(cd)
    cd.deactivate()
    assert order == ["client", "cd creator", "Y", "X", "W", "creator"]
    assert seen == []
    assert not cd.called and not cd.active


def test_deactivatedConsumesEverythingLater(impl, captured_log):
    """After deactivate(), callback, errback and upstream deliveries are consumed silently."""
    upstream = impl.Deferred()
    upstream.pause()
    cd = impl.ControllableDeferred(upstream)
    seen = catch(cd)
    cd.deactivate()
    cd.callback(1)
    cd.errback(KeyError())
    upstream.unpause()
    assert seen == []
    assert not cd.called
    del upstream, cd
    assert unhandled_failures(captured_log) == []


def test_deactivateIsIdempotent(impl):
    """
    A second deactivate(), a deactivate() after firing and a cancel() after deactivate() do
    nothing.
    """
    order = []
    cd = impl.ControllableDeferred(canceller=recorder(order, "creator"))
    add_layer(cd, order, "client")
    cd.deactivate()
    cd.deactivate()
    cd.cancel()
    assert order == ["client", "creator"]
    assert not cd.called

    fired = impl.ControllableDeferred(canceller=recorder(order, "fired creator"))
    fired.callback("done")
    fired.deactivate()
    assert catch(fired) == ["done"]
    assert order == ["client", "creator"]


# -- cancel -------------------------------------------------------------------


def test_cancelOrderOwnLinksCreatorThenUpstream(impl):
    """
    cancel() runs the client's link cancellers, its creator's canceller, then upstream's, then
    errbacks with CancelledError(msg).
    """
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    upstream.addErrback(lambda f: order.append(("upstream saw", f.value.args)))
    cd = impl.ControllableDeferred(upstream, canceller=recorder(order, "cd creator"))
    add_layer(cd, order, "client")
    seen = catch(cd)
    cd.cancel("timeout")
    assert order == [
        "client",
        "cd creator",
        "Y",
        "X",
        "W",
        "creator",
        ("upstream saw", ("timeout",)),
    ]
    assert seen[0].check(CancelledError)
    assert seen[0].value.args == ("timeout",)


def test_cancelOwnCancellerFiringIsAnEarlyFire(impl):
    """
    A client canceller that fires the ControllableDeferred stops its creator's canceller and
    still cancels upstream.
    """
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream, canceller=recorder(order, "cd creator"))
    cd.addCanceller(lambda d: d.callback("fallback"))
    seen = catch(cd)
    cd.cancel()
    assert seen == ["fallback"]
    assert order == ["Y", "X", "W", "creator"]


def test_cancelCreatorCancellerFiringIsAnEarlyFire(impl):
    """A creator's canceller that fires the ControllableDeferred still gets upstream cancelled."""
    order = []
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream, canceller=lambda d: d.errback(KeyError("mine")))
    seen = catch(cd)
    cd.cancel()
    assert seen[0].check(KeyError)
    assert order == ["Y", "X", "W", "creator"]


def test_cancelWithoutUpstream(impl):
    """
    Without upstream, cancel() errbacks with CancelledError and a later responder callback is
    consumed.
    """
    cd = impl.ControllableDeferred()
    seen = catch(cd)
    cd.cancel()
    cd.callback("late")
    cd.callback("later")
    assert len(seen) == 1 and seen[0].check(CancelledError)
    assert seen[0].value.args == ()


def test_cancelWhileWaitingOnInner(impl):
    """
    A fired ControllableDeferred waiting on an inner Deferred follows the generic rule: the
    inner is cancelled.
    """
    order = []
    inner = impl.Deferred(recorder(order, "inner creator"))
    cd = impl.ControllableDeferred()
    cd.addCallback(lambda _: inner)
    add_layer(cd, order, "client")
    cd.callback(None)
    seen = catch(cd)
    cd.cancel("stop")
    assert order == ["client", "inner creator"]
    assert seen[0].value.args == ("stop",)


# -- addTimeout ---------------------------------------------------------------


def test_addTimeoutCancelsUpstreamLayers(impl):
    """
    A ControllableDeferred timing out cancels every upstream layer and the client gets
    TimeoutError.
    """
    order = []
    clock = task.Clock()
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream)
    cd.addTimeout(5, clock)
    seen = catch(cd)
    clock.advance(4)
    assert order == [] and seen == []
    clock.advance(1)
    assert order == ["Y", "X", "W", "creator"]
    assert seen[0].check(defer.TimeoutError)
    assert clock.getDelayedCalls() == []


def test_addTimeoutNotReached(impl):
    """A result before the timeout cancels nothing and leaves no pending timer."""
    order = []
    clock = task.Clock()
    upstream = layered_upstream(impl.Deferred, order)
    cd = impl.ControllableDeferred(upstream)
    cd.addTimeout(5, clock)
    seen = catch(cd)
    upstream.callback("in time")
    assert seen == ["in time"]
    assert order == []
    assert clock.getDelayedCalls() == []


# -- memory -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["cancel", "deactivate", "callback"])
def test_cutControllableDeferredIsCollected(impl, how):
    """
    A ControllableDeferred and its upstream do not stay alive after the cut, whichever way it
    was made.
    """
    upstream = impl.Deferred()
    add_layer(upstream, [], "W")
    cd = impl.ControllableDeferred(upstream, canceller=lambda d: None)
    cd.addErrback(lambda f: None)
    getattr(cd, how)(*(["early"] if how == "callback" else []))
    refs = [weakref.ref(cd), weakref.ref(upstream)]
    del cd, upstream
    gc.collect()
    assert [ref() for ref in refs] == [None, None]
