"""The Deferred classes under comparison.

``IMPLEMENTATIONS`` maps a short name to a Deferred class, in column order:

    twisted  twisted.internet.defer.Deferred (the baseline of every ratio)
    c        cdeferred._CDeferred, the compiled core
    py       cdeferred._PyDeferred, the pure-Python reference

An implementation that cannot be imported (the C core not built yet, or
``CDEFERRED_NO_EXTENSIONS=1``) is left out of ``IMPLEMENTATIONS`` and its reason is
kept in ``SKIPPED``, so the harness runs with whatever is there.
"""

from twisted.internet import defer

#: Column titles for the reports.
TITLES = {"twisted": "Twisted", "c": "C", "py": "Py"}

#: The baseline every ratio is computed against.
BASELINE = "twisted"


def _load():
    impls = {"twisted": defer.Deferred}
    skipped = {}
    try:
        import cdeferred
    except Exception as e:  # the package itself is broken or half-written
        reason = f"cdeferred does not import: {type(e).__name__}: {e}"
        return impls, {"c": reason, "py": reason}
    for name, attr in (("c", "_CDeferred"), ("py", "_PyDeferred")):
        cls = getattr(cdeferred, attr, None)
        if cls is None:
            if name == "c":
                skipped[name] = _why_no_c(cdeferred)
            else:
                skipped[name] = f"cdeferred.{attr} is missing"
            continue
        impls[name] = cls
    return impls, skipped


def _why_no_c(cdeferred):
    """Why ``cdeferred._CDeferred`` is None, as precisely as can be told.  Only a
    diagnosis: the C column is never taken from anywhere else."""
    from cdeferred import _compat

    if not getattr(_compat, "USE_EXTENSIONS", True):
        return "disabled by CDEFERRED_NO_EXTENSIONS"
    import importlib

    try:
        importlib.import_module("cdeferred._cimpl")
    except Exception as e:
        return f"C extension not importable: {type(e).__name__}: {e}"
    return ("cdeferred._CDeferred is None although cdeferred._cimpl imports "
            "(a bug in cdeferred/__init__.py?)")


IMPLEMENTATIONS, SKIPPED = _load()


def versions():
    """Versions of the packages involved, for the report header."""
    import twisted

    out = {"twisted": twisted.__version__}
    try:
        import cdeferred

        out["cdeferred"] = getattr(cdeferred, "__version__", "?")
        out["cdeferred_implementation"] = getattr(cdeferred, "IMPLEMENTATION", "?")
    except Exception:
        out["cdeferred"] = "unavailable"
    return out
