"""One build for every x86-64 CPU: the SIMD kernels are compiled once per capability (baseline, AVX2, AVX-512) and
chosen at run time, everything else is baseline code.

* the choice follows torch's (ATEN_CPU_CAPABILITY included), and every copy this CPU can run computes what autograd
  does, to the kernel tests' tolerances;
* the built library has no vector instruction outside the AVX2 and AVX-512 copies (a header function merged from
  a vector copy into baseline code would crash an older CPU at import);
* under qemu-x86_64 as an AVX2-only CPU (Haswell) and as a CPU without AVX (Nehalem), the extension imports and
  computes the native run's numbers.

The qemu tests skip when qemu-x86_64 is not installed, unless CI=true (.ci/run installs Debian's qemu-user).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bp_torch

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["DEFAULT", "AVX2", "AVX512"]
IS_X86_64 = os.uname().machine in ("x86_64", "AMD64")
# What this CPU runs, per torch: the capabilities up to its best.
NATIVE = torch.backends.cpu.get_cpu_capability()
RUNNABLE = ORDER[: ORDER.index(NATIVE) + 1] if NATIVE in ORDER else ["DEFAULT"]

pytestmark = pytest.mark.backends("cpp")


def run_python(code, env=None, prefix=(), timeout=600):
    """Runs `code` in a fresh Python (this checkout first on the path), returns its stdout."""
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


# --- the run-time choice -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("capability", ORDER)
def test_the_kernel_copy_follows_aten_cpu_capability(backend, capability):
    """ATEN_CPU_CAPABILITY=default|avx2|avx512 picks the copy, as it picks torch's own kernels; one the CPU cannot
    run is never picked (the best it can run instead)."""
    out = run_python(
        "import torch, bp_torch; print(torch.backends.cpu.get_cpu_capability(), "
        "torch.ops.bp_torch.kernel_capability())",
        env={"ATEN_CPU_CAPABILITY": capability.lower()},
    )
    torch_choice, ours = out.split()
    expected = capability if capability in RUNNABLE else RUNNABLE[-1]
    if not IS_X86_64:
        expected = "DEFAULT"
    assert ours == expected, (torch_choice, ours)


def test_the_default_copy_is_the_cpus_best(backend):
    expected = NATIVE if IS_X86_64 and NATIVE in ORDER else "DEFAULT"
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch, bp_torch; print(torch.ops.bp_torch.kernel_capability())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == expected


# The kernel tests, run whole under each capability: the loops with their vector width and register blocks, their
# tails, the BLAS path and the epoch's partner thread, against autograd at the same tolerances.
KERNEL_TESTS = [
    "tests/test_sigmoid_linear.py",
    "tests/test_sigmoid_mlp.py",
    "tests/test_sgd_epoch.py",
    "tests/test_two_layer.py",
    "tests/test_numerics.py",
    "tests/test_sgd_cost_and_decay.py",
    "tests/test_sgd_kernels_cross_entropy.py",
    "tests/test_cross_entropy_cost.py",
    "tests/test_threads.py::test_products_split_over_threads_equal_autograd",
    "tests/test_threads.py::test_products_around_the_loops_and_blas_thresholds_equal_autograd",
    "tests/test_threads.py::test_split_loop_products_do_not_depend_on_the_thread_count",
]


@pytest.mark.parametrize("capability", ORDER)
def test_kernel_tests_pass_under_each_capability(backend, capability):
    if capability not in RUNNABLE:
        pytest.skip(f"this CPU has no {capability} (torch's best here: {NATIVE})")
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": capability.lower(),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    # The copy asked for is the one these runs use.
    assert (
        run_python(
            "import torch, bp_torch; print(torch.ops.bp_torch.kernel_capability())",
            env={"ATEN_CPU_CAPABILITY": capability.lower()},
        ).strip()
        == capability
    )
    # Not the torch.compile tests: with ATEN_CPU_CAPABILITY set below the CPU's best, inductor itself goes wrong on
    # plain torch ops, without bp_torch: a compiled three-layer sigmoid chain with the quadratic cost gives another
    # cost than eager under "avx2" on an AVX-512 CPU, and under "default" its generated C++ does not compile
    # (BENCHMARKS.md, "Inductor under ATEN_CPU_CAPABILITY").
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-k",
            "cpp and not torch_compile",
            *KERNEL_TESTS,
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]


# --- no vector instruction outside the vector copies --------------------------------------------------------------

# Functions of the vector copies: named in their namespaces, or clang's OpenMP regions outlined from them (local
# symbols, which the linker never merges with another file's).
VECTOR_COPY = re.compile(r"cpu_AVX2|cpu_AVX512|::AVX2::|::AVX512::|^\.omp_outlined\.")


def vector_instructions(library):
    """{function: [instructions using ymm/zmm/mask registers or a VEX/EVEX encoding (v-prefixed mnemonics)]}."""
    objdump = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", library], capture_output=True, text=True, check=True
    ).stdout
    found, function = {}, None
    for line in objdump.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            function = header.group(1)
            continue
        fields = line.split("\t")
        if function is None or len(fields) < 2 or not fields[-1].strip():
            continue
        instruction = fields[-1].strip()
        if instruction.split()[0].startswith("v") or re.search(r"%[yz]mm|%k[0-7]\b", instruction):
            found.setdefault(function, []).append(instruction)
    return found


@pytest.mark.skipif(not IS_X86_64, reason="x86-64 only")
def test_no_vector_instructions_outside_the_vector_copies(backend):
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    found = vector_instructions(bp_torch._ops._C.__file__)
    outside = {f: insns[:3] for f, insns in found.items() if not VECTOR_COPY.search(f)}
    assert not outside, f"vector instructions in baseline code: {dict(list(outside.items())[:10])}"
    # The copies are there, and use their registers: the check above looks at a real build.
    assert any("cpu_AVX512" in f and any("zmm" in i for i in insns) for f, insns in found.items())
    assert any("cpu_AVX2" in f and any("ymm" in i for i in insns) for f, insns in found.items())


# --- on older CPUs, emulated ----------------------------------------------------------------------------------------

# A forward, a backward and an sgd_step in float64 (and float32), their numbers printed as JSON.
WORKLOAD = """
import json, torch, bp_torch
bp_torch.set_backend("cpp")
out = {"capability": torch.ops.bp_torch.kernel_capability()}
for dtype in (torch.float32, torch.float64):
    g = torch.Generator().manual_seed(0)
    sizes = [37, 29, 13]
    ws = [torch.randn(o, i, generator=g, dtype=dtype) / i ** 0.5 for i, o in zip(sizes, sizes[1:])]
    bs = [torch.randn(o, generator=g, dtype=dtype) for o in sizes[1:]]
    x = torch.randn(11, sizes[0], generator=g, dtype=dtype)
    y = torch.rand(11, sizes[-1], generator=g, dtype=dtype)
    net = bp_torch.SigmoidMLP(sizes, dtype=dtype)
    with torch.no_grad():
        for layer, w, b in zip(net, ws, bs):
            layer.weight.copy_(w); layer.bias.copy_(b)
    a = net(x)
    bp_torch.QuadraticCost()(a, y).backward()
    grads = [p.grad.tolist() for p in net.parameters()]
    cost = net.sgd_step(x, y, lr=0.5)
    out[str(dtype)] = {"forward": a.tolist(), "grads": grads, "cost": float(cost),
                       "after_step": [p.tolist() for p in net.parameters()]}
print(json.dumps(out))
"""


def flatten(v):
    return [u for w in v for u in flatten(w)] if isinstance(v, list) else [v]


@pytest.mark.skipif(not IS_X86_64, reason="x86-64 only")
@pytest.mark.parametrize("cpu, capability", [("Haswell", "AVX2"), ("Nehalem", "DEFAULT")])
def test_runs_on_an_older_cpu_under_qemu(backend, cpu, capability):
    """An AVX2-only CPU (Haswell) and one without AVX (Nehalem), emulated: the same library imports there, runs its
    AVX2 or baseline copy, and gives the native run's numbers (to rounding: another copy sums in another order)."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip(
            "a sanitized build (scripts/asan_test.sh) needs its runtime preloaded, which an emulated process "
            "does not get; the normal build is tested here"
        )
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-x86_64 is missing (apt-get install qemu-user)")
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    native = json.loads(run_python(WORKLOAD))
    emulated = json.loads(run_python(WORKLOAD, prefix=(qemu, "-cpu", cpu), env={"OMP_NUM_THREADS": "1"}))
    assert emulated["capability"] == capability
    for dtype, tol in (("torch.float32", 1e-5), ("torch.float64", 1e-12)):
        for key in ("forward", "grads", "cost", "after_step"):
            a = torch.tensor(flatten([native[dtype][key]]), dtype=torch.float64)
            b = torch.tensor(flatten([emulated[dtype][key]]), dtype=torch.float64)
            torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=f"{cpu} {dtype} {key}")
