"""Cold-path reporting shared by the C core and the pure-Python reference.

Both implementations call these, so a failing canceller or an unhandled error
reads the same whichever one is in use.
"""

from twisted.logger import Logger

log = Logger(namespace="cdeferred")


def logCancellerFailure(failure, canceller, deferred):
    """
    Report a link canceller that raised.  Cancellation goes on with the next
    canceller: one layer failing to clean up must not stop the others, and the
    error must not vanish silently either (compare twisted/twisted#6676).
    """
    log.failure(
        "Canceller {canceller!r} of {deferred!r} raised; cancellation goes on",
        failure,
        canceller=canceller,
        deferred=deferred,
    )
