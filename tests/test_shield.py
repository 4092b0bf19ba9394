"""
shield(d): a Deferred that follows d but does not pass cancellation to it (DESIGN.md section 3.4).
"""

from twisted.internet import defer
from twisted.internet.defer import CancelledError

from cdeferred._pydeferred import make_shield
from cancel_helpers import add_layer, recorder, unhandled_failures


def catch(deferred):
    """Collect what reaches the end of ``deferred``'s chain, handling failures."""
    seen = []
    deferred.addBoth(seen.append)
    return seen


def test_shieldIsADeferredOfTheImplementation(impl):
    """shield returns a new Deferred with cancellers, not the one it protects."""
    d = impl.Deferred()
    shielded = impl.shield(d)
    assert shielded is not d
    assert isinstance(shielded, defer.Deferred)
    assert hasattr(shielded, "addCanceller")


def test_resultForwarded(impl):
    """d's result reaches the shield's callbacks."""
    d = impl.Deferred()
    shielded = impl.shield(d)
    seen = catch(shielded)
    d.callback("committed")
    assert seen == ["committed"]


def test_failureForwardedAndHandledOnce(impl, captured_log):
    """d's failure reaches the shield and is reported only where it ends up unhandled."""
    d = impl.Deferred()
    shielded = impl.shield(d)
    seen = catch(shielded)
    d.errback(KeyError("rollback"))
    assert seen[0].check(KeyError)
    assert d.result is None
    del d, shielded
    assert unhandled_failures(captured_log) == []


def test_alreadyFiredDeferred(impl):
    """Shielding a Deferred that already has a result gives a shield that has it too."""
    d = impl.Deferred()
    d.callback(7)
    assert catch(impl.shield(d)) == [7]


def test_shieldsTwistedDeferred(impl):
    """A plain Twisted Deferred can be shielded."""
    order = []
    d = defer.Deferred(recorder(order, "creator"))
    shielded = impl.shield(d)
    seen = catch(shielded)
    shielded.cancel()
    assert order == []
    d.callback("done")
    assert seen[0].check(CancelledError)


def test_cancellingShieldDoesNotCancelDeferred(impl):
    """Cancelling the shield fails it with CancelledError(msg) but runs none of d's cancellers."""
    order = []
    d = impl.Deferred(recorder(order, "creator"))
    add_layer(d, order, "W")
    shielded = impl.shield(d)
    add_layer(shielded, order, "client")
    seen = catch(shielded)
    shielded.cancel("don't wait")
    assert order == ["client"]
    assert not d.called
    assert seen[0].check(CancelledError)
    assert seen[0].value.args == ("don't wait",)


def test_laterResultNotLost(impl):
    """After the shield was cancelled, d's result stays on d for callbacks added to it later."""
    d = impl.Deferred()
    shielded = impl.shield(d)
    catch(shielded)
    shielded.cancel()
    d.callback("committed anyway")
    assert catch(d) == ["committed anyway"]


def test_laterFailureStillReportedUnhandled(impl, captured_log):
    """
    After the shield was cancelled, a failure of d that nobody handles is logged when d is
    collected.
    """
    d = impl.Deferred()
    shielded = impl.shield(d)
    catch(shielded)
    shielded.cancel()
    d.errback(KeyError("commit failed"))
    del d
    failures = unhandled_failures(captured_log)
    assert len(failures) == 1 and failures[0].check(KeyError)


def test_makeShieldUsesGivenClass(impl):
    """make_shield builds a shield whose Deferreds are of the class it was given."""

    class Marked(impl.Deferred):
        pass

    shielded = make_shield(Marked)(impl.Deferred())
    assert type(shielded) is Marked
