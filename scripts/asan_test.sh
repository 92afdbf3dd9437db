#!/usr/bin/env bash
# Usage: bash scripts/asan_test.sh [PYTEST ARGS...]
#
# Memory safety of csrc/: builds the C++ extension with AddressSanitizer and UndefinedBehaviorSanitizer in a
# temporary copy of this tree (the checkout's own bp_torch/_C*.so is never touched), then runs the C++-backend tests
# (`pytest -k "cpp and not browser"` by default) against that build. It fails on any test failure and on any
# sanitizer report.
#
# torch itself is not instrumented, so the ASan runtime must be the first library loaded (LD_PRELOAD; without it the
# import aborts), and leak detection is off (torch and CPython keep allocations until exit by design).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bp_torch_asan.XXXXXX")
if [ -z "${BP_TORCH_ASAN_KEEP:-}" ]; then trap 'rm -rf "$tmp"' EXIT; fi
echo "[asan] copying the tree to $tmp" >&2
# Tracked and untracked (not ignored) files: what is being worked on, without build outputs or the built .so.
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -- {} "$tmp" 2>/dev/null || true
rm -f "$tmp"/bp_torch/_C*.so

# The cached venv of scripts/env.sh (created if needed), used directly from here on so that nothing rebuilds the
# checkout's extension.
python=$(bash "$repo/scripts/env.sh" python -c 'import sys; print(sys.executable)')
export PATH="$(dirname "$python"):$PATH"

sanitizers="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
echo "[asan] building the extension with: $sanitizers" >&2
start=$(date +%s)
(cd "$tmp" && BP_TORCH_EXTRA_CFLAGS="$sanitizers" MAX_JOBS=${MAX_JOBS:-2} \
    "$python" setup.py -q build_ext --inplace) >"$tmp/build.log" 2>&1 || true
if ! ls "$tmp"/bp_torch/_C*.so >/dev/null 2>&1; then
    grep -E 'error|bp_torch:' "$tmp/build.log" | head -40 >&2
    echo "[asan] FAILED: the sanitized extension did not build (log: $tmp/build.log)" >&2
    exit 1
fi
echo "[asan] built in $(( $(date +%s) - start )) s" >&2
for probe in __asan_report_load8 __ubsan_handle_; do   # a build that silently dropped the flags proves nothing
    nm -D "$tmp"/bp_torch/_C*.so | grep -c "$probe" >/dev/null || { echo "[asan] FAILED: no $probe in the build" >&2; exit 1; }
done

asan_lib=$(gcc -print-file-name=libasan.so)
ubsan_lib=$(gcc -print-file-name=libubsan.so)
log="$tmp/sanitizer"
export LD_PRELOAD="$asan_lib $ubsan_lib"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:log_path=$log.asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$log.ubsan"
export PYTHONPATH="$tmp${PYTHONPATH:+:$PYTHONPATH}"
export BP_TORCH_BACKEND=cpp
# Not the browser tests of the explain page: the preloaded sanitizer runtimes would reach Playwright's node driver
# and chromium, which are not ours to check; the page's numbers are also checked without a browser, and are in.
[ $# -gt 0 ] || set -- -k "cpp and not browser" tests

cd "$tmp"
# The copy must be what gets imported, not the editable install of the checkout.
"$python" -c "import bp_torch, sys; f = bp_torch._ops._C.__file__; print('[asan] testing', f, file=sys.stderr); \
assert f.startswith('$tmp'), f"
start=$(date +%s)
status=0
"$python" -m pytest -q -p no:cacheprovider "$@" || status=$?
echo "[asan] tests took $(( $(date +%s) - start )) s" >&2

reports=$(ls "$log".* 2>/dev/null || true)
if [ -n "$reports" ]; then
    cat $reports >&2
    echo "[asan] FAILED: sanitizer report(s) above" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "[asan] FAILED: pytest exited with $status" >&2
    exit "$status"
fi
echo "[asan] clean: no AddressSanitizer or UndefinedBehaviorSanitizer report" >&2
