#!/usr/bin/env bash
# The bars of BENCHMARKS.md in one run: the layer, the training step and the epoch, on each kernel copy this CPU can
# run (ATEN_CPU_CAPABILITY picks torch's kernels and bp_torch's together), with torch's default threads.
#   bash benchmarks/all.sh [avx512 avx2 default]      # default: all three (those this CPU lacks are skipped)
# Shorter than each script's defaults (fewer rounds, a 20,000-sample epoch table), to fit one quiet spell of a
# shared machine; run a script alone with its defaults for a closer look.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
env_sh=scripts/env.sh
copies=("$@")
[ ${#copies[@]} -gt 0 ] || copies=(avx512 avx2 default)
# The host's placement of the two CPUs and their vector rate (benchmarks/host_probe.c), before each copy's run: the
# partner's bars depend on the first, and every bar on the second, which other tenants of the host can lower.
probe=$(mktemp)
trap 'rm -f "$probe"' EXIT
if [ "$(uname -m)" = x86_64 ] && cc -O2 -pthread benchmarks/host_probe.c -o "$probe" 2>/dev/null; then
    host_probe() { "$probe"; }
else
    host_probe() { echo "host: benchmarks/host_probe.c not built (x86-64 Linux with a C compiler only)"; }
fi
cpu_info=$(lscpu)
cpu="$(sed -n 's/^Model name: *//p' <<<"$cpu_info"), family $(sed -n 's/^CPU family: *//p' <<<"$cpu_info")"
cpu+=" model $(sed -n 's/^Model: *//p' <<<"$cpu_info")"
for copy in "${copies[@]}"; do
    have=$(ATEN_CPU_CAPABILITY=$copy bash "$env_sh" python -c \
        'import torch, bp_torch; print(torch.ops.bp_torch.kernel_capability())' 2>/dev/null | tail -n 1)
    if [ "${have,,}" != "$copy" ]; then
        echo "## $copy: not on this CPU (the kernels would run $have), skipped"
        continue
    fi
    echo "## $copy ($cpu, $(date -u +%F), commit $(git rev-parse --short HEAD))"
    host_probe
    ATEN_CPU_CAPABILITY=$copy bash "$env_sh" python benchmarks/bench_layers.py --rounds 15
    ATEN_CPU_CAPABILITY=$copy bash "$env_sh" python benchmarks/bench_mlp.py --rounds 15
    ATEN_CPU_CAPABILITY=$copy bash "$env_sh" python benchmarks/bench_epoch.py --rounds 3 --samples 20000 \
        --repeats 1
    host_probe
done
