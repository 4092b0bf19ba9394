"""Helpers shared by the cancellation, ControllableDeferred and shield tests."""

import gc


def unhandled_failures(events):
    """
    The failures reported as "Unhandled error in Deferred" among captured log
    events, after a collection so every dropped Deferred has been finalised.
    """
    gc.collect()
    return [
        event["log_failure"]
        for event in events
        if "log_failure" in event and event.get("log_namespace") != "cdeferred"
    ]


def canceller_failures(events):
    """The failures of link cancellers reported by cdeferred._logging."""
    return [
        event["log_failure"]
        for event in events
        if "log_failure" in event and event.get("log_namespace") == "cdeferred"
    ]


def recorder(order, name):
    """A canceller that records ``name`` in ``order`` when called."""

    def canceller(deferred, *args, **kwargs):
        order.append(name)

    return canceller


def add_layer(deferred, order, name):
    """
    Do what one layer (W, X or Y of DESIGN section 2) does: add its callback,
    which carries no canceller, then a canceller that records ``name`` when
    the layer frees what it holds.
    """
    deferred.addCallback(lambda result: result)
    return deferred.addCanceller(recorder(order, name))
