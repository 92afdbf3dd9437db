"""Forward + backward of one SigmoidLinear layer, per backend, against nn.Sequential(nn.Linear, nn.Sigmoid).

    bash scripts/env.sh python benchmarks/bench_layers.py

The input requires grad (a layer inside a network), so the backward computes dC/dx, dC/dW and dC/db. float32,
torch's default number of threads. Prints a markdown table for BENCHMARKS.md.
"""

import argparse

import torch
from torch import nn

import bp_torch

from common import compare

SIZES = [(10, 784, 30), (64, 256, 256), (256, 1024, 1024)]


def step(model, x, grad_out):
    def run():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x).backward(grad_out)

    return run


def with_backend(name, fn):
    def run():
        bp_torch.set_backend(name)
        fn()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backends {bp_torch.available_backends()}")
    print()
    print(
        "| (batch, in, out) | nn.Linear + nn.Sigmoid | "
        + " | ".join(f"SigmoidLinear {b}" for b in bp_torch.available_backends())
        + " |"
    )
    print("|---|---|" + "---|" * len(bp_torch.available_backends()))
    for batch, n_in, n_out in SIZES:
        torch.manual_seed(0)
        plain = nn.Sequential(nn.Linear(n_in, n_out), nn.Sigmoid())
        ours = bp_torch.SigmoidLinear(n_in, n_out)
        ours.load_state_dict(plain[0].state_dict())
        x = torch.randn(batch, n_in, requires_grad=True)
        grad_out = torch.randn(batch, n_out)
        variants = {"torch": step(plain, x, grad_out)}
        for name in bp_torch.available_backends():
            variants[name] = with_backend(name, step(ours, x, grad_out))
        result = compare(variants, "torch", rounds=args.rounds)
        cells = [f"{result['torch'][0] * 1e6:.1f} us"]
        cells += [f"{result[b][0] * 1e6:.1f} us (ratio **{result[b][1]:.2f}**)" for b in bp_torch.available_backends()]
        print(f"| ({batch}, {n_in}, {n_out}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
