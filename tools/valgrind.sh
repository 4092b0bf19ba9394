#!/usr/bin/env bash
# Run tests under valgrind memcheck against the C core as built in the tree
# (python setup.py build_ext --inplace).  Slow (~50x): pass a subset.
#
#   tools/valgrind.sh tests/test_cancellation.py tests/test_controllable.py
#
# Exits non-zero if memcheck reports an error (invalid read/write or free,
# use of an uninitialised value) with a frame in cdeferred's extension.
# Errors entirely inside CPython or libc are listed but not counted: without
# CPython's suppression file, valgrind flags its int.from_bytes at start-up
# and glibc's AVX2 wmemcmp, in every Python program.  Leaks are not checked
# here (CPython keeps memory until exit by design): tests/test_leaks.py does.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="$(python3 -c 'import sys; print(sys.executable)')"
log="$(mktemp /tmp/cdeferred-valgrind.XXXXXX.log)"
set +e
PYTHONMALLOC=malloc valgrind --tool=memcheck --leak-check=no \
    --track-origins=yes --num-callers=40 --trace-children=no \
    --log-file="$log" \
    "$python" -m pytest -q -p no:cacheprovider -x "$@"
tests=$?
python3 - "$log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n==\d+== \n", text)
errors = [b for b in blocks if re.search(r"==\d+== (Invalid|Use of uninit|Conditional jump|Mismatched|Source and destination)", b)]
ours = [b for b in errors if "_cdeferred" in b or "csrc/" in b]
print(f"valgrind: {len(errors)} error contexts, {len(ours)} in cdeferred's extension")
for b in ours:
    print(b)
sys.exit(1 if ours else 0)
PY
ours=$?
set -e
echo "full valgrind log: $log"
exit $(( tests != 0 ? tests : ours ))
