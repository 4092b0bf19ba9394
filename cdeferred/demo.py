"""
A tour of cdeferred: ``python -m cdeferred.demo`` (from the repository root to
get the full benchmark table).  Runs in a few seconds; the only network use is a
twisted.web server of its own on 127.0.0.1.

1. Callback chains on ``cdeferred.Deferred``, mixed with Twisted's own Deferreds
   in both directions, and the three-layer cancellation of DESIGN §2: the
   client cancels, the layers clean up innermost user first.
2. ``cdeferred.web.getPage`` against a local server: one fetch cancelled
   mid-body, one deactivated before it connects, one fired early from a cache,
   one timed out; each layer's cleanup is printed as it happens.
3. A speed table: the repository's ``benchmarks`` in quick mode when importable,
   else a small built-in timing.
"""

import sys
import timeit

from twisted.internet import defer, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.policies import WrappingFactory
from twisted.web import error, resource, server

import cdeferred
from cdeferred import ControllableDeferred, Deferred
from cdeferred.web import getPage


def say(text=""):
    print(text, flush=True)


def heading(text):
    say()
    say(text)
    say("=" * len(text))


def sleep(reactor, seconds):
    return task.deferLater(reactor, seconds, lambda: None)


# --- part 1: chains, interop, three layers --------------------------------------


def part_chains(reactor):
    heading("1. Deferred chains: cdeferred and Twisted, mixed")
    say(f"implementation: {cdeferred.IMPLEMENTATION}; "
        f"isinstance(cdeferred.Deferred(), twisted Deferred) = "
        f"{isinstance(Deferred(), defer.Deferred)}")

    d = Deferred()
    d.addCallback(lambda n: n + 1)
    d.addCallback(lambda n: n * 10)
    d.addCallback(lambda n: say(f"cdeferred chain: 4 -> +1 -> *10 = {n}"))
    d.callback(4)

    # A cdeferred callback returns a Twisted Deferred: the chain waits for it.
    twistedInner = defer.Deferred()
    outer = Deferred()
    outer.addCallback(lambda r: twistedInner)
    outer.addCallback(lambda r: say(f"cdeferred waited on a Twisted Deferred, got {r!r}"))
    outer.callback(None)
    twistedInner.callback("from Twisted")

    # And the other way: a Twisted callback returns a cdeferred Deferred.
    cInner = Deferred()
    twistedOuter = defer.Deferred()
    twistedOuter.addCallback(lambda r: cInner)
    twistedOuter.addCallback(lambda r: say(f"Twisted waited on a cdeferred Deferred, got {r!r}"))
    twistedOuter.callback(None)
    cInner.callback("from cdeferred")

    # Cancellation is not severed by a Deferred that knows nothing of cancellers.
    stuck = defer.Deferred(lambda t: say("Twisted Deferred's canceller reached through a cdeferred chain"))
    waiting = Deferred()
    waiting.addCallback(lambda r: stuck)
    waiting.addErrback(lambda f: say(f"cdeferred chain ends with {f.value!r}"))
    waiting.callback(None)
    waiting.cancel("not needed")

    heading("1b. Three layers, one cancel (DESIGN §2)")
    say("func makes d -> W adds w1 (holds a pooled connection) -> X adds x1 (holds a retry timer)")
    say("             -> Y adds y1 (holds a lock) -> the client adds its callbacks and cancels")
    order = []

    def cleanup(text):
        order.append(text)
        say(f"  cleanup {len(order)}: {text}")

    pool = ["connection #7"]
    lock = defer.DeferredLock()

    def func():
        # The responder: its creator canceller stops the operation itself.
        return Deferred(canceller=lambda d: cleanup("func: creator canceller stops the operation"))

    def W():
        d = func()
        connection = pool.pop()
        d.addCallbacks(
            lambda r: f"{r} over {connection}",
            canceller=lambda d: (pool.append(connection),
                                 cleanup(f"W: {connection} goes back to the pool")),
        )
        return d

    def X():
        d = W()
        timer = reactor.callLater(60, lambda: None)
        d.addCallbacks(
            lambda r: (timer.cancel(), r)[1],
            canceller=lambda d: (timer.cancel(), cleanup("X: retry timer cancelled")),
        )
        return d

    def Y():
        lock.acquire()
        d = X()
        d.addCallbacks(
            lambda r: (lock.release(), r)[1],
            canceller=lambda d: (lock.release(), cleanup("Y: lock released")),
        )
        return d

    d = Y()
    d.addCallbacks(
        lambda r: say(f"client got {r!r}"),
        lambda f: say(f"  client errback: {f.value!r}"),
    )
    d.cancel("the client gave up")
    say(f"afterwards: pool={pool}, lock held={lock.locked}, "
        f"pending timers={len(reactor.getDelayedCalls())}")


# --- part 2: getPage ---------------------------------------------------------------


class Fast(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"fast page\n"


class Missing(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setResponseCode(404)
        return b"nothing here"


class SlowStream(resource.Resource):
    """Twenty 64-byte chunks, one every 0.1 s (2 s in all); ``written`` counts
    the chunks sent on the latest request (the demo resets it before each fetch)."""

    isLeaf = True

    def __init__(self, reactor):
        super().__init__()
        self.reactor = reactor
        self.written = 0

    def render_GET(self, request):
        state = {"call": None, "sent": 0}

        def tick():
            state["call"] = None
            request.write(b"%02d" % state["sent"] + b"." * 62)
            state["sent"] += 1
            self.written = state["sent"]
            if state["sent"] < 20:
                state["call"] = self.reactor.callLater(0.1, tick)
            else:
                request.finish()

        def gone(reason):
            if state["call"] is not None and state["call"].active():
                state["call"].cancel()
            say(f"  server: client went away after {state['sent']} of 20 chunks")

        request.notifyFinish().addErrback(gone)
        tick()
        return server.NOT_DONE_YET


class Counting(WrappingFactory):
    opened = 0

    def registerProtocol(self, p):
        self.opened += 1
        super().registerProtocol(p)

    @property
    def open(self):
        return len(self.protocols)


def _layerObserver(event):
    if event.get("log_namespace") == "cdeferred.web":
        say(f"  cleanup: {formatEvent(event)}")


def _report(label):
    def onResult(result):
        say(f"  client: {label} got {result!r}")

    def onFailure(f):
        say(f"  client: {label} failed with {f.value!r}")

    return onResult, onFailure


async def _waitUntil(reactor, predicate, timeout=3.0):
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise RuntimeError("the demo's server did not see what it expected")
        await sleep(reactor, 0.01)


async def part_web(reactor):
    heading("2. getPage: a canceller on every layer")
    root = resource.Resource()
    root.putChild(b"fast", Fast())
    root.putChild(b"missing", Missing())
    slow = SlowStream(reactor)
    root.putChild(b"slow", slow)
    site = server.Site(root)
    site.noisy = False
    factory = Counting(site)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    base = "http://127.0.0.1:%d/" % (port.getHost().port,)
    say(f"server on {base} (fast, slow-streaming and 404 resources)")

    body = await getPage(base + "fast")
    say(f"fetch /fast: {body!r}")
    try:
        await getPage(base + "missing")
    except error.Error as e:
        say(f"fetch /missing: Error status={e.status!r} message={e.message!r} body={e.response!r}")

    async def settle(label):
        await _waitUntil(reactor, lambda: factory.open == 0)
        timers = [c for c in reactor.getDelayedCalls()
                  if getattr(c.func, "__name__", "") == "_timedOut"]
        say(f"  after {label}: server connections open: {factory.open}, "
            f"fetch timers pending: {len(timers)}")

    globalLogPublisher.addObserver(_layerObserver)
    try:
        say()
        say("[cancel] /slow, cancelled mid-body after some chunks:")
        slow.written = 0
        d = getPage(base + "slow")
        say(f"  getPage returned a {type(d).__name__} "
            f"(isinstance ControllableDeferred: {isinstance(d, ControllableDeferred)})")
        d.addCallbacks(*_report("cancelled fetch"))
        await _waitUntil(reactor, lambda: slow.written >= 3)
        await sleep(reactor, 0.02)
        say("  client: d.cancel('user pressed stop')")
        d.cancel("user pressed stop")
        await settle("cancel")

        say()
        say("[deactivate] /slow, deactivated before it even connected:")
        slow.written = 0
        d = getPage(base + "slow")
        d.addCallbacks(*_report("deactivated fetch"))
        before = factory.opened
        say("  client: d.deactivate()")
        d.deactivate()
        await sleep(reactor, 0.2)
        say(f"  client: d.active={d.active}, d.called={d.called} (its callbacks never run); "
            f"connections the server saw for it: {factory.opened - before}")
        await settle("deactivate")

        say()
        say("[early fire] /slow, answered from a cache mid-body:")
        cache = {base + "slow": b"cached copy of /slow"}
        slow.written = 0
        d = getPage(base + "slow")
        d.addCallbacks(*_report("cached fetch"))
        await _waitUntil(reactor, lambda: slow.written >= 2)
        await sleep(reactor, 0.02)
        say("  client: d.callback(cache[url])")
        d.callback(cache[base + "slow"])
        await settle("early fire")

        say()
        say("[timeout] /slow with timeout=0.45 (the body needs 2 s):")
        slow.written = 0
        d = getPage(base + "slow", timeout=0.45)
        d.addCallbacks(*_report("timed-out fetch"))
        await _waitUntil(reactor, lambda: d.called, 5)
        await settle("timeout")

        say()
        say("[client layer] /slow, with a timeout and the client's own canceller, cancelled mid-body:")
        slow.written = 0
        d = getPage(base + "slow", timeout=10)
        d.addCanceller(lambda d: say("  cleanup: client layer: forget the progress bar"))
        d.addCallbacks(*_report("cancelled fetch"))
        await _waitUntil(reactor, lambda: slow.written >= 2)
        say("  client: d.cancel('closed the tab')")
        d.cancel("closed the tab")
        await settle("cancel")
    finally:
        globalLogPublisher.removeObserver(_layerObserver)
    await port.stopListening()


# --- part 3: speed -------------------------------------------------------------------


def _builtinTiming():
    say("(benchmarks package not importable: built-in timing)")

    def four(n):
        return n

    def run(cls):
        def op():
            d = cls()
            d.addCallback(four)
            d.addCallback(four)
            d.addCallback(four)
            d.addCallback(four)
            d.callback(0)

        timer = timeit.Timer(op)
        number, _ = timer.autorange()
        return min(timer.repeat(repeat=5, number=number)) / number * 1e6

    rows = [("Twisted Deferred", run(defer.Deferred)), ("cdeferred.Deferred", run(Deferred))]
    base = rows[0][1]
    say(f"{'4 callbacks, then fire':24} {'us per op':>10} {'vs Twisted':>11}")
    for name, us in rows:
        say(f"{name:24} {us:10.3f} {base / us:10.2f}x")
    say(f"(cdeferred implementation: {cdeferred.IMPLEMENTATION})")


def part_speed():
    heading("3. Speed, side by side")
    try:
        from benchmarks import run as bench
    except ImportError:  # not run from the repository root
        _builtinTiming()
        return
    say("python -m benchmarks.run --quick:")
    try:
        status = bench.main(["--quick", "--quiet"])
    except Exception as e:  # the benchmarks are another package: do not let them sink the demo
        say(f"(benchmarks failed: {e!r})")
        _builtinTiming()
        return
    sys.stdout.flush()
    if status:
        say("(the benchmark run reported errors, shown as ERROR above)")


async def _main(reactor):
    part_chains(reactor)
    await part_web(reactor)
    part_speed()
    say()
    say("demo finished")


def main(reactor):
    return defer.ensureDeferred(_main(reactor))


if __name__ == "__main__":
    task.react(main)
