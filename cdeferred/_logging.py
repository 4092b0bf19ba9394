"""Cold-path reporting shared by the C core and the pure-Python reference
(and the C coroutine driver's returnValue warning).

Both implementations call these, so a failing canceller or an unhandled error
reads the same whichever one is in use.
"""

import traceback
import warnings

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


def warnReturnValue(tb, thrown):
    """
    The deprecated ``returnValue()`` ended a coroutine driven by the C driver:
    warn, as Twisted's driver does, when it was called from a function below
    the generator instead of the generator itself.

    C{tb} is the traceback of the ``_DefGen_Return``, starting at the
    generator's frame, or at ``Failure.throwExceptionIntoGenerator``'s when the
    step threw a Failure in (C{thrown}).  Below the generator, returnValue
    takes two frames (its deprecation wrapper and itself), so any more means a
    function in between called it.
    """
    entries = []
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    if thrown:
        entries = entries[1:]
    if len(entries) <= 3:
        return
    generator, caller = entries[0], entries[-3]
    warnings.warn_explicit(
        "returnValue() in %r causing %r to exit: returnValue should only be "
        "invoked by functions decorated with inlineCallbacks"
        % (caller.tb_frame.f_code.co_name, generator.tb_frame.f_code.co_name),
        DeprecationWarning,
        caller.tb_frame.f_code.co_filename,
        caller.tb_lineno,
    )
