#!/usr/bin/env bash
# Builds benchmarks/epoch_steps.cpp against the project venv's torch (through scripts/env.sh) with setup.py's flags
# for the kernel copy torch picks here, then runs it.
#   Usage: bash benchmarks/epoch_steps.sh          ATEN_CPU_CAPABILITY=avx2 bash benchmarks/epoch_steps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${TMPDIR:-/tmp}/bp_torch_epoch_steps"
# The compiler's command line: setup.py's flags for that copy (benchmarks/crossover.py's setup_flags) and torch's
# include and library paths.
flags=$(bash scripts/env.sh python - <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from crossover import setup_flags
from torch.utils.cpp_extension import include_paths, library_paths
flags = setup_flags() + ["-std=c++20"] + [f"-I{p}" for p in include_paths()]
flags += [f"-L{p} -Wl,-rpath,{p}" for p in library_paths()]
print(" ".join(flags))
PY
)
echo "building $binary" >&2
# shellcheck disable=SC2086  # $flags is a list of words
g++ $flags benchmarks/epoch_steps.cpp -o "$binary" -ltorch_cpu -lc10
"$binary"
