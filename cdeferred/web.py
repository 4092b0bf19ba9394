"""
getPage on Twisted's Agent, with a canceller on every layer.

``getPage(url)`` returns a :class:`cdeferred.ControllableDeferred` that fires
with the response body (``bytes``).  Underneath it is one inner chain, a
:class:`cdeferred.Deferred`, built in layers; each layer registers, on the third
chain, the cleanup for what it holds::

    Agent's Deferred --> [request] --> [body] --> [decode] --> [timeout] ==> ControllableDeferred (the client's)

- **request**: the Deferred of ``agent.request()``.  Its canceller cancels that
  Deferred, which makes Twisted abandon the name lookup / connection attempt,
  or abort the connection if the request was sent and the response headers
  have not arrived.
- **body**: once the headers are in, a protocol of ours reads the body into a
  Deferred.  Its canceller closes the connection (``readBody``'s cancel cannot:
  the transport an Agent response hands to its body protocol is a
  ``TransportProxyProducer``, which has no ``abortConnection``; see
  :meth:`_BodyReader.abort`).  A connection closed this way is never handed back
  to an ``HTTPConnectionPool``: the pool only takes connections whose response
  was read to the end.
- **decode**: the status check (non-2xx becomes ``twisted.web.error.Error``,
  with the body read first) and unwrapping of the redirect errors.
- **timeout** (only with ``timeout=``): a timer for the whole fetch, body
  included.  When it goes off the client's Deferred fails with
  ``twisted.internet.defer.TimeoutError`` and the inner chain is cancelled; the
  timer is cancelled on every other path (result, failure, cancel, deactivate,
  early fire).

The client's ControllableDeferred follows the inner chain.  ``d.cancel(msg)``,
``d.deactivate()`` and an early ``d.callback()``/``d.errback()`` all cancel the
inner chain, whose cancellers run last layer first; whatever failure the aborted
connection then produces is swallowed by the ControllableDeferred, so a cancelled
fetch fails with ``CancelledError(msg)`` and nothing is logged as unhandled.

Each canceller reports what it did as a ``twisted.logger`` event in the
namespace ``cdeferred.web`` (with the fields ``layer`` and ``url``), which is how
the demo shows the order of the cleanup.
"""

import hyperlink
from twisted.internet import defer
from twisted.internet.defer import TimeoutError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import error
from twisted.web.client import (
    Agent,
    BrowserLikeRedirectAgent,
    PotentialDataLoss,
    ResponseDone,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from . import ControllableDeferred, Deferred

__all__ = ["getPage", "REDIRECT_LIMIT"]

#: How many redirects the default agent follows (the old getPage's limit).
REDIRECT_LIMIT = 20

log = Logger(namespace="cdeferred.web")


# --- arguments ----------------------------------------------------------------


def _asciiURL(url):
    """The URL as the bytes Agent wants; a text URL with non-ASCII characters
    is turned into its percent-encoded URI form first."""
    if isinstance(url, bytes):
        return url
    if not isinstance(url, str):
        raise TypeError(f"url must be str or bytes, not {type(url).__name__}")
    try:
        return url.encode("ascii")
    except UnicodeEncodeError:
        return hyperlink.URL.from_text(url).to_uri().to_text().encode("ascii")


def _headerBytes(value, what, encoding):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode(encoding)
    raise TypeError(f"header {what} must be str or bytes, not {type(value).__name__}")


def _makeHeaders(headers):
    """
    A ``Headers`` from None, a ``Headers`` (used as it is: Agent copies it
    before adding Host) or a dict of name to value; a value may also be a list
    of values.  Text names are ASCII, text values are encoded as UTF-8, as
    ``Headers`` itself does.
    """
    if headers is None:
        return Headers()
    if isinstance(headers, Headers):
        return headers
    if not hasattr(headers, "items"):
        raise TypeError(f"headers must be a dict or Headers, not {type(headers).__name__}")
    result = Headers()
    for name, value in headers.items():
        rawName = _headerBytes(name, "name", "ascii")
        values = value if isinstance(value, (list, tuple)) else [value]
        result.setRawHeaders(rawName, [_headerBytes(v, "value", "utf-8") for v in values])
    return result


@implementer(IBodyProducer)
class _BytesProducer:
    """A request body that is already in memory: written in one go."""

    def __init__(self, body):
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return defer.succeed(None)

    def stopProducing(self):
        pass

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass


# --- the body layer's protocol ------------------------------------------------


class _BodyReader(Protocol):
    """
    Collects a response body and fires ``finished`` with it.  The end of the
    body is told by ``connectionLost``: ``ResponseDone`` is the normal end,
    ``PotentialDataLoss`` means the server marked the end by closing the
    connection (no Content-Length, not chunked), which the old getPage accepted
    too; anything else fails ``finished``.

    After :meth:`abort` the reader ignores everything that still arrives,
    including the ``connectionLost`` the abort itself causes.
    """

    def __init__(self):
        self.finished = Deferred()
        self.chunks = []
        self.received = 0
        self.done = False

    def dataReceived(self, data):
        if not self.done:
            self.chunks.append(data)
            self.received += len(data)

    def connectionLost(self, reason=None):
        if self.done:
            return
        self.done = True
        if reason is None or reason.check(ResponseDone, PotentialDataLoss):
            body = b"".join(self.chunks)
            self.chunks = []
            self.finished.callback(body)
        else:
            self.chunks = []
            self.finished.errback(reason)

    def abort(self):
        """
        Close the connection that delivers the body; return how (for the log),
        or None if the body was already complete.

        ``self.transport`` is the ``TransportProxyProducer`` that
        ``Response.deliverBody`` hands out (the same object as the response's
        ``_transport``).  Its public methods are the IPushProducer ones plus
        ``loseConnection()``; it has no ``abortConnection()``, which is why
        ``readBody``'s cancel only warns.  So: ``abortConnection()`` when the proxy
        offers it (a later Twisted may) or the TCP/TLS transport it proxies has
        it (reached through the proxy's ``_producer``, the only handle there is
        to it; ``HTTP11ClientProtocol``'s own cancel uses the same
        ``abortConnection()`` on that transport), else the proxy's
        ``loseConnection()``, else ``stopProducing()`` (which a transport
        implements as losing the connection).  Aborting closes at once, without
        waiting for unsent request bytes to drain.

        The client protocol then sees the connection lost mid-response, so it
        never calls the pool's quiescent callback: a half-read connection is not
        returned to an ``HTTPConnectionPool``.
        """
        if self.done:
            return None
        self.done = True
        self.chunks = []
        transport = self.transport
        if transport is None:
            return None
        abortConnection = getattr(transport, "abortConnection", None)
        if abortConnection is None:
            proxied = getattr(transport, "_producer", None)
            abortConnection = getattr(proxied, "abortConnection", None)
        if abortConnection is not None:
            abortConnection()
            return "abortConnection()"
        loseConnection = getattr(transport, "loseConnection", None)
        if loseConnection is not None:
            loseConnection()
            return "loseConnection()"
        transport.stopProducing()
        return "stopProducing()"


# --- one fetch ----------------------------------------------------------------


class _Fetch:
    """The state of one getPage call: what each layer holds, and its canceller."""

    def __init__(self, reactor, agent, method, url, headers, bodyProducer, timeout):
        self.reactor = reactor
        self.url = url
        self.textURL = url.decode("ascii", "replace")
        self.timeout = timeout
        self.timer = None
        self.response = None
        self.reader = None
        self.outer = None

        # Layer 1, the request.  Agent's Deferred (a Twisted one) delivers
        # into the inner chain; cancelling it makes Agent give up the
        # connection attempt or abort the request's connection.
        try:
            self.requestDeferred = agent.request(method, url, headers, bodyProducer)
        except Exception:
            self.requestDeferred = defer.fail()
        inner = self.inner = Deferred()
        self.requestDeferred.chainDeferred(inner)
        inner.addCanceller(self._cancelRequest)

        # Layer 2, the body: read it once the headers are in.
        inner.addCallbacks(self._readBody, canceller=self._cancelBeforeBody)

        # Layer 3, decoding: status check, redirect errors unwrapped.
        inner.addCallbacks(self._decode, self._decodeFailure, canceller=self._cancelDecode)

        # Layer 4, the timer for the whole fetch.  Added last, so on cancel it
        # goes first; if the chain already has its result, the link runs at
        # once and cancels the timer it just started.
        if timeout is not None:
            self.timer = reactor.callLater(timeout, self._timedOut)
            inner.addCallbacks(self._stopTimer, self._stopTimer, canceller=self._cancelTimer)

        self.outer = ControllableDeferred(upstream=inner)

    def _log(self, layer, text, **kw):
        log.info("{layer} layer: " + text, layer=layer, url=self.textURL, **kw)

    # layer 1: the request

    def _cancelRequest(self, inner):
        self._log(
            "request",
            "cancelling the Agent request (Agent gives up the connection "
            "attempt, or aborts the connection waiting for the response headers)",
        )
        self.requestDeferred.cancel()

    # layer 2: the body

    def _readBody(self, response):
        self.response = response
        reader = self.reader = _BodyReader()
        reader.finished.addCanceller(self._cancelBody)
        response.deliverBody(reader)
        return reader.finished

    def _cancelBeforeBody(self, inner):
        self._log("body", "no body being read yet, nothing to close")

    def _cancelBody(self, finished):
        reader = self.reader
        how = reader.abort()
        if how is None:
            self._log("body", "body already complete, nothing to close")
        else:
            expected = getattr(self.response, "length", None)
            of = f" of {expected}" if isinstance(expected, int) else ""
            self._log(
                "body",
                "closing the connection with {how} after {received}{of} body bytes",
                how=how,
                received=reader.received,
                of=of,
            )

    # layer 3: decoding

    def _decode(self, body):
        response = self.response
        if 200 <= response.code < 300:
            return body
        code = b"%d" % (response.code,)
        phrase = response.phrase or None
        if 300 <= response.code < 400:
            location = response.headers.getRawHeaders(b"location", [None])[0]
            if location is not None:
                raise error.PageRedirect(code, phrase, body, location)
        raise error.Error(code, phrase, body)

    def _decodeFailure(self, failure):
        # RedirectAgent reports a redirect it will not follow as a
        # ResponseFailed around the real reason; the old getPage raised the
        # reason itself (InfiniteRedirection, ...), so hand that on.
        if failure.check(ResponseFailed):
            reasons = failure.value.reasons
            if len(reasons) == 1 and reasons[0].check(
                error.InfiniteRedirection, error.RedirectWithNoLocation
            ):
                return reasons[0]
        return failure

    def _cancelDecode(self, inner):
        self._log("decode", "nothing decoded yet, status check dropped")

    # layer 4: the timer

    def _stopTimer(self, result):
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return result

    def _cancelTimer(self, inner):
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
            self._log("timeout", "cancelling the {timeout}s timer", timeout=self.timeout)

    def _timedOut(self):
        self.timer = None
        self._log(
            "timeout",
            "{timeout}s elapsed, failing the fetch with TimeoutError",
            timeout=self.timeout,
        )
        # An early errback: the client sees TimeoutError, the inner chain is
        # cancelled (its cancellers free the connection).
        self.outer.errback(
            Failure(TimeoutError(f"Getting {self.textURL} took longer than {self.timeout} seconds"))
        )


def getPage(
    url,
    method=b"GET",
    headers=None,
    body=None,
    *,
    agent=None,
    timeout=None,
    reactor=None,
):
    """
    Fetch ``url`` and return a :class:`cdeferred.ControllableDeferred` that
    fires with the response body as ``bytes``.

    :param url: ``str`` or ``bytes``; a text URL with non-ASCII characters is
        percent-encoded.
    :param method: ``bytes`` or ``str``.
    :param headers: a dict of ``str``/``bytes`` names to ``str``/``bytes``
        values (or lists of them), or a ``twisted.web.http_headers.Headers``.
    :param body: the request body, ``bytes``, or None.
    :param agent: the ``IAgent`` to use, as it is.  By default a new
        ``BrowserLikeRedirectAgent(Agent(reactor), redirectLimit=REDIRECT_LIMIT)``
        (redirects followed, no persistent connections).  Pass an ``Agent`` on
        your own ``HTTPConnectionPool`` to reuse connections; wrap it in a
        redirect agent to follow redirects.
    :param timeout: seconds for the whole fetch, body included; when they
        pass, the Deferred fails with ``twisted.internet.defer.TimeoutError``.
    :param reactor: the reactor; by default the global one.

    A non-2xx status fails with ``twisted.web.error.Error(code, phrase, body)``
    (``code`` as bytes, e.g. ``b"404"``), the body read first; a 3xx that was not
    followed and has a Location fails with its subclass ``PageRedirect``.
    Too many redirects fail with ``twisted.web.error.InfiniteRedirection``.

    The result is a ControllableDeferred: ``d.cancel(msg)`` fails it with
    ``CancelledError(msg)``; ``d.deactivate()`` makes it never fire; an early
    ``d.callback(x)``/``d.errback(f)`` fires it with the client's result.  In
    each case (and on timeout) the fetch is cancelled layer by layer, the
    connection is closed or never made, the timer is cancelled, and nothing is
    logged as an unhandled error.
    """
    if reactor is None:
        from twisted.internet import reactor
    if isinstance(method, str):
        method = method.encode("ascii")
    elif not isinstance(method, bytes):
        raise TypeError(f"method must be bytes or str, not {type(method).__name__}")
    if body is not None and not isinstance(body, bytes):
        raise TypeError(f"body must be bytes or None, not {type(body).__name__}")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, not {timeout!r}")
    url = _asciiURL(url)
    headers = _makeHeaders(headers)
    bodyProducer = None if body is None else _BytesProducer(body)
    if agent is None:
        agent = BrowserLikeRedirectAgent(Agent(reactor), redirectLimit=REDIRECT_LIMIT)
    return _Fetch(reactor, agent, method, url, headers, bodyProducer, timeout).outer
