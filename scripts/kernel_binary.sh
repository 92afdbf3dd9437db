#!/usr/bin/env bash
# Usage: bash scripts/kernel_binary.sh OUTPUT MAIN.cpp [EXTRA FLAG...]
#
# Builds a C++ program that links the real kernels: MAIN.cpp, the capability set (csrc/cpu/capability/*.cpp) for
# the copy torch picks on this machine (ATEN_CPU_CAPABILITY honoured, as at run time), and the baseline files it
# calls (csrc/cpu/partner.cpp, csrc/cpu/blas.cpp), each compiled with setup.py's flags for it (through
# benchmarks/crossover.py's setup_flags), plus the EXTRA FLAGs (a sanitizer, say) on every compile and the link,
# against the torch of the project's venv (scripts/env.sh). For benchmarks/epoch_steps.sh and scripts/tsan_test.sh.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash scripts/kernel_binary.sh OUTPUT MAIN.cpp [EXTRA FLAG...]" >&2; exit 2; }
output=$1
main=$2
shift 2
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Four lines: the capability copy's name, its flags, the baseline flags, and torch's include and library flags.
mapfile -t config < <(bash scripts/env.sh python - <<'PY'
import sys
sys.path.insert(0, "benchmarks")
import torch
from crossover import setup_flags
from torch.utils.cpp_extension import include_paths, library_paths
print(torch.backends.cpu.get_cpu_capability())
print(" ".join(setup_flags()))
print(" ".join(setup_flags("DEFAULT")))
paths = [f"-I{p}" for p in include_paths()] + [f"-L{p} -Wl,-rpath,{p}" for p in library_paths()]
print(" ".join(["-std=c++20"] + paths))
PY
)
capability=${config[0]}
read -ra copy_flags <<<"${config[1]}"
read -ra baseline_flags <<<"${config[2]}"
read -ra torch_flags <<<"${config[3]}"
objects=$(mktemp -d "${TMPDIR:-/tmp}/bp_torch_kernel_binary.XXXXXX")
trap 'rm -rf "$objects"' EXIT

echo "[kernel_binary] building $output: $main with the $capability kernel copy${*:+, extra flags: $*}" >&2
pids=()
compile() {   # compile SOURCE FLAGS...: one object, in the background (the files compile in parallel)
    local source=$1
    shift
    g++ -c "$@" "${torch_flags[@]}" "${extra[@]}" "$source" -o "$objects/$(echo "$source" | tr / _).o" &
    pids+=($!)
}
extra=("$@")
for source in csrc/cpu/capability/*.cpp; do compile "$source" "${copy_flags[@]}"; done
compile csrc/cpu/partner.cpp "${baseline_flags[@]}"
compile csrc/cpu/blas.cpp "${baseline_flags[@]}"
compile "$main" "${copy_flags[@]}"
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ "$status" -eq 0 ] || { echo "[kernel_binary] FAILED: a compile failed (above)" >&2; exit 1; }
g++ "${extra[@]}" -fopenmp "$objects"/*.o "${torch_flags[@]}" -ltorch_cpu -lc10 -o "$output"
