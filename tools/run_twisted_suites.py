"""
Run Twisted's own test suites (shipped inside the installed Twisted) with
``cdeferred.install()`` in effect, through trial's usual entry point.

    python tools/run_twisted_suites.py                  # the Deferred suites, installed
    python tools/run_twisted_suites.py --no-install     # the same on Twisted's own Deferred
    python tools/run_twisted_suites.py -- --reporter=bwverbose twisted.test.test_defer

Everything after ``--`` goes to trial unchanged (reporter, test names, ...);
without test names the Deferred suites below run.  ``CDEFERRED_NO_EXTENSIONS=1``
selects the pure-Python reference, as everywhere in cdeferred.  Do not pass
trial's ``-j``: its workers are fresh interpreters, without install().

install() runs before trial, the reactor and the test modules are imported,
as an application calls it first thing, like a reactor installer.  trial
writes its ``_trial_temp`` directory into the current directory: run this
from a scratch directory.

Besides trial's output, two lines start with ``cdeferred-runner:``: before the
run, which classes are in use; after it, which imported Twisted modules still
bind Twisted's own Deferred or DeferredList by name (with install(), none
should).
"""

import os
import sys

#: Twisted's test modules for Deferred and the machinery built on it.
DEFERRED_SUITES = (
    "twisted.test.test_defer",
    "twisted.internet.test.test_defer_await",
    "twisted.internet.test.test_defer_yieldfrom",
    "twisted.internet.test.test_inlinecb",
    "twisted.trial.test.test_deferred",
)


def _name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _modulesBindingTwistedClasses(classes):
    """Imported twisted.* modules with a global that is one of C{classes}."""
    found = []
    for name, module in sorted(sys.modules.items()):
        if module is None or not (name == "twisted" or name.startswith("twisted.")):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for attr, value in namespace.items():
            if any(value is cls for cls in classes):
                found.append(f"{name}.{attr}")
    return found


def main(argv):
    doInstall = True
    args = list(argv)
    if args[:1] == ["--no-install"]:
        doInstall = False
        del args[0]
    if args[:1] == ["--"]:
        del args[0]
    elif args:
        raise SystemExit(f"usage: {sys.argv[0]} [--no-install] [-- trial arguments]")
    if not any(not arg.startswith("-") for arg in args):
        args.extend(DEFERRED_SUITES)

    # Our own lines go to a copy of the original stdout: some of Twisted's
    # tests redirect file descriptor 1 and do not always put it back.
    report = os.fdopen(os.dup(1), "w")

    def say(text):
        sys.stdout.flush()
        report.write(f"cdeferred-runner: {text}\n")
        report.flush()

    import cdeferred
    from cdeferred import _install

    if doInstall:
        _install.install()

    from twisted.internet import defer

    say(
        f"implementation={cdeferred.IMPLEMENTATION} "
        f"installed={_install.installed() is not None} "
        f"defer.Deferred={_name(defer.Deferred)} "
        f"succeed()={_name(type(defer.succeed(None)))}"
    )
    sys.argv = ["trial"] + args
    from twisted.scripts.trial import run

    try:
        run()
    finally:
        if doInstall:
            stale = _modulesBindingTwistedClasses(
                [_install._TwistedDeferred, _install._TwistedDeferredList]
            )
            say("still bound to Twisted's own classes: " + (", ".join(stale) or "none"))


if __name__ == "__main__":
    main(sys.argv[1:])
