"""
Typed user code that uses every public name of cdeferred.

tests/test_typing.py runs ``mypy --strict`` on this file, which must find no
error: the ``assert_type`` calls pin the types the stubs give (a stub that got
a result type wrong fails them).  The test also runs this file, so everything
the stubs accept here is also what the package does at run time.
"""

from __future__ import annotations

import sys
from typing import Any, Generator, Literal, Optional

from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.internet.defer import Deferred as TwistedDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from typing_extensions import assert_type

import cdeferred
from cdeferred import IMPLEMENTATION, ControllableDeferred, Deferred, __version__, shield
from cdeferred.web import REDIRECT_LIMIT, getPage

# --- module attributes ----------------------------------------------------------

assert_type(__version__, str)
assert_type(cdeferred.__version__, str)
implementation: Literal["c", "python"] = IMPLEMENTATION
assert_type(REDIRECT_LIMIT, int)


# --- callbacks, errbacks: the chain's result type follows ------------------------


def parse(body: bytes) -> str:
    return body.decode("ascii")


def measure(text: str, extra: int, *, scale: int = 1) -> int:
    return (len(text) + extra) * scale


def halve(n: int) -> TwistedDeferred[float]:
    return defer.succeed(n / 2)


def halveHere(x: float) -> Deferred[float]:
    d: Deferred[float] = Deferred()
    d.callback(x / 2)
    return d


def checkPositive(x: float) -> float:
    if x < 0:
        raise KeyError(x)
    return x


# Twisted's Failure has no annotations (trap() and check() are untyped calls
# to mypy --strict), so typed code looks at failure.value.


def recover(failure: Failure) -> None | Failure:
    return None if isinstance(failure.value, KeyError) else failure


def reraise(failure: Failure) -> Failure:
    return failure


def swallowCancelled(failure: Failure) -> None | Failure:
    return None if isinstance(failure.value, CancelledError) else failure


def describe(result: float | None | Failure) -> str:
    return "failed" if isinstance(result, Failure) else f"got {result}"


def chains() -> None:
    d: Deferred[bytes] = Deferred()
    assert_type(d, Deferred[bytes])
    text = d.addCallback(parse)
    assert_type(text, Deferred[str])
    # Extra positional and keyword arguments are checked against the callback.
    size = text.addCallback(measure, 2, scale=2)
    assert_type(size, Deferred[int])
    # A callback returning a Deferred (Twisted's or ours): the chain waits.
    half = size.addCallback(halve)
    assert_type(half, Deferred[float])
    again = half.addCallback(halveHere)
    assert_type(again, Deferred[float])
    checked = again.addCallback(checkPositive)
    assert_type(checked, Deferred[float])
    # An errback that passes the failure on adds nothing; one that recovers
    # adds what it returns.
    assert_type(checked.addErrback(reraise), Deferred[float])
    recovered = checked.addErrback(recover)
    assert_type(recovered, Deferred[Optional[float]])  # run on 3.9 too: no X | Y
    final = recovered.addBoth(describe)
    assert_type(final, Deferred[str])
    seen: list[str] = []
    final.addCallback(seen.append)
    d.callback(b"abcd")
    # (4 + 2) * 2 = 12, halved twice.
    assert seen == ["got 3.0"], seen
    # callback() accepts the Deferred's result type.
    other: Deferred[int] = Deferred()
    other.callback(3)


# --- the third chain: cancellers ----------------------------------------------------


def cancellers() -> None:
    freed: list[str] = []

    def free(d: Deferred[Any], what: str, *, reason: str = "") -> None:
        freed.append(what + reason)

    def creator(d: Deferred[Any]) -> None:
        freed.append("creator")

    def double(n: int) -> int:
        return 2 * n

    def onFailure(failure: Failure) -> int | Failure:
        return -1 if isinstance(failure.value, CancelledError) else failure

    def linkCanceller(d: Deferred[Any]) -> None:
        freed.append("link")

    d: Deferred[int] = Deferred(canceller=creator)
    assert_type(d.addCanceller(free, "timer"), Deferred[int])
    d.addCanceller(free, "lock", reason=" (cancelled)")
    doubled = d.addCallbacks(double, onFailure, canceller=linkCanceller)
    assert_type(doubled, Deferred[int])
    results: list[int] = []
    doubled.addCallback(results.append)
    doubled.cancel("client gave up")
    assert freed == ["link", "lock (cancelled)", "timer", "creator"], freed
    assert results == [-1], results

    # cancel() with no message, as in Twisted.
    plain: Deferred[str] = Deferred()
    plain.addErrback(swallowCancelled)
    plain.cancel()

    # A Deferred that has fired but waits on another one cancels that one.
    inner: Deferred[str] = Deferred()
    outer: Deferred[int] = Deferred()

    def wait(_: int) -> Deferred[str]:
        return inner

    waiting = outer.addCallback(wait)
    assert_type(waiting, Deferred[str])
    outer.callback(1)
    waiting.addErrback(swallowCancelled)
    waiting.cancel("stop")
    assert inner.called


# --- ControllableDeferred -----------------------------------------------------------


def controllable() -> None:
    upstream: Deferred[bytes] = Deferred()
    cut = ControllableDeferred(upstream)
    assert_type(cut, ControllableDeferred[bytes])
    assert_type(cut.active, bool)
    got: list[int] = []
    cut.addCallback(len).addCallback(got.append)
    cut.callback(b"cached page")  # fire early: upstream is cancelled
    assert not cut.active
    assert got == [11], got
    upstream.callback(b"late")  # swallowed

    # Following one of Twisted's Deferreds.
    twisted: TwistedDeferred[str] = TwistedDeferred()
    follower = ControllableDeferred(twisted)
    assert_type(follower, ControllableDeferred[str])
    follower.deactivate()
    assert not follower.active

    # Without upstream, with a creator's canceller.
    def creator(d: Deferred[Any]) -> None:
        pass

    own: ControllableDeferred[int] = ControllableDeferred(canceller=creator)
    own.addErrback(swallowCancelled)
    own.cancel("no longer needed")
    assert not own.active

    # A ControllableDeferred is a Deferred: Deferred-typed code takes it.
    asDeferred: Deferred[int] = ControllableDeferred()
    asDeferred.callback(1)


# --- shield -------------------------------------------------------------------------


def shielding() -> None:
    commit: Deferred[None] = Deferred()
    shielded = shield(commit)
    assert_type(shielded, Deferred[None])
    shielded.addErrback(swallowCancelled)
    shielded.cancel()
    assert not commit.called
    commit.callback(None)
    assert_type(shield(defer.succeed(3)), Deferred[int])


# --- Twisted's typed APIs accept cdeferred's Deferreds --------------------------------


def fired(value: int) -> Deferred[int]:
    d: Deferred[int] = Deferred()
    d.callback(value)
    return d


def takesTwistedDeferred(d: TwistedDeferred[int]) -> TwistedDeferred[int]:
    return d


@defer.inlineCallbacks
def inlined() -> Generator[TwistedDeferred[Any], Any, int]:
    first = yield fired(1)
    second = yield fired(2)
    return int(first) + int(second)


async def awaiting() -> int:
    value = await fired(20)
    assert_type(value, int)
    return value + 1


def interop() -> None:
    assert_type(takesTwistedDeferred(fired(1)), TwistedDeferred[int])
    gathered = defer.gatherResults([fired(1), fired(2), defer.succeed(3)])
    assert_type(gathered, TwistedDeferred[list[int]])
    results: list[object] = []
    gathered.addCallback(results.append)
    defer.DeferredList([fired(1), fired(2)]).addCallback(results.append)
    inlined().addCallback(results.append)
    coroutine = defer.ensureDeferred(awaiting())
    assert_type(coroutine, TwistedDeferred[int])
    coroutine.addCallback(results.append)
    assert_type(TwistedDeferred.fromCoroutine(awaiting()), TwistedDeferred[int])
    assert results == [[1, 2, 3], [(True, 1), (True, 2)], 3, 21], results

    clock = Clock()
    timed: Deferred[str] = Deferred()
    limited = timed.addTimeout(5, clock)
    assert_type(limited, Deferred[str])
    limited.addErrback(
        lambda failure: None if isinstance(failure.value, defer.TimeoutError) else failure
    )
    clock.advance(6)
    assert timed.called

    class Page(Deferred[bytes]):
        """Subclassing keeps the result type."""

    page = Page()
    assert_type(page.addCallback(len), Deferred[int])
    page.callback(b"xyz")


# --- getPage --------------------------------------------------------------------------


class NeverAnswers:
    """An agent (anything with IAgent's request()) whose responses never come;
    it counts the requests it was asked to abandon."""

    def __init__(self) -> None:
        self.cancelled = 0

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: object = None,
    ) -> TwistedDeferred[object]:
        def abandon(d: TwistedDeferred[object]) -> None:
            self.cancelled += 1

        return TwistedDeferred(abandon)


def fetching() -> None:
    agent = NeverAnswers()
    clock = Clock()
    page = getPage(
        "http://127.0.0.1:1/never",
        method="POST",
        headers={"Accept": ["text/html", "text/plain"]},
        body=b"query",
        agent=agent,
        timeout=5.0,
        reactor=clock,
    )
    assert_type(page, ControllableDeferred[bytes])
    assert_type(page.addCallback(len), Deferred[int])
    reasons: list[str] = []

    def cancelled(failure: Failure) -> None | Failure:
        if not isinstance(failure.value, CancelledError):
            return failure
        reasons.append(str(failure.value))
        return None

    page.addErrback(cancelled)
    page.cancel("user left")
    assert reasons == ["user left"], reasons
    assert agent.cancelled == 1
    assert not clock.getDelayedCalls()

    byHeaders = getPage(
        b"http://127.0.0.1:1/", headers=Headers({b"accept": [b"*/*"]}), agent=agent
    )
    byHeaders.deactivate()
    assert agent.cancelled == 2


# --- install() ------------------------------------------------------------------------


def installing() -> None:
    cdeferred.install()
    cdeferred.install()  # a no-op
    made = defer.succeed(1)
    assert isinstance(made, cdeferred.Deferred), type(made)
    cdeferred.uninstall()
    assert not isinstance(defer.succeed(1), cdeferred.Deferred)
    cdeferred.install(Deferred)
    cdeferred.uninstall()


def main() -> None:
    print(f"cdeferred {__version__} on the {implementation} implementation")
    chains()
    cancellers()
    controllable()
    shielding()
    interop()
    fetching()
    print("checks before install(): ok")
    installing()
    print("all checks: ok")


if __name__ == "__main__":
    main()
    sys.exit(0)
