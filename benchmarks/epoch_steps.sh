#!/usr/bin/env bash
# Builds benchmarks/epoch_steps.cpp against the project venv's torch (through scripts/env.sh) with setup.py's CPU
# flags, then runs it.   Usage: bash benchmarks/epoch_steps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${TMPDIR:-/tmp}/bp_torch_epoch_steps"
# The compiler's command line: setup.py's cpu_flags() (read from its source: importing setup.py would run setup())
# and torch's include and library paths.
flags=$(bash scripts/env.sh python - <<'PY'
import ast
from torch.utils.cpp_extension import include_paths, library_paths
tree = ast.parse(open("setup.py").read())
keep = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.FunctionDef) and node.name == "cpu_flags")]
namespace = {}
exec(compile(ast.Module(keep, []), "setup.py", "exec"), namespace)
flags = namespace["cpu_flags"]() + ["-std=c++20"] + [f"-I{p}" for p in include_paths()]
flags += [f"-L{p} -Wl,-rpath,{p}" for p in library_paths()]
print(" ".join(flags))
PY
)
echo "building $binary" >&2
# shellcheck disable=SC2086  # $flags is a list of words
g++ $flags benchmarks/epoch_steps.cpp -o "$binary" -ltorch_cpu -lc10
"$binary"
