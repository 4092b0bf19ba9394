"""
A real Twisted program for checking install(): a twisted.web server and an
Agent client on 127.0.0.1 doing a few hundred requests through
inlineCallbacks and coroutines, locks, queues, DeferredList/gatherResults and
time-outs.  It prints one JSON object on stdout: the results (which must be
the same with and without install()), what it logged (errors, warnings,
"Unhandled error in Deferred"; the same too) and, apart, the Deferred classes
met on the way (which show whether install() took effect).

    python tools/web_roundtrip.py --install=none    # Twisted's own Deferred
    python tools/web_roundtrip.py --install=early   # install() first thing
    python tools/web_roundtrip.py --install=late    # install() after Twisted's
                                                    # web/reactor modules loaded
    python tools/web_roundtrip.py --requests=300

Only the loopback interface is used.
"""

import argparse
import hashlib
import json
import sys
from io import BytesIO


def _className(obj):
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _importTwisted():
    """The Twisted modules the program uses (and which bind Deferred by name)."""
    from twisted.internet import defer, reactor, task  # noqa: F401
    from twisted.web import client, resource, server  # noqa: F401


def buildSite(reactor):
    from twisted.internet import defer, task
    from twisted.web import resource, server

    def intArg(request, name, default=0):
        return int(request.args.get(name.encode(), [str(default).encode()])[0])

    class Square(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            n = intArg(request, "n")
            return b"%d" % (n * n,)

    class Slow(resource.Resource):
        """Answers after a delay, the body made by an inlineCallbacks function."""

        isLeaf = True

        def render_GET(self, request):
            n, ms = intArg(request, "n"), intArg(request, "ms", 1)

            @defer.inlineCallbacks
            def produce():
                parts = []
                for i in range(3):
                    value = yield task.deferLater(reactor, ms / 3000.0, lambda i=i: i * n)
                    parts.append(b"%d" % (value,))
                return b",".join(parts)

            d = produce()
            request.notifyFinish().addErrback(lambda _: d.cancel())

            def done(body):
                request.write(body)
                request.finish()

            d.addCallbacks(done, lambda f: f.trap(defer.CancelledError))
            return server.NOT_DONE_YET

    class Coro(resource.Resource):
        """Answers from a coroutine that awaits Deferreds and a lock."""

        isLeaf = True

        def __init__(self):
            super().__init__()
            self.lock = defer.DeferredLock()
            self.counter = 0

        def render_GET(self, request):
            n = intArg(request, "n")

            async def produce():
                await self.lock.acquire()
                try:
                    await task.deferLater(reactor, 0, lambda: None)
                    self.counter += 1
                finally:
                    self.lock.release()
                total = await defer.gatherResults(
                    [defer.succeed(n), defer.maybeDeferred(lambda: n + 1)]
                )
                request.write(b"coro:%d" % (sum(total),))
                request.finish()

            defer.ensureDeferred(produce())
            return server.NOT_DONE_YET

    class Chunks(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            n = intArg(request, "n")

            async def produce():
                for i in range(n):
                    await task.deferLater(reactor, 0, lambda: None)
                    request.write(b"<%d>" % (i,))
                request.finish()

            defer.Deferred.fromCoroutine(produce())
            return server.NOT_DONE_YET

    class Echo(resource.Resource):
        isLeaf = True

        def render_POST(self, request):
            return hashlib.sha256(request.content.read()).hexdigest().encode()

    class Fail(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            raise RuntimeError("this resource always fails")

    root = resource.Resource()
    root.putChild(b"square", Square())
    root.putChild(b"slow", Slow())
    root.putChild(b"coro", Coro())
    root.putChild(b"chunks", Chunks())
    root.putChild(b"echo", Echo())
    root.putChild(b"fail", Fail())
    site = server.Site(root)
    site.displayTracebacks = False
    return site


def jobFor(i):
    """Request number C{i}: (method, path, body, client timeout or None)."""
    kind = i % 8
    if kind == 0:
        return ("GET", f"/square?n={i}", None, None)
    if kind == 1:
        return ("GET", f"/slow?n={i}&ms=3", None, None)
    if kind == 2:
        return ("GET", f"/coro?n={i}", None, None)
    if kind == 3:
        return ("GET", f"/chunks?n={i % 13}", None, None)
    if kind == 4:
        return ("POST", "/echo", b"x" * (i * 37 % 5000), None)
    if kind == 5:
        return ("GET", "/fail", None, None)
    if kind == 6:
        return ("GET", f"/missing/{i}", None, None)
    # A request the client gives up on: the server takes 5 s, the client
    # 0.5 s (long enough to be connected and have sent the request even on a
    # loaded machine, so the failure is always the same).
    if i % 40 == 7:
        return ("GET", f"/slow?n={i}&ms=5000", None, 0.5)
    return ("GET", f"/square?n={-i}", None, None)


def main(reactor, options, seen):
    from twisted.internet import defer
    from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers

    port = reactor.listenTCP(0, buildSite(reactor), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 6
    agent = Agent(reactor, pool=pool)
    results = {}

    def note(d):
        seen.add(_className(d))
        return d

    def request(method, path, body):
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        return note(
            agent.request(
                method.encode(),
                (base + path).encode(),
                Headers({b"user-agent": [b"cdeferred-roundtrip"]}),
                producer,
            )
        )

    @defer.inlineCallbacks
    def fetchInline(i):
        method, path, body, timeout = jobFor(i)
        d = request(method, path, body)
        if timeout is not None:
            d.addTimeout(timeout, reactor)
        try:
            response = yield d
            data = yield note(readBody(response))
        except Exception as e:
            return (i, "error", type(e).__name__)
        return (i, response.code, data.decode("ascii", "replace"))

    async def fetchCoro(i):
        method, path, body, timeout = jobFor(i)
        d = request(method, path, body)
        if timeout is not None:
            d.addTimeout(timeout, reactor)
        try:
            response = await d
            data = await note(readBody(response))
        except Exception as e:
            return (i, "error", type(e).__name__)
        return (i, response.code, data.decode("ascii", "replace"))

    # Phase 1: workers fed from a DeferredQueue, half inlineCallbacks, half
    # coroutines.
    queue = defer.DeferredQueue()
    count = options.requests
    half = count // 2
    for i in range(half):
        queue.put(i)
    for _ in range(8):
        queue.put(None)

    @defer.inlineCallbacks
    def inlineWorker():
        while True:
            i = yield note(queue.get())
            if i is None:
                return
            result = yield fetchInline(i)
            results[i] = result

    async def coroWorker():
        while True:
            i = await note(queue.get())
            if i is None:
                return
            results[i] = await fetchCoro(i)

    workers = [inlineWorker() for _ in range(4)]
    workers += [defer.ensureDeferred(coroWorker()) for _ in range(4)]
    phase1 = defer.DeferredList(workers, fireOnOneErrback=True, consumeErrors=True)
    note(phase1)

    # Phase 2: the rest at once, limited by a DeferredSemaphore, collected by
    # gatherResults.
    semaphore = defer.DeferredSemaphore(10)

    def phase2(_):
        batch = []
        for i in range(half, count):
            if i % 2:
                batch.append(semaphore.run(fetchInline, i))
            else:
                batch.append(
                    semaphore.run(lambda i=i: defer.ensureDeferred(fetchCoro(i)))
                )
        return note(defer.gatherResults(batch, consumeErrors=True))

    def store(batch):
        for item in batch:
            results[item[0]] = item

    # A connection refused on the loopback interface: a closed port.
    async def refused():
        closed = reactor.listenTCP(0, buildSite(reactor), interface="127.0.0.1")
        number = closed.getHost().port
        await closed.stopListening()
        try:
            await note(agent.request(b"GET", f"http://127.0.0.1:{number}/".encode()))
        except Exception as e:
            return type(e).__name__
        return "connected?"

    def finish(_):
        return defer.ensureDeferred(refused())

    def shutdown(refusedWith):
        d = pool.closeCachedConnections()
        d.addCallback(lambda _: port.stopListening())
        d.addCallback(lambda _: refusedWith)
        return d

    d = phase1.addCallback(phase2).addCallback(store)
    d.addCallback(finish).addCallback(shutdown)

    def report(refusedWith):
        ordered = [list(results[i]) for i in range(count)]
        blob = json.dumps(ordered, sort_keys=True).encode()
        return {
            "requests": count,
            "digest": hashlib.sha256(blob).hexdigest(),
            "statuses": sorted(
                {str(r[1]) + ("" if r[1] != "error" else ":" + r[2]) for r in ordered}
            ),
            "refused": refusedWith,
            "results": ordered,
        }

    return d.addCallback(report)


def run(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", choices=["none", "early", "late"], default="none")
    parser.add_argument("--requests", type=int, default=300)
    options = parser.parse_args(argv)

    if options.install == "early":
        import cdeferred._install

        cdeferred._install.install()
    _importTwisted()
    if options.install == "late":
        import cdeferred._install

        cdeferred._install.install()

    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner

    # What the run logs (server errors, "Unhandled error in Deferred",
    # warnings), counted: it must be the same with and without install().
    logged = {}

    def observe(event):
        if "log_failure" in event:
            key = f"{event['log_failure'].type.__name__}: {event.get('log_format')}"
        elif "warning" in event:
            key = f"{type(event['warning']).__name__}: {event['warning']}"
        elif event.get("log_level") is not None and event["log_level"].name in (
            "error",
            "critical",
        ):
            key = f"{event['log_level'].name}: {event.get('log_format')}"
        else:
            return
        logged[key] = logged.get(key, 0) + 1

    globalLogBeginner.beginLoggingTo([observe], redirectStandardIO=False)

    seen = set()
    output = {}

    def go():
        d = main(reactor, options, seen)

        def done(result):
            output.update(result)
            reactor.stop()

        def failed(f):
            output["crash"] = f.getTraceback()
            reactor.stop()

        d.addCallbacks(done, failed)

    reactor.callWhenRunning(go)
    reactor.run()
    import gc

    gc.collect()  # Deferreds collected with a failure log it now
    output["logged"] = logged
    output["deferredClasses"] = sorted(seen)
    output["deferDeferred"] = f"{defer.Deferred.__module__}.{defer.Deferred.__qualname__}"
    json.dump(output, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0 if "crash" not in output else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
