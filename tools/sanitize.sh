#!/usr/bin/env bash
# Build the C core with AddressSanitizer + UndefinedBehaviorSanitizer and run
# the test suite on it.  Works on a copy of the tree, so the normal build in
# the checkout is left alone.
#
#   tools/sanitize.sh                 # whole suite
#   tools/sanitize.sh tests/test_x.py # a subset (any pytest arguments)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/cdeferred-asan.XXXXXX)"
trap 'rm -rf "$work"' EXIT

cp -r "$root/setup.py" "$root/pyproject.toml" "$root/README.md" "$root/LICENSE" \
      "$root/csrc" "$root/cdeferred" "$root/tests" "$root/examples" "$work"/
[ -d "$root/benchmarks" ] && cp -r "$root/benchmarks" "$work"/
rm -f "$work"/cdeferred/*.so
cd "$work"
CDEFERRED_SANITIZE=1 python3 setup.py -q build_ext --inplace >/dev/null

libasan="$(gcc -print-file-name=libasan.so)"
libubsan="$(gcc -print-file-name=libubsan.so)"
# detect_leaks=0: CPython itself keeps memory alive at exit by design.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc
export CDEFERRED_SANITIZED=1
LD_PRELOAD="$libasan $libubsan" python3 -m pytest -q -p no:cacheprovider -x "$@"
