"""Build the C core.  Switches (environment variables):

CDEFERRED_NO_EXTENSIONS=1  build nothing; the package runs on its pure-Python reference.
CDEFERRED_DEBUG=1          -O0 -g, C asserts and the chain invariant checker on.
CDEFERRED_SANITIZE=1       AddressSanitizer + UndefinedBehaviorSanitizer (implies DEBUG).
"""
import os
import platform

from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


extra_compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                      "-Wno-missing-field-initializers", "-fvisibility=hidden"]
extra_link_args = []
undef_macros = []
if flag("CDEFERRED_DEBUG") or flag("CDEFERRED_SANITIZE"):
    extra_compile_args += ["-O0", "-g3", "-DCDEF_DEBUG=1"]
    undef_macros.append("NDEBUG")
if flag("CDEFERRED_SANITIZE"):
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    extra_compile_args += sanitize
    extra_link_args += sanitize
if flag("CDEFERRED_WERROR"):
    extra_compile_args.append("-Werror")

ext_modules = []
if not flag("CDEFERRED_NO_EXTENSIONS") and platform.python_implementation() == "CPython":
    ext_modules.append(
        Extension(
            "cdeferred._cdeferred",
            sources=[
                "csrc/module.c",
                "csrc/deferred.c",
                "csrc/controllable.c",
                "csrc/deferredlist.c",
                "csrc/driver.c",
                "csrc/failure.c",
            ],
            depends=["csrc/cdeferred.h"],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
            undef_macros=undef_macros,
            # Without a compiler the install still succeeds, on the
            # pure-Python reference (tests/conftest.py refuses that quietly
            # happening unless CDEFERRED_NO_EXTENSIONS=1 asks for it).
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
