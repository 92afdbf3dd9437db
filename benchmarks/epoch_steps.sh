#!/usr/bin/env bash
# Builds benchmarks/epoch_steps.cpp with the real kernel sources (scripts/kernel_binary.sh: setup.py's flags for the
# kernel copy torch picks here, against the venv's torch), then runs it.
#   Usage: bash benchmarks/epoch_steps.sh          ATEN_CPU_CAPABILITY=avx2 bash benchmarks/epoch_steps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${TMPDIR:-/tmp}/bp_torch_epoch_steps"
bash scripts/kernel_binary.sh "$binary" benchmarks/epoch_steps.cpp
"$binary"
