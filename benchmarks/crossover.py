"""Loops vs BLAS for each of the three products of a layer (csrc/cpu/capability/passes.cpp), float32, on the shapes
around the crossover: prints, per shape, the time of each path and which wins. Run via bench_mlp.py
--crossover."""

import ast
import os

import torch
from torch.utils import cpp_extension

from common import compare

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ["Z = A W^T", "W += a D^T A", "D W * s'"]
# (batch, in, out): Nielsen's layers, then growing towards the large case
SHAPES = [
    (10, 784, 30),
    (10, 30, 10),
    (10, 784, 100),
    (32, 784, 100),
    (64, 256, 256),
    (10, 1024, 1024),
    (128, 256, 256),
    (64, 512, 512),
    (256, 256, 256),
    (256, 1024, 1024),
]


def setup_flags(capability=None):
    """The compiler flags setup.py compiles the kernel copy for `capability` with (default: the copy torch picks on
    this machine, ATEN_CPU_CAPABILITY included): its base_flags() and capability_flags(), run on their own
    (executing all of setup.py would run setup()). The loops must be timed as the extension compiles them."""
    path = os.path.join(HERE, "..", "setup.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    constants = ("IS_X86_64", "CAPABILITIES")
    keep = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in constants for t in node.targets))
        or (isinstance(node, ast.FunctionDef) and node.name in ("base_flags", "capability_flags"))
    ]
    namespace = {}
    exec(compile(ast.Module(keep, type_ignores=[]), path, "exec"), namespace)
    capability = capability or torch.backends.cpu.get_cpu_capability()
    flags = namespace["base_flags"]()
    if capability in namespace["CAPABILITIES"]:
        flags += namespace["capability_flags"](capability)
    return flags


def main(rounds):
    flags = setup_flags()
    # The module links the real sources: the loops and the layer products, and the BLAS side they call.
    sources = [os.path.join(HERE, "crossover.cpp")] + [
        os.path.join(HERE, "..", "csrc", "cpu", name) for name in ("capability/passes.cpp", "blas.cpp", "partner.cpp")
    ]
    ext = cpp_extension.load(
        "bp_torch_crossover", sources, extra_cflags=flags, extra_ldflags=["-fopenmp"], verbose=False
    )
    print(
        f"{torch.get_num_threads()} threads, float32, loops built with {' '.join(flags)} "
        "vs at::cpu::mm_out/addmm_out (MKL)"
    )
    print()
    print("| (batch, in, out) | MACs | " + " | ".join(f"{k}: loops / BLAS" for k in KINDS) + " |")
    print("|---|---|" + "---|" * len(KINDS))
    for n, n_in, n_out in SHAPES:
        a, w, d, z = torch.rand(n, n_in), torch.rand(n_out, n_in) * 0.01, torch.rand(n, n_out), torch.rand(n, n_in)
        cells = []
        for kind in range(3):
            reps = max(1, int(2e6 / (n * n_in * n_out)))
            variants = {
                p: (lambda p=p: ext.run(kind, p == "loops", n, n_in, n_out, a, w, d, z, reps))
                for p in ("loops", "blas")
            }
            r = compare(variants, "blas", rounds=rounds)
            cells.append(
                f"{r['loops'][0] / reps * 1e6:.1f} / {r['blas'][0] / reps * 1e6:.1f} us (**{r['loops'][1]:.2f}**)"
            )
        print(f"| ({n}, {n_in}, {n_out}) | {n * n_in * n_out / 1e6:.2f}M | " + " | ".join(cells) + " |")
