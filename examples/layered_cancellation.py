"""
Three layers (W, X, Y) each hold a resource while a request is pending and
free it when the client cancels: innermost user first, the creator last.
Run: python examples/layered_cancellation.py
"""

from cdeferred import Deferred


def request():
    return Deferred(canceller=lambda d: print("creator: abort the request"))


def layer(name, call):
    d = call()
    print(f"{name}: hold a resource")
    d.addCallback(lambda body: f"{name}({body})")
    return d.addCanceller(lambda d: print(f"{name}: free the resource"))


def w():
    return layer("W", request)


def x():
    return layer("X", w)


d = layer("Y", x)  # the client called Y, Y called X, X called W
d.addErrback(lambda failure: print("client:", failure.getErrorMessage()))
d.cancel("client gave up")
