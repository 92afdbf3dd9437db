#!/usr/bin/env bash
# Usage: bash scripts/env.sh COMMAND [ARGS...]
#
# Runs COMMAND inside bp_torch's development environment, creating it first if needed:
#   1. a venv under ~/.cache/bp_torch/, keyed by the hash of requirements.txt, so the 5 GB torch install
#      happens once per set of pins and is reused by every later run and every clone;
#   2. bp_torch itself, installed in editable mode with `pip install --no-build-isolation -e .`.
# COMMAND runs in the directory env.sh was called from, so relative paths in it mean what the user typed; this
# checkout goes first on PYTHONPATH, so `import bp_torch` finds its code from any directory.
set -euo pipefail
caller_dir=$PWD
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
cache=${BP_TORCH_CACHE:-$HOME/.cache/bp_torch}
case "$cache" in /*) ;; *) cache="$caller_dir/$cache" ;; esac  # a relative BP_TORCH_CACHE is the caller's
req_hash=$(sha256sum requirements.txt | cut -c1-16)
venv="$cache/venv-$req_hash"

# A failure is one line: what failed, the line of the log that says why, and where the whole log is (not pip's
# wall of output). The compiler's first error is the cause; of pip's and Python's errors the last one is.
error_line() {
    grep -m1 -oE '[^ ]+\.(cpp|h):[0-9]+:[0-9]+: (fatal )?error: .*' "$1" ||
        grep -oE '(ERROR|[A-Za-z]*Error): .*|bp_torch: compiling the C\+\+ extension failed.*' "$1" | tail -n 1 | grep . ||
        echo "no error line in the log"
}
fail() { echo "[env] FAILED: $1; full log: $2" >&2; exit 1; }

# A phase of the set-up: a line when it starts, one when it ends with its elapsed seconds, and while it runs a line
# every 30 s with the last thing its log says it is doing (pip's "Collecting torch...", say). COMMAND's output goes
# to LOG.
phase() {  # phase TITLE LOG COMMAND...
    local title=$1 log=$2 t0=$SECONDS ticker
    shift 2
    echo "[env] $title ..." >&2
    ( while :; do
          for _ in $(seq 30); do sleep 1; done      # short sleeps: none outlives the phase by more than a second
          echo "[env]   ... $((SECONDS - t0)) s: $(grep -E '^ *(Collecting|Downloading|Installing|Building|Running)' \
              "$log" 2>/dev/null | tail -n 1 | cut -c1-100)" >&2
      done ) &
    ticker=$!
    local status=0
    "$@" >"$log" 2>&1 || status=$?
    kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
    [ "$status" -ne 0 ] || echo "[env] $title: done in $((SECONDS - t0)) s" >&2
    return "$status"
}

start=$(date +%s)
# One set-up at a time: parallel runs (two terminals, a test and a benchmark, two clones) share the cache, and two
# first runs at once would each delete the venv the other is installing.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    echo "[env] creating $venv (once per requirements.txt: about 6 GB, several minutes)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    log="$cache/create-venv-$req_hash.log"     # not venv-*: that names the venvs themselves
    phase "creating the venv" "$log" "$PYTHON" -m venv "$venv" || fail "creating the venv failed" "$log"
    log="$venv/install.log"
    phase "installing requirements.txt (torch and the rest, about 5 GB)" "$log" \
        bash -c '"$1" -m pip install -r requirements.txt && "$1" -c "import torch, torchvision"' _ "$venv/bin/python" ||
        fail "installing requirements.txt failed ($(error_line "$log"))" "$log"
    touch "$venv/.complete"
fi

if [ -z "${BP_TORCH_NO_EXT:-}" ] && ! command -v "${CXX:-c++}" >/dev/null; then
    echo "[env] no C++ compiler found: installing the Python backend only" >&2
    export BP_TORCH_NO_EXT=1
fi

# An editable install: Python edits take effect at once; the extension is rebuilt in place (bp_torch/_C*.so) when
# setup.py or csrc/ change. The build's key is kept in this checkout (build/), and this checkout goes first on
# PYTHONPATH: the venv is shared by every clone, and its editable install points at whichever built last, so
# without this two clones used at the same time would import each other's code.
build_key=$( (echo "NO_EXT=${BP_TORCH_NO_EXT:-} DEBUG=${BP_TORCH_DEBUG:-} venv=$venv"; cat setup.py pyproject.toml;
              find csrc -type f -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
stamp=build/.bp_torch-build-key
have_ext=$(ls bp_torch/_C*.so 2>/dev/null || true)
if [ "$(cat "$stamp" 2>/dev/null)" != "$build_key" ] || \
   { [ -z "$have_ext" ] && [ "${BP_TORCH_NO_EXT:-}" != 1 ]; }; then
    rm -f bp_torch/_C*.so
    log="$venv/build.log"
    phase "building bp_torch (pip install --no-build-isolation -e .)" "$log" \
        "$venv/bin/python" -m pip install --no-build-isolation --no-deps -e . ||
        fail "building bp_torch failed ($(error_line "$log"))" "$log"
    if [ "${BP_TORCH_NO_EXT:-}" != 1 ] && ! ls bp_torch/_C*.so >/dev/null 2>&1; then
        fail "the C++ extension did not build ($(error_line "$log")); BP_TORCH_NO_EXT=1 skips it" "$log"
    fi
    mkdir -p build
    echo "$build_key" > "$stamp"
fi
flock -u 9
elapsed=$(( $(date +%s) - start ))
[ "$elapsed" -lt 10 ] || echo "[env] ready in $elapsed s" >&2

export PATH="$venv/bin:$PATH"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$caller_dir"
# Python puts the current directory before PYTHONPATH for `python -c` and `python -m`: another checkout's bp_torch
# there would be the one imported, so say so rather than let it pass unseen.
if [ "$caller_dir" != "$repo" ] && [ -f "$caller_dir/bp_torch/__init__.py" ]; then
    echo "[env] note: $caller_dir/bp_torch comes before $repo/bp_torch for python -c and python -m here" >&2
fi
exec "$@"
