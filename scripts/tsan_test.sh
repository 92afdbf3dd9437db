#!/usr/bin/env bash
# Usage: bash scripts/tsan_test.sh
#
# The epoch's partner thread under ThreadSanitizer: builds tests/cpp/partner_test.cpp with the real kernel sources
# (scripts/kernel_binary.sh: the capability set of the copy torch picks here, csrc/cpu/partner.cpp,
# csrc/cpu/blas.cpp), every file compiled and linked with -fsanitize=thread, and runs it: the partner's hand-over
# on its own (exceptions on either thread included) and a partnered epoch of 1,025 shuffled mini-batches against
# the same epoch alone. It fails on any failed check and on any ThreadSanitizer report.
#
# torch itself is not instrumented; the partnered epoch does not enter torch's thread pool (its partner is a thread
# of its own, csrc/cpu/partner.h), so every access that two threads share is in instrumented code.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
binary="${TMPDIR:-/tmp}/bp_torch_partner_tsan"
start=$(date +%s)
bash scripts/kernel_binary.sh "$binary" tests/cpp/partner_test.cpp -fsanitize=thread -g -O1 -fno-omit-frame-pointer
echo "[tsan] built in $(( $(date +%s) - start )) s" >&2
# exitcode: a report fails the run even when every check passes; halt_on_error: the first report ends it.
start=$(date +%s)
status=0
TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1" "$binary" || status=$?
echo "[tsan] ran in $(( $(date +%s) - start )) s" >&2
case "$status" in
    0) echo "[tsan] clean: every check passed, no ThreadSanitizer report" >&2 ;;
    66) echo "[tsan] FAILED: ThreadSanitizer report above" >&2; exit 1 ;;
    *) echo "[tsan] FAILED: exit status $status" >&2; exit 1 ;;
esac
