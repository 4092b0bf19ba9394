"""
The C implementation: Python classes over the C cores.

``Deferred`` lists the C core first, so its methods win in the MRO, and
Twisted's Deferred second, so instances *are* Twisted Deferreds: isinstance
holds, and Twisted's ``__init_subclass__`` registers the class in
``_DEFERRED_SUBCLASSES``, which is how Twisted's own chaining, inlineCallbacks
and ensureDeferred recognise a Deferred.
"""

from twisted.internet import defer

from ._cdeferred import ControllableCore, DeferredCore
from ._pydeferred import make_shield


class Deferred(DeferredCore, defer.Deferred):
    __doc__ = defer.Deferred.__doc__


class ControllableDeferred(ControllableCore, Deferred):
    """
    A Deferred the client controls: fire it early, deactivate() it, or cancel()
    it; in each case the upstream Deferred it follows is cancelled, and what
    upstream delivers afterwards is swallowed.
    """


Deferred.__module__ = ControllableDeferred.__module__ = "cdeferred"
shield = make_shield(Deferred)
