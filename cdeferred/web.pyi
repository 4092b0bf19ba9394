# Type stubs for cdeferred.web.

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.web.http_headers import Headers
from typing_extensions import TypeAlias

from . import ControllableDeferred

__all__ = ["getPage", "REDIRECT_LIMIT"]

# How many redirects the default agent follows.
REDIRECT_LIMIT: int

# One header value, or several (a list or a tuple) for a repeated header.
_HeaderValue: TypeAlias = (
    str | bytes | list[str] | list[bytes] | list[str | bytes] | tuple[str | bytes, ...]
)

class _Agent(Protocol):
    # What getPage needs of an agent: IAgent's request().  A structural type,
    # so Twisted's Agent, its wrappers and typed agents of one's own all fit,
    # with or without the mypy-zope plugin.
    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = ...,
        bodyProducer: Any = ...,
    ) -> Deferred[Any]: ...

def getPage(
    url: str | bytes,
    method: bytes | str = b"GET",
    headers: Mapping[str, _HeaderValue] | Mapping[bytes, _HeaderValue] | Headers | None = None,
    body: bytes | None = None,
    *,
    agent: _Agent | None = None,
    timeout: float | None = None,
    # A reactor providing IReactorTime and what the agent needs to connect
    # (IReactorTCP, IReactorSSL for https).  Left open: to a type checker
    # twisted.internet.reactor is a module, not an object with those methods.
    reactor: Any = None,
) -> ControllableDeferred[bytes]:
    """Fetch ``url``; the ControllableDeferred fires with the body bytes."""
