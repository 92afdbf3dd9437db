#!/usr/bin/env bash
# Usage: bash scripts/fresh_install_check.sh
#
# A new user's first run, from nothing. In a temporary copy of this tree, with a new HOME and an empty
# BP_TORCH_CACHE (so no venv, pip cache or build of an earlier run can hide a broken install step), it runs:
#   1. the README's set-up, `bash scripts/env.sh ...`, which creates the venv and builds the C++ extension;
#   2. the same with BP_TORCH_NO_EXT=1 (the pure-Python backend);
#   3. `pip install --no-build-isolation .` into that venv, as into a user's own torch environment, with and without
#      BP_TORCH_NO_EXT=1, imported from outside the tree.
# After each it imports bp_torch, checks the active backend, and checks one sigmoid_linear forward and backward
# against torch autograd. CI runs it first (.ci/run). It takes about 5 minutes and 6 GB in $TMPDIR, removed after.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bp_torch_fresh.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/tree" "$tmp/home"
# Tracked and untracked (not ignored) files: the tree as committed or being worked on, without build outputs.
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents -- {} "$tmp/tree"
export HOME="$tmp/home" BP_TORCH_CACHE="$tmp/cache"
unset BP_TORCH_NO_EXT BP_TORCH_BACKEND PYTHONPATH

check() {  # check EXPECTED_BACKEND WHERE: what `import bp_torch` gives, and one op against autograd
    python - "$1" "$2" <<'PY'
import sys, torch, bp_torch
expected, where = sys.argv[1], sys.argv[2]
assert bp_torch.backend() == expected, f"backend {bp_torch.backend()!r}, expected {expected!r}"
assert bp_torch.__file__.startswith(where), f"bp_torch imported from {bp_torch.__file__}, expected under {where}"
x = torch.randn(5, 4, dtype=torch.float64)
layer = bp_torch.SigmoidLinear(4, 3, dtype=torch.float64)
ours = layer(x)
ours.sum().backward()
ref = torch.sigmoid(torch.nn.functional.linear(x, layer.weight, layer.bias))
(grad_ref,) = torch.autograd.grad(ref.sum(), layer.weight)
torch.testing.assert_close(ours, ref)
torch.testing.assert_close(layer.weight.grad, grad_ref)
print(f"[fresh] ok: backend {expected}, bp_torch from {bp_torch.__file__}", file=sys.stderr)
PY
}

cd "$tmp/tree"
start=$(date +%s)
bash scripts/env.sh bash -c "$(declare -f check); check cpp $tmp/tree/bp_torch"
echo "[fresh] first run of scripts/env.sh (venv + C++ build): $(( $(date +%s) - start )) s" >&2
start=$(date +%s)
BP_TORCH_NO_EXT=1 bash scripts/env.sh bash -c "$(declare -f check); check python $tmp/tree/bp_torch"
echo "[fresh] BP_TORCH_NO_EXT=1 scripts/env.sh (Python-only rebuild): $(( $(date +%s) - start )) s" >&2

venv=$(ls -d "$BP_TORCH_CACHE"/venv-*/ | head -n 1)
venv=${venv%/}
export PATH="$venv/bin:$PATH"
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for no_ext in "" 1; do
    expected=$([ -z "$no_ext" ] && echo cpp || echo python)
    rm -rf build bp_torch/_C*.so
    log="$tmp/pip-install$no_ext.log"
    start=$(date +%s)
    BP_TORCH_NO_EXT=$no_ext python -m pip install --no-build-isolation --no-deps . >"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; echo "[fresh] FAILED: pip install --no-build-isolation . (log: $log)" >&2; exit 1; }
    echo "[fresh] pip install --no-build-isolation . (BP_TORCH_NO_EXT=$no_ext): $(( $(date +%s) - start )) s" >&2
    (cd "$HOME" && check "$expected" "$site/bp_torch")
done
echo "[fresh] all install paths work from an empty cache" >&2
