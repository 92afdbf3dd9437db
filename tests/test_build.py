"""The build: with clang as well as gcc, loud when a compile fails, and an import that says when the extension it
expected is missing.

The clang test skips when clang++ is not installed, unless CI=true (.ci/run installs Debian's clang and libomp-dev,
whose OpenMP headers clang's -fopenmp needs). Each build runs in a temporary copy of the tree.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def copy_tree(tmp_path):
    """Tracked and untracked (not ignored) files of this checkout: its sources, without build outputs."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    tree = tmp_path / "tree"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    return tree


def build(tree, **env):
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tree,
        env={**os.environ, "MAX_JOBS": os.environ.get("MAX_JOBS", "2"), **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )


CHECK = """
import torch, bp_torch
assert bp_torch._ops._C.__file__.startswith({tree!r}), bp_torch._ops._C.__file__
bp_torch.set_backend("cpp")
g = torch.Generator().manual_seed(0)
x = torch.randn(7, 13, dtype=torch.float64, generator=g)
net = bp_torch.SigmoidMLP([13, 9, 5], dtype=torch.float64)
out = net(x)
out.sum().backward()
ref = x
for layer in net:
    ref = torch.sigmoid(torch.nn.functional.linear(ref, layer.weight, layer.bias))
grads = torch.autograd.grad(ref.sum(), list(net.parameters()))
torch.testing.assert_close(out, ref)
for p, g_ref in zip(net.parameters(), grads):
    torch.testing.assert_close(p.grad, g_ref)
print("ok", torch.ops.bp_torch.kernel_capability())
"""


@pytest.mark.backends("python")
def test_builds_with_clang(tmp_path):
    """clang++ compiles every file (the kernel copies included) and the library it links works."""
    if shutil.which("clang++") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("clang++ is missing (apt-get install clang libomp-dev)")
        pytest.skip("clang++ is not installed (apt-get install clang libomp-dev)")
    tree = copy_tree(tmp_path)
    result = build(tree, CC="clang", CXX="clang++", LDSHARED="clang++ -shared")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert "clang" in result.stdout + result.stderr  # the compile lines name the compiler used
    library = next(tree.glob("bp_torch/_C*.so"))
    comment = subprocess.run(["readelf", "-p", ".comment", str(library)], capture_output=True, text=True).stdout
    assert "clang" in comment, comment
    from test_isa import VECTOR_COPY, vector_instructions

    outside = [f for f in vector_instructions(str(library)) if not VECTOR_COPY.search(f)]
    assert not outside, f"vector instructions in baseline code: {outside[:10]}"
    check = subprocess.run(
        [sys.executable, "-c", CHECK.format(tree=str(tree))],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.returncode == 0 and "ok" in check.stdout, check.stdout + check.stderr


@pytest.mark.backends("python")
def test_a_failed_compile_fails_the_build_with_the_compilers_first_error(tmp_path):
    tree = copy_tree(tmp_path)
    source = tree / "csrc" / "cpu" / "quadratic_cost.cpp"
    source.write_text(source.read_text().replace("namespace bp_torch {", "namespace bp_torch {\nint broken = ;", 1))
    result = build(tree)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "bp_torch: compiling the C++ extension failed: " in output, output[-3000:]
    line = next(ln for ln in output.splitlines() if "bp_torch: compiling the C++ extension failed: " in ln)
    assert "quadratic_cost.cpp" in line and "error" in line, line
    assert not list(tree.glob("bp_torch/_C*.so"))


# --- the import, when the extension is missing ----------------------------------------------------------------------

IMPORT = """
import sys, warnings
# Not the venv's editable install of some checkout (setuptools' finder would find its bp_torch._C): only the copy.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import bp_torch
print(bp_torch.backend())
for w in caught:
    print("WARNING", w.category.__name__, w.message)
"""


@pytest.mark.backends("python")
@pytest.mark.parametrize(
    "built_with_extension, no_ext_now, warns",
    [
        (True, False, True),  # built with it, now missing: say so
        (None, False, True),  # never built (no _build_info.py): the extension is expected
        (False, False, False),  # built with BP_TORCH_NO_EXT=1: silent
        (True, True, False),  # BP_TORCH_NO_EXT=1 at import: silent
    ],
)
def test_a_missing_extension_warns_once_unless_none_was_wanted(tmp_path, built_with_extension, no_ext_now, warns):
    package = tmp_path / "bp_torch"
    shutil.copytree(
        ROOT / "bp_torch", package, ignore=shutil.ignore_patterns("_C*.so", "_build_info.py", "__pycache__")
    )
    if built_with_extension is not None:
        (package / "_build_info.py").write_text(f"EXTENSION = {built_with_extension}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("BP_TORCH_NO_EXT", "BP_TORCH_BACKEND")}
    env["PYTHONPATH"] = str(tmp_path)
    if no_ext_now:
        env["BP_TORCH_NO_EXT"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", IMPORT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "python"
    ours = [ln for ln in lines[1:] if "bp_torch" in ln]
    if warns:
        assert len(ours) == 1, lines
        assert "RuntimeWarning" in ours[0] and "C++ extension is missing" in ours[0]
        assert "No module named 'bp_torch._C'" in ours[0]  # the reason
        assert "BP_TORCH_NO_EXT=1" in ours[0]  # and the way to a pure-Python install
    else:
        assert ours == [], lines


# Headers and names that change between torch releases without notice: autograd's node internals, dynamo's and
# functorch's, ATen's detail namespace, and the autograd impl functions. The extension uses torch's public C++ API
# only (torch::autograd::Function, the dispatcher, ATen's ops), so it builds against the next torch unchanged.
INTERNAL_API = [
    "torch/csrc/autograd/functions/",
    "torch/csrc/dynamo/",
    "functorch",
    "at::detail::",
    "torch::autograd::impl::",
    "impl::bump_version",
    "SavedVariable",
    "collect_next_edges",
]


def test_the_extension_uses_only_torchs_public_cpp_api():
    sources = sorted(p for p in (ROOT / "csrc").rglob("*") if p.suffix in (".cpp", ".h", ".cu", ".cuh"))
    assert sources
    found = [
        f"{p.relative_to(ROOT)}:{n}: {name}"
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        for name in INTERNAL_API
        if name in line
    ]
    assert found == []
