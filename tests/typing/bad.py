"""
Typed user code that misuses cdeferred; ``mypy --strict`` must reject it.

Each line that mypy must flag ends with ``# E: <error code>`` (several codes
separated by commas).  tests/test_typing.py requires exactly those errors:
one missing means the stubs accept a misuse (or are not being read at all),
one more means the stubs reject correct code.  This file is never run.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred as TwistedDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from typing_extensions import assert_type

import cdeferred
from cdeferred import ControllableDeferred, Deferred, shield
from cdeferred.web import getPage


def parse(body: bytes) -> str:
    return body.decode()


def count(text: str, extra: int) -> int:
    return len(text) + extra


def recover(failure: Failure) -> None:
    return None


def free(d: Deferred[Any], what: str) -> None:
    pass


def takesTwistedInt(d: TwistedDeferred[int]) -> None:
    pass


# A Deferred with no result type.
untyped = Deferred()  # E: var-annotated

page: Deferred[bytes] = Deferred()

# The chain's result type is carried from link to link.
page.addCallback(count, 1)  # E: call-overload
text = page.addCallback(parse)
number: Deferred[int] = text  # E: assignment
text.addCallback(count, "one")  # E: call-overload
text.addCallback(count, 1, 2)  # E: call-overload
assert_type(text.addErrback(recover), Deferred[str])  # E: assert-type
page.callback("not bytes")  # E: arg-type

# Twisted-typed APIs see the result type too.
takesTwistedInt(text)  # E: arg-type

# The canceller chain.
page.addCanceller(free)  # E: call-arg
page.addCanceller(free, 42)  # E: arg-type
page.addCanceller("not callable")  # E: arg-type
page.addCallbacks(parse, recover, canceller=42)  # E: call-overload
page.cancel("message", "extra")  # E: call-arg

# ControllableDeferred.
cut = ControllableDeferred(page)
cut.deactivate(True)  # E: call-arg
cut.active = False  # E: misc
ControllableDeferred(upstream=b"not a Deferred")  # E: arg-type
follower: ControllableDeferred[str] = ControllableDeferred(page)  # E: arg-type

# shield, install, uninstall, IMPLEMENTATION.
shield(page.result)  # E: arg-type
cdeferred.install(int)  # E: arg-type
cdeferred.uninstall(True)  # E: call-arg
if cdeferred.IMPLEMENTATION == "C":  # E: comparison-overlap
    pass
cdeferred.Deferreds  # E: attr-defined
from cdeferred import getPage as notHere  # E: attr-defined  # noqa: E402

# getPage.
getPage(123)  # E: arg-type
getPage("http://127.0.0.1/", timeout="5")  # E: arg-type
getPage("http://127.0.0.1/", body="text")  # E: arg-type
getPage("http://127.0.0.1/", agent=Clock())  # E: arg-type
getPage("http://127.0.0.1/", headers={"Accept": 1})  # E: arg-type
fetched: Deferred[str] = getPage("http://127.0.0.1/")  # E: assignment


async def awaitsTheWrongType() -> str:
    return await Deferred[int]()  # E: return-value
