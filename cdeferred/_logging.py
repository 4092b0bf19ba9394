"""Cold-path reporting shared by the C core and the pure-Python reference.

Both implementations call these, so a failing canceller or an unhandled error
reads the same whichever one is in use.
"""

import traceback

from twisted.internet.defer import DebugInfo
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


def recordCreator():
    """
    A DebugInfo holding the stack that created a Deferred, for debug mode.
    Called from C, so the last frame here is this helper's own: drop it.
    """
    info = DebugInfo()
    info.creator = traceback.format_stack()[:-1]
    return info


def recordInvoker(info):
    """Store in C{info} the stack that fired a Deferred, for debug mode."""
    info.invoker = traceback.format_stack()[:-1]
