"""One training step of a sigmoid network, three ways, against plain torch (issue 4's bars).

    bash scripts/env.sh python benchmarks/bench_mlp.py                # torch's default threads
    bash scripts/env.sh python benchmarks/bench_mlp.py --threads 1
    bash scripts/env.sh python benchmarks/bench_mlp.py --crossover    # the loops-vs-BLAS crossover of the kernels
    bash scripts/env.sh python benchmarks/bench_mlp.py --overheads    # where (2)'s time goes, [784, 30, 10]

Variants, timed interleaved in one process (benchmarks/common.py's compare, median ratios), float32:

1. ``torch``: ``nn.Sequential`` of ``nn.Linear`` + ``nn.Sigmoid``, cost ``0.5 * ((a - y)**2).sum(-1).mean()`` in
   torch ops, ``torch.optim.SGD`` (zero_grad, backward, step);
2. ``SigmoidMLP``: the same autograd loop on ``bp_torch.SigmoidMLP`` with ``QuadraticCost`` (C++ backend: one
   fused op and one autograd node for the network);
3. ``sgd_step``: ``SigmoidMLP.sgd_step``, the whole step as one op.

For the large case it also times the matrix products the step contains, as torch.mm calls with preallocated
outputs (``gemms``), and reports the step's FLOP rate as a fraction of that rate: the machine's float32 matmul
throughput on the same shapes, measured in the same run. Prints markdown tables.
"""

import argparse

import torch

import bp_torch

from common import compare, plain_torch_mlp

CASES = [([784, 30, 10], 10), ([784, 100, 10], 10), ([1024, 1024, 1024, 10], 256)]
LR = 3.0


def torch_step(sizes, x, y):
    model = plain_torch_mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def run():
        opt.zero_grad()
        cost = 0.5 * ((model(x) - y) ** 2).sum(-1).mean()
        cost.backward()
        opt.step()

    return run


def mlp_autograd_step(sizes, x, y, module_calls=True):
    """module_calls=False calls the modules' forward methods, skipping ``nn.Module.__call__`` (for --overheads)."""
    net = bp_torch.SigmoidMLP(sizes)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    cost_fn = bp_torch.QuadraticCost()
    network, cost = (net, cost_fn) if module_calls else (net.forward, cost_fn.forward)

    def run():
        opt.zero_grad()
        cost(network(x), y).backward()
        opt.step()

    return run


def trivial_graph_step(sizes, x, y):
    """The same loop on a graph that computes nothing but reaches the same parameters (for --overheads)."""
    net = bp_torch.SigmoidMLP(sizes)
    params = list(net.parameters())
    opt = torch.optim.SGD(params, lr=LR)

    def run():
        opt.zero_grad()
        torch.cat([p.view(-1) for p in params]).sum().backward()  # six nodes, an AccumulateGrad per parameter
        opt.step()

    return run


def mlp_sgd_step(sizes, x, y):
    net = bp_torch.SigmoidMLP(sizes)
    sgd_step = net.sgd_step
    return lambda: sgd_step(x, y, LR)


def step_gemms(sizes, n):
    """The matrix products of one sgd step, as torch.mm into preallocated outputs, and their FLOPs: per layer the
    forward Z = A W^T, the weight gradient Delta^T A, and (above the first layer) the error Delta W."""
    products = []
    for l, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        a, w, delta = torch.rand(n, n_in), torch.rand(n_out, n_in), torch.rand(n, n_out)
        products.append((a, w.T, torch.empty(n, n_out)))  # forward
        products.append((delta.T, a, torch.empty(n_out, n_in)))  # (1.1) dC/dW
        if l > 0:
            products.append((delta, w, torch.empty(n, n_in)))  # (2.3.2)
    flops = sum(2 * p[0].shape[0] * p[0].shape[1] * p[1].shape[1] for p in products)

    def run():
        for m1, m2, out in products:
            torch.mm(m1, m2, out=out)

    return run, flops


def overheads(rounds):
    """(2) for [784, 30, 10] at batch 10 beside what its parts cost: the same loop without the two
    ``nn.Module.__call__`` s; on an empty batch (the whole path, with no arithmetic but zero-filling the
    gradients); and on a trivial graph over the same parameters (zero_grad, backward and SGD.step alone)."""
    sizes, n = CASES[0]
    torch.manual_seed(0)
    x, y = torch.rand(n, sizes[0]), torch.rand(n, sizes[-1])
    variants = {
        "(1) torch": torch_step(sizes, x, y),
        "(2) SigmoidMLP": mlp_autograd_step(sizes, x, y),
        "(2) without nn.Module.__call__": mlp_autograd_step(sizes, x, y, module_calls=False),
        "(2) on an empty batch": mlp_autograd_step(sizes, x[:0], y[:0]),
        "the same loop on a trivial graph": trivial_graph_step(sizes, x, y),
    }
    r = compare(variants, "(1) torch", rounds=rounds)
    print(f"| {sizes}, batch {n} | time | vs (1) |")
    print("|---|---|---|")
    for name, (seconds, ratio) in r.items():
        print(f"| {name} | {seconds * 1e6:.1f} us | **{1 / ratio:.2f}x** faster |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--crossover", action="store_true", help="time the kernels' loops against BLAS instead")
    parser.add_argument("--overheads", action="store_true", help="time (2)'s parts instead, for [784, 30, 10]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crossover:
        import crossover

        return crossover.main(args.rounds)
    if "cpp" not in bp_torch.available_backends():
        raise SystemExit("the C++ extension is not built")
    bp_torch.set_backend("cpp")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, C++ backend")
    print()
    if args.overheads:
        return overheads(args.rounds)
    print("| sizes, batch | (1) torch | (2) SigmoidMLP + autograd | (3) sgd_step | (3) vs matmul peak |")
    print("|---|---|---|---|---|")
    for sizes, n in CASES:
        torch.manual_seed(0)
        x, y = torch.rand(n, sizes[0]), torch.rand(n, sizes[-1])
        variants = {
            "torch": torch_step(sizes, x, y),
            "SigmoidMLP": mlp_autograd_step(sizes, x, y),
            "sgd_step": mlp_sgd_step(sizes, x, y),
        }
        large = n * sizes[0] * sizes[1] > 1e7
        if large:
            variants["gemms"], flops = step_gemms(sizes, n)
        r = compare(variants, "torch", rounds=args.rounds if not large else max(5, args.rounds // 3))
        cells = [f"{r['torch'][0] * 1e6:.1f} us"]
        cells += [f"{r[k][0] * 1e6:.1f} us (**{1 / r[k][1]:.2f}x** faster)" for k in ("SigmoidMLP", "sgd_step")]
        if large:
            peak = flops / r["gemms"][0]
            fraction = r["gemms"][1] / r["sgd_step"][1]  # median ratios, both against the same baseline
            cells.append(f"{flops / r['sgd_step'][0] / 1e9:.0f} of {peak / 1e9:.0f} GFLOP/s: **{fraction:.0%}**")
        else:
            cells.append("")
        print(f"| {sizes}, {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
