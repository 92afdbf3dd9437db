#!/usr/bin/env bash
# Usage: bash scripts/env.sh COMMAND [ARGS...]
#
# Runs COMMAND inside bp_torch's development environment, creating it first if needed:
#   1. a venv under ~/.cache/bp_torch/, keyed by the hash of requirements.txt, so the 5 GB torch install
#      happens once per set of pins and is reused by every later run and every clone;
#   2. bp_torch itself, installed in editable mode with `pip install --no-build-isolation -e .`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
cache=${BP_TORCH_CACHE:-$HOME/.cache/bp_torch}
req_hash=$(sha256sum requirements.txt | cut -c1-16)
venv="$cache/venv-$req_hash"

if [ ! -f "$venv/.complete" ]; then
    echo "[env] creating $venv (once per requirements.txt)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -r requirements.txt 2>&1 | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -c "import torch, torchvision" || { echo "[env] the install failed" >&2; exit 1; }
    touch "$venv/.complete"
fi

# One build at a time: parallel runs (two terminals, a test and a benchmark) share the venv.
exec 9>"$cache/.lock"
flock 9
if [ -z "${BP_TORCH_NO_EXT:-}" ] && ! command -v "${CXX:-c++}" >/dev/null; then
    echo "[env] no C++ compiler found: installing the Python backend only" >&2
    export BP_TORCH_NO_EXT=1
fi

# An editable install: Python edits take effect at once; the extension is rebuilt in place (bp_torch/_C*.so) when
# setup.py or csrc/ change. The build's key is kept in this checkout (build/), and this checkout goes first on
# PYTHONPATH: the venv is shared by every clone, and its editable install points at whichever built last, so
# without this two clones used at the same time would import each other's code.
build_key=$( (echo "NO_EXT=${BP_TORCH_NO_EXT:-}"; cat setup.py;
              find csrc -type f -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-16)
stamp=build/.bp_torch-build-key
have_ext=$(ls bp_torch/_C*.so 2>/dev/null || true)
if [ "$(cat "$stamp" 2>/dev/null)" != "$build_key" ] || \
   { [ -z "$have_ext" ] && [ "${BP_TORCH_NO_EXT:-}" != 1 ]; }; then
    echo "[env] building bp_torch (pip install --no-build-isolation -e .)" >&2
    rm -f bp_torch/_C*.so
    "$venv/bin/python" -m pip install --no-build-isolation --no-deps -e . >"$venv/build.log" 2>&1 || true
    if [ "${BP_TORCH_NO_EXT:-}" != 1 ] && ! ls bp_torch/_C*.so >/dev/null 2>&1; then
        grep -E 'error|bp_torch:' "$venv/build.log" | head -40 >&2
        echo "[env] the C++ extension failed to build; full log: $venv/build.log" >&2
        exit 1
    fi
    mkdir -p build
    echo "$build_key" > "$stamp"
fi
flock -u 9

export PATH="$venv/bin:$PATH"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
