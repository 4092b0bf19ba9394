"""
cdeferred.web.getPage against a real twisted.web server on 127.0.0.1.

No mocks on the network path: a Site listens on a loopback port, getPage talks
to it through Twisted's Agent, and the global reactor is driven in-process.

The reactor goes through the lifecycle ``reactor.run()`` gives it, only driven
by hand: ``startRunning()`` once for this module (Agent resolves names on the
reactor's thread pool, which starts only with the reactor), then ``iterate()``
until what a test waits for happens or a deadline passes, and at the end of the
module ``stop()`` and iterate until the shutdown has run (which stops the thread
pool).  No extra dependency (pytest-twisted) is needed.

After every test the ``server`` fixture checks that the reactor is clean: no
client TCP connection left in the reactor, the server saw every connection
closed, no DelayedCall pending once the server stopped listening, and no
failure logged (in particular no "Unhandled error in Deferred").
"""

import gc
import json
import os
import subprocess
import sys
import time

import pytest
from twisted.internet import defer, tcp
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web import error, resource, server
from twisted.web.client import Agent, BrowserLikeRedirectAgent, HTTPConnectionPool
from twisted.web.http_headers import Headers

import cdeferred
from cdeferred.web import REDIRECT_LIMIT, getPage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BODY = b"hello from the test server\n"
BIG = bytes(range(256)) * 1024  # 256 KiB: arrives in many reads
CHUNK = b"x" * 100
CHUNK_INTERVAL = 0.05
CHUNKS = 100  # a streamed body takes about 5 s: tests interrupt it long before


# --- driving the reactor --------------------------------------------------------


def spin(reactor, predicate, timeout=5.0, what="the condition"):
    """Iterate the reactor until ``predicate()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        reactor.iterate(0.005)


def spin_for(reactor, seconds):
    """Iterate the reactor for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reactor.iterate(0.005)


def outcome(reactor, d, timeout=5.0):
    """Wait for ``d`` and return its result or Failure (consuming the failure)."""
    box = []
    d.addBoth(box.append)
    spin(reactor, lambda: box, timeout, "the Deferred to fire")
    return box[0]


def success(reactor, d, timeout=5.0):
    result = outcome(reactor, d, timeout)
    if isinstance(result, Failure):
        raise AssertionError(f"expected a result, got {result.getTraceback()}")
    return result


def failure(reactor, d, timeout=5.0):
    result = outcome(reactor, d, timeout)
    assert isinstance(result, Failure), f"expected a failure, got {result!r}"
    return result


@pytest.fixture(scope="module")
def reactor():
    from twisted.internet import reactor

    if not reactor.running:
        reactor.startRunning(installSignalHandlers=False)
        spin(reactor, lambda: reactor.running, what="the reactor to start")
    yield reactor
    stopped = []
    reactor.addSystemEventTrigger("after", "shutdown", stopped.append, True)
    reactor.stop()
    spin(reactor, lambda: stopped, 10, "the reactor to shut down")


# --- the server -----------------------------------------------------------------


class Page(resource.Resource):
    isLeaf = True

    def __init__(self, body, code=200):
        super().__init__()
        self.body = body
        self.code = code

    def render(self, request):
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"text/plain")
        return self.body


class Redirect(resource.Resource):
    isLeaf = True

    def __init__(self, location):
        super().__init__()
        self.location = location
        self.requests = 0

    def render(self, request):
        self.requests += 1
        request.setResponseCode(302)
        request.setHeader(b"location", self.location)
        return b"moved"


class Echo(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        headers = {
            name.decode("latin-1").lower(): [v.decode("latin-1") for v in values]
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        return json.dumps(
            {
                "method": request.method.decode("ascii"),
                "path": request.uri.decode("ascii"),
                "headers": headers,
                "body": request.content.read().decode("latin-1"),
            }
        ).encode("ascii")


class Hang(resource.Resource):
    """Never sends the response headers; notes when the client goes away."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = 0
        self.lost = 0

    def render(self, request):
        self.requests += 1

        def lost(reason):
            self.lost += 1

        request.notifyFinish().addErrback(lost)
        return server.NOT_DONE_YET


class Stream(resource.Resource):
    """Sends CHUNKS chunks, one every CHUNK_INTERVAL; stops its timer as soon as
    the client goes away, so it leaves nothing pending itself."""

    isLeaf = True

    def __init__(self, reactor):
        super().__init__()
        self.reactor = reactor
        self.requests = 0
        self.written = 0
        self.lost = 0

    def render(self, request):
        self.requests += 1
        state = {"call": None, "n": 0}

        def tick():
            state["call"] = None
            request.write(CHUNK)
            self.written += 1
            state["n"] += 1
            if state["n"] < CHUNKS:
                state["call"] = self.reactor.callLater(CHUNK_INTERVAL, tick)
            else:
                request.finish()

        def lost(reason):
            self.lost += 1
            if state["call"] is not None and state["call"].active():
                state["call"].cancel()

        request.notifyFinish().addErrback(lost)
        tick()
        return server.NOT_DONE_YET


class TrackingFactory(WrappingFactory):
    """Counts the server's connections: ``opened`` in total, ``protocols`` open now."""

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self.opened = 0

    def registerProtocol(self, p):
        self.opened += 1
        super().registerProtocol(p)

    @property
    def open(self):
        return len(self.protocols)


class Server:
    def __init__(self, reactor):
        self.reactor = reactor
        root = resource.Resource()
        self.hang = Hang()
        self.stream = Stream(reactor)
        self.loop = Redirect(b"/loop")
        self.redirect = Redirect(b"/body")
        root.putChild(b"body", Page(BODY))
        root.putChild(b"big", Page(BIG))
        root.putChild(b"missing", Page(b"no such page here", 404))
        root.putChild(b"teapot", Page(b"short and stout", 418))
        root.putChild(b"redirect", self.redirect)
        root.putChild(b"tohang", Redirect(b"/hang"))
        root.putChild(b"loop", self.loop)
        root.putChild(b"echo", Echo())
        root.putChild(b"hang", self.hang)
        root.putChild(b"stream", self.stream)
        self.factory = TrackingFactory(server.Site(root))
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.base = "http://127.0.0.1:%d/" % (self.port.getHost().port,)

    def url(self, path):
        return self.base + path

    def wait_closed(self, timeout=1.0):
        """The server sees every connection closed within ``timeout``."""
        spin(self.reactor, lambda: self.factory.open == 0, timeout, "the server to see the connection closed")


def client_connections(reactor):
    return [
        s for s in set(reactor.getReaders()) | set(reactor.getWriters()) if isinstance(s, tcp.Client)
    ]


def failures_logged(events):
    return [e for e in events if "log_failure" in e or e.get("isError")]


def layer_events(events, layer=None):
    return [
        e
        for e in events
        if e.get("log_namespace") == "cdeferred.web" and (layer is None or e.get("layer") == layer)
    ]


@pytest.fixture
def srv(reactor, captured_log):
    s = Server(reactor)
    yield s
    # Every connection closed, on both sides.
    s.wait_closed(2.0)
    spin(reactor, lambda: not client_connections(reactor), 2.0, "client connections to close")
    # Stop the server, then nothing may be left pending.
    stopped = defer.maybeDeferred(s.port.stopListening)
    spin(reactor, lambda: stopped.called, 2.0, "the port to stop")
    spin_for(reactor, 0.02)
    assert reactor.getDelayedCalls() == []
    gc.collect()
    spin_for(reactor, 0.02)
    assert failures_logged(captured_log) == []


# --- fetching -------------------------------------------------------------------


def test_returns_controllable_deferred(reactor, srv):
    d = getPage(srv.url("body"))
    assert isinstance(d, cdeferred.ControllableDeferred)
    assert d.active
    assert success(reactor, d) == BODY
    assert not d.active


def test_body_str_and_bytes_url(reactor, srv):
    assert success(reactor, getPage(srv.url("body"))) == BODY
    assert success(reactor, getPage(srv.url("big").encode("ascii"))) == BIG
    assert srv.factory.opened == 2


def test_not_found_is_error_with_status_and_body(reactor, srv):
    f = failure(reactor, getPage(srv.url("missing")))
    assert f.check(error.Error)
    assert f.value.status == b"404"
    assert f.value.message == b"Not Found"
    assert f.value.response == b"no such page here"


def test_other_non_2xx_is_error(reactor, srv):
    f = failure(reactor, getPage(srv.url("teapot")))
    assert f.check(error.Error)
    assert f.value.status == b"418"
    assert f.value.response == b"short and stout"


def test_redirect_followed(reactor, srv):
    assert success(reactor, getPage(srv.url("redirect"))) == BODY
    assert srv.redirect.requests == 1


def test_redirect_limit(reactor, srv):
    f = failure(reactor, getPage(srv.url("loop")))
    assert f.check(error.InfiniteRedirection)
    assert srv.loop.requests == REDIRECT_LIMIT + 1


def test_redirect_limit_of_a_given_agent(reactor, srv):
    agent = BrowserLikeRedirectAgent(Agent(reactor), redirectLimit=2)
    f = failure(reactor, getPage(srv.url("loop"), agent=agent))
    assert f.check(error.InfiniteRedirection)
    assert srv.loop.requests == 3


def test_redirect_not_followed_by_a_plain_agent(reactor, srv):
    f = failure(reactor, getPage(srv.url("redirect"), agent=Agent(reactor)))
    assert f.check(error.PageRedirect)
    assert f.value.status == b"302"
    assert f.value.location == b"/body"


def test_post_with_body_and_headers(reactor, srv):
    d = getPage(
        srv.url("echo?x=1"),
        method=b"POST",
        headers={"X-Test": "t\u00e9st", b"Content-Type": b"text/x-thing", "X-Multi": ["a", b"b"]},
        body=b"payload \x00\xff",
    )
    echoed = json.loads(success(reactor, d))
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/echo?x=1"
    assert echoed["body"] == "payload \x00\xff"
    assert echoed["headers"]["x-test"] == ["t\u00e9st".encode("utf-8").decode("latin-1")]
    assert echoed["headers"]["content-type"] == ["text/x-thing"]
    assert echoed["headers"]["x-multi"] == ["a", "b"]
    assert echoed["headers"]["content-length"] == [str(len(b"payload \x00\xff"))]


def test_headers_object_and_str_method(reactor, srv):
    headers = Headers({b"X-Test": [b"1"]})
    echoed = json.loads(success(reactor, getPage(srv.url("echo"), method="PUT", headers=headers, body=b"")))
    assert echoed["method"] == "PUT"
    assert echoed["headers"]["x-test"] == ["1"]
    assert headers.getRawHeaders(b"host") is None  # the caller's Headers left alone


def test_bad_arguments(reactor, srv):
    with pytest.raises(TypeError):
        getPage(srv.url("body"), body="text")
    with pytest.raises(TypeError):
        getPage(srv.url("body"), headers={"X": 1})
    with pytest.raises(TypeError):
        getPage(12)
    with pytest.raises(ValueError):
        getPage(srv.url("body"), timeout=-1)
    assert srv.factory.opened == 0


def test_connection_refused_is_reported(reactor, srv):
    # A port that was listening a moment ago and is not any more.
    port = reactor.listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")
    number = port.getHost().port
    stopped = defer.maybeDeferred(port.stopListening)
    spin(reactor, lambda: stopped.called)
    f = failure(reactor, getPage(f"http://127.0.0.1:{number}/", timeout=5))
    assert f.check(Exception)
    assert not f.check(CancelledError, TimeoutError)


# --- interrupting a fetch -------------------------------------------------------


ACTIONS = ["cancel", "deactivate", "callback", "errback"]


def interrupt(d, action):
    if action == "cancel":
        d.cancel("stop it")
    elif action == "deactivate":
        d.deactivate()
    elif action == "callback":
        d.callback(b"from the cache")
    elif action == "errback":
        d.errback(ValueError("the client's own error"))
    else:
        raise ValueError(action)


def check_interrupted(reactor, d, action):
    """The client sees what the action says, never the aborted connection's error."""
    if action == "deactivate":
        spin_for(reactor, 0.1)
        assert not d.called
        assert not d.active
        return
    result = outcome(reactor, d)
    if action == "cancel":
        assert isinstance(result, Failure)
        assert type(result.value) is CancelledError
        assert result.value.args == ("stop it",)
    elif action == "callback":
        assert result == b"from the cache"
    else:
        assert isinstance(result, Failure)
        assert result.check(ValueError)
        assert result.value.args == ("the client's own error",)


@pytest.mark.parametrize("action", ACTIONS)
def test_interrupt_before_connect(reactor, srv, captured_log, action):
    d = getPage(srv.url("hang"))
    interrupt(d, action)
    check_interrupted(reactor, d, action)
    # The request layer's canceller gave up the connection attempt: nothing
    # reaches the server, not even once the name lookup has finished.
    assert [e["layer"] for e in layer_events(captured_log)] == ["decode", "body", "request"]
    spin_for(reactor, 0.3)
    assert srv.factory.opened == 0
    assert srv.hang.requests == 0


@pytest.mark.parametrize("action", ACTIONS)
def test_interrupt_waiting_for_headers(reactor, srv, captured_log, action):
    d = getPage(srv.url("hang"))
    spin(reactor, lambda: srv.hang.requests == 1, what="the request to arrive")
    spin_for(reactor, 0.02)
    assert srv.factory.open == 1
    interrupt(d, action)
    check_interrupted(reactor, d, action)
    srv.wait_closed(1.0)
    assert srv.hang.lost == 1
    assert [e["layer"] for e in layer_events(captured_log)] == ["decode", "body", "request"]


@pytest.mark.parametrize("action", ACTIONS)
def test_interrupt_mid_body(reactor, srv, captured_log, action):
    d = getPage(srv.url("stream"))
    spin(reactor, lambda: srv.stream.written >= 3, what="some chunks to be sent")
    spin_for(reactor, 0.02)
    assert not d.called and srv.factory.open == 1
    interrupt(d, action)
    check_interrupted(reactor, d, action)
    srv.wait_closed(1.0)
    assert srv.stream.lost == 1
    assert srv.stream.written < CHUNKS
    events = layer_events(captured_log)
    # The request link has run (its canceller went with it); the body layer
    # closes the connection it is reading from.
    assert [e["layer"] for e in events] == ["decode", "body"]
    assert events[1]["received"] >= len(CHUNK)
    assert events[1]["how"] in ("abortConnection()", "loseConnection()")


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("iterations", range(0, 12))
def test_interrupt_after_n_iterations(reactor, srv, action, iterations):
    """Whatever state the fetch reached (name lookup, connecting, request sent,
    headers or body in), an interruption leaves everything clean (checked by
    the fixture)."""
    d = getPage(srv.url("stream") if iterations % 2 else srv.url("hang"))
    for _ in range(iterations):
        reactor.iterate(0.001 * iterations)
    if not d.called:
        interrupt(d, action)
        check_interrupted(reactor, d, action)
    else:
        outcome(reactor, d)
    srv.wait_closed(1.0)


def test_cancel_while_following_a_redirect(reactor, srv, captured_log):
    d = getPage(srv.url("tohang"))
    spin(reactor, lambda: srv.hang.requests == 1, what="the redirected request")
    d.cancel("stop it")
    check_interrupted(reactor, d, "cancel")
    srv.wait_closed(1.0)
    assert srv.hang.lost == 1
    assert srv.factory.opened == 2
    assert [e["layer"] for e in layer_events(captured_log)] == ["decode", "body", "request"]


def test_cancel_without_message(reactor, srv):
    d = getPage(srv.url("hang"))
    spin(reactor, lambda: srv.hang.requests == 1)
    d.cancel()
    f = failure(reactor, d)
    assert type(f.value) is CancelledError and f.value.args == ()
    srv.wait_closed(1.0)


def test_cancel_after_result_does_nothing(reactor, srv, captured_log):
    d = getPage(srv.url("body"))
    box = []
    d.addCallback(box.append)
    spin(reactor, lambda: box)
    d.cancel("too late")
    assert box == [BODY]
    assert layer_events(captured_log) == []


def test_client_cancellers_run_first(reactor, srv, captured_log):
    """The client's own layer (cancellers on the ControllableDeferred) is cleaned
    up before getPage's layers."""
    order = []
    d = getPage(srv.url("stream"))
    d.addCanceller(lambda d: order.append("client"))
    d.addErrback(lambda f: order.append(type(f.value).__name__))
    from twisted.logger import globalLogPublisher

    def observe(event):
        if event.get("log_namespace") == "cdeferred.web":
            order.append(event["layer"])

    globalLogPublisher.addObserver(observe)
    try:
        spin(reactor, lambda: srv.stream.written >= 2)
        d.cancel("bye")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert order == ["client", "decode", "body", "CancelledError"]
    srv.wait_closed(1.0)


# --- timeout --------------------------------------------------------------------


def test_timeout_waiting_for_headers(reactor, srv, captured_log):
    start = time.monotonic()
    f = failure(reactor, getPage(srv.url("hang"), timeout=0.5))
    assert time.monotonic() - start >= 0.5
    assert type(f.value) is TimeoutError
    srv.wait_closed(1.0)
    assert srv.hang.requests == srv.hang.lost == 1
    assert [e["layer"] for e in layer_events(captured_log)] == ["timeout", "decode", "body", "request"]


def test_timeout_mid_body(reactor, srv, captured_log):
    """The timeout covers the body too."""
    f = failure(reactor, getPage(srv.url("stream"), timeout=0.4))
    assert type(f.value) is TimeoutError
    srv.wait_closed(1.0)
    assert 1 < srv.stream.written < CHUNKS
    assert [e["layer"] for e in layer_events(captured_log)] == ["timeout", "decode", "body"]


def test_timeout_zero_before_connect(reactor, srv):
    f = failure(reactor, getPage(srv.url("body"), timeout=0))
    assert type(f.value) is TimeoutError
    spin_for(reactor, 0.2)
    assert srv.factory.opened == 0


@pytest.mark.parametrize("path", ["hang", "stream"])
@pytest.mark.parametrize("timeout", [0.001, 0.003, 0.01, 0.03, 0.1])
def test_timeout_at_any_moment(reactor, srv, path, timeout):
    """Timers short enough to go off during the name lookup, the connection,
    the wait for the headers or the body: always TimeoutError, always clean
    (checked by the fixture)."""
    f = failure(reactor, getPage(srv.url(path), timeout=timeout))
    assert type(f.value) is TimeoutError
    srv.wait_closed(1.0)


def _timers(reactor):
    return [c for c in reactor.getDelayedCalls() if getattr(c.func, "__name__", "") == "_timedOut"]


def test_timer_cancelled_on_success_and_error(reactor, srv):
    d = getPage(srv.url("body"), timeout=30)
    assert len(_timers(reactor)) == 1
    assert success(reactor, d) == BODY
    assert _timers(reactor) == []
    f = failure(reactor, getPage(srv.url("missing"), timeout=30))
    assert f.check(error.Error)
    assert _timers(reactor) == []


@pytest.mark.parametrize("action", ACTIONS)
def test_timer_cancelled_on_interrupt(reactor, srv, captured_log, action):
    d = getPage(srv.url("stream"), timeout=30)
    spin(reactor, lambda: srv.stream.written >= 2)
    interrupt(d, action)
    assert _timers(reactor) == []
    check_interrupted(reactor, d, action)
    srv.wait_closed(1.0)
    assert [e["layer"] for e in layer_events(captured_log)] == ["timeout", "decode", "body"]


# --- persistent connections -----------------------------------------------------


def test_pool_usable_after_cancel(reactor, srv):
    pool = HTTPConnectionPool(reactor, persistent=True)
    agent = Agent(reactor, pool=pool)
    try:
        assert success(reactor, getPage(srv.url("body"), agent=agent)) == BODY
        assert success(reactor, getPage(srv.url("body"), agent=agent)) == BODY
        assert srv.factory.opened == 1  # one connection, reused

        # The cached connection carries a stream that is cancelled mid-body:
        # it is closed, not returned to the pool half-read.
        d = getPage(srv.url("stream"), agent=agent)
        spin(reactor, lambda: srv.stream.written >= 2)
        assert srv.factory.opened == 1
        d.cancel("enough")
        assert failure(reactor, d).value.args == ("enough",)
        srv.wait_closed(1.0)

        # A second fetch on the same pool succeeds, on a new connection.
        assert success(reactor, getPage(srv.url("body"), agent=agent)) == BODY
        assert srv.factory.opened == 2

        # Same while waiting for the headers, and after a timeout.
        d = getPage(srv.url("hang"), agent=agent)
        spin(reactor, lambda: srv.hang.requests == 1)
        d.cancel("enough")
        assert failure(reactor, d).check(CancelledError)
        srv.wait_closed(1.0)
        assert success(reactor, getPage(srv.url("body"), agent=agent)) == BODY
        assert srv.factory.opened == 3

        assert failure(reactor, getPage(srv.url("stream"), agent=agent, timeout=0.2)).check(TimeoutError)
        srv.wait_closed(1.0)
        assert success(reactor, getPage(srv.url("big"), agent=agent)) == BIG
        assert srv.factory.opened == 4
        assert srv.factory.open == 1  # the one cached in the pool
    finally:
        closed = pool.closeCachedConnections()
        spin(reactor, lambda: closed.called)
        outcome(reactor, closed)


# --- the pure-Python reference ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("CDEFERRED_NO_EXTENSIONS", "") not in ("", "0"),
    reason="already running on the pure-Python reference",
)
def test_under_pure_python_reference():
    """The same tests, with getPage's ControllableDeferred and inner chain from
    the pure-Python reference (CDEFERRED_NO_EXTENSIONS=1), in a fresh process."""
    env = dict(os.environ, CDEFERRED_NO_EXTENSIONS="1")
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", os.path.abspath(__file__),
            "-p", "no:cacheprovider", "-k", "not after_n_iterations",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "cdeferred implementation: python" in proc.stdout
