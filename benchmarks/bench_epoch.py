"""A whole training epoch of Nielsen's network, several ways, side by side in one process (issue 14's bars).

    bash scripts/env.sh python benchmarks/bench_epoch.py                 # the table, then the 30-epoch run
    bash scripts/env.sh python benchmarks/bench_epoch.py --rounds 3 --samples 5000 --epochs 2   # a quick look

Nielsen's [784, 30, 10], mini-batch 10, eta 3.0, float32, a shuffled epoch of 50,000 samples (uniform pixels and
random one-hot labels: the arithmetic does not depend on the values). Each round runs one epoch of every way, in a
shuffled order; the table gives the median time and the median of the per-round ratios (benchmarks/common.py):

1. ``torch``: ``nn.Sequential`` of ``nn.Linear`` + ``nn.Sigmoid``, the cost in torch ops, ``backward()``,
   ``torch.optim.SGD``, over ``randperm(n).split(10)``;
2. ``autograd loop``: the same loop on ``bp_torch.SigmoidMLP`` + ``bp_torch.QuadraticCost``;
3. ``sgd_step loop``: ``SigmoidMLP.sgd_step(x[index], y[index], lr)`` per mini-batch, as ``train_digits.py`` did
   with ``--fused`` before ``sgd_epoch``;
4. ``sgd_epoch``: ``SigmoidMLP.sgd_epoch(x, y, lr, 10)``, one op call for the epoch (randperm included), with
   torch's threads (its second thread partners a long epoch: it gathers mini-batches ahead and takes a third of each
   large product);
5. ``sgd_epoch, 1 thread``: the same under ``torch.set_num_threads(1)``, no partner;
6. ``n/b x sgd_step op``: the ``bp_torch::sigmoid_mlp_sgd_step`` op called n/b times on one mini-batch that stays
   in cache: the floor that sgd_epoch is held to (within 1.3x);
7. ``sgd_epoch, cross-entropy + L2``: ``sgd_epoch(..., cost="cross_entropy", weight_decay=5.0 / n)``, Nielsen's
   chapter-3 update (lambda 5.0), held to within 1.1x of ``sgd_epoch``'s time; and the same at one thread, against
   5., which shows the rule's own cost without the partner's spread;
8. ``jax``, only when JAX is importable: the whole epoch as one ``jax.jit``-compiled ``lax.scan`` over the
   mini-batches of ``x[perm]``, what a speed-minded JAX user writes.

Then it times 30 epochs of ``sgd_epoch`` on 60,000 samples, as ``train_digits.py --dataset mnist --fused`` trains
(the bar: under 2.5 s on this 2-core machine), with torch's threads and on one thread, alternately, three times:
the median and every run are printed (one 30-epoch run takes seconds, long enough for this shared machine to
change pace in the middle of it).
"""

import argparse
import statistics
import time

import torch
from torch import nn

import bp_torch

from common import compare, plain_torch_mlp

SIZES, BATCH, LR = [784, 30, 10], 10, 3.0


def synthetic_data(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, SIZES[0], generator=gen)
    y = nn.functional.one_hot(torch.randint(0, SIZES[-1], (n,), generator=gen), SIZES[-1]).float()
    return x, y


def torch_epoch(x, y):
    model = plain_torch_mlp(SIZES)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def run():
        for index in torch.randperm(len(x)).split(BATCH):
            opt.zero_grad()
            cost = 0.5 * ((model(x[index]) - y[index]) ** 2).sum(-1).mean()
            cost.backward()
            opt.step()

    return run


def autograd_epoch(x, y):
    net = bp_torch.SigmoidMLP(SIZES)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    cost = bp_torch.QuadraticCost()

    def run():
        for index in torch.randperm(len(x)).split(BATCH):
            opt.zero_grad()
            cost(net(x[index]), y[index]).backward()
            opt.step()

    return run


def sgd_step_loop_epoch(x, y):
    net = bp_torch.SigmoidMLP(SIZES)

    def run():
        for index in torch.randperm(len(x)).split(BATCH):
            net.sgd_step(x[index], y[index], LR)

    return run


def sgd_epoch(x, y):
    net = bp_torch.SigmoidMLP(SIZES)
    return lambda: net.sgd_epoch(x, y, LR, BATCH)


def sgd_epoch_cross_entropy_l2(x, y):
    net = bp_torch.SigmoidMLP(SIZES)
    return lambda: net.sgd_epoch(x, y, LR, BATCH, cost="cross_entropy", weight_decay=5.0 / len(x))


def sgd_epoch_one_thread(x, y, **rule):
    """``rule``: sgd_epoch's cost and weight_decay."""
    net = bp_torch.SigmoidMLP(SIZES)

    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            net.sgd_epoch(x, y, LR, BATCH, **rule)
        finally:
            torch.set_num_threads(threads)

    return run


def sgd_step_op_floor(x, y):
    """The op alone, n/b times, on one mini-batch: no slicing, no Python between calls but the loop."""
    net = bp_torch.SigmoidMLP(SIZES)
    weights, biases = [layer.weight for layer in net], [layer.bias for layer in net]
    op = torch.ops.bp_torch.sigmoid_mlp_sgd_step.default
    xb, yb = x[:BATCH].clone(), y[:BATCH].clone()
    steps = range(len(x) // BATCH)

    def run():
        for _ in steps:
            op(xb, yb, weights, biases, LR)

    return run


def jax_epoch(x, y):
    """Nielsen's epoch in JAX: x[perm] cut into mini-batches, one lax.scan of SGD steps, all under one jit."""
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    params = []
    for n_in, n_out in zip(SIZES, SIZES[1:]):
        key, kw, kb = jax.random.split(key, 3)
        params.append((jax.random.normal(kw, (n_out, n_in)), jax.random.normal(kb, (n_out,))))

    def cost(params, xb, yb):
        a = xb
        for w, b in params:
            a = jax.nn.sigmoid(a @ w.T + b)
        return 0.5 * jnp.mean(jnp.sum((a - yb) ** 2, axis=-1))

    def step(params, batch):
        value, grads = jax.value_and_grad(cost)(params, *batch)
        return jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads), value

    @jax.jit
    def epoch(params, x, y, perm):
        batches = (x[perm].reshape(-1, BATCH, x.shape[1]), y[perm].reshape(-1, BATCH, y.shape[1]))
        return jax.lax.scan(step, params, batches)

    x_j, y_j = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    state = {"params": params, "key": key}

    def run():
        state["key"], k = jax.random.split(state["key"])
        state["params"], costs = epoch(state["params"], x_j, y_j, jax.random.permutation(k, len(x)))
        costs.block_until_ready()

    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=50_000, help="samples per epoch in the table (default 50000)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--full-samples", type=int, default=60_000, help="samples of the 30-epoch run (default 60000)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the 30-epoch run (default 30)")
    p.add_argument("--repeats", type=int, default=3, help="30-epoch runs per thread count (default 3)")
    args = p.parse_args()
    if "cpp" not in bp_torch.available_backends():
        raise SystemExit("bench_epoch: the C++ extension is not built")
    torch.manual_seed(0)
    x, y = synthetic_data(args.samples)
    variants = {
        "torch": torch_epoch(x, y),
        "autograd loop": autograd_epoch(x, y),
        "sgd_step loop": sgd_step_loop_epoch(x, y),
        "sgd_epoch": sgd_epoch(x, y),
        "sgd_epoch, 1 thread": sgd_epoch_one_thread(x, y),
        "n/b x sgd_step op": sgd_step_op_floor(x, y),
        "sgd_epoch, cross-entropy + L2": sgd_epoch_cross_entropy_l2(x, y),
        "sgd_epoch, cross-entropy + L2, 1 thread": sgd_epoch_one_thread(
            x, y, cost="cross_entropy", weight_decay=5.0 / len(x)
        ),
    }
    try:
        variants["jax"] = jax_epoch(x, y)
        import jax

        jax_note = f"jax {jax.__version__} on {jax.devices()[0].platform}"
    except ImportError:
        jax_note = "jax not importable: no jax row"
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {jax_note}; {SIZES}, batch {BATCH}, "
        f"{args.samples} samples, {args.rounds} rounds"
    )
    results = compare(variants, "sgd_epoch", rounds=args.rounds, target_s=0)
    print("\n| way | s/epoch | / sgd_epoch |\n|---|---|---|")
    for name, (seconds, ratio) in results.items():
        print(f"| {name} | {seconds:.3f} | {ratio:.2f}x |")
    print("\nsgd_epoch against the bars (median ratios of the rounds):")
    print(f"- sgd_step loop / sgd_epoch = {results['sgd_step loop'][1]:.2f}x (bar >= 3x)")
    print(f"- autograd loop / sgd_epoch = {results['autograd loop'][1]:.2f}x (bar >= 10x)")
    print(f"- sgd_epoch / (n/b x sgd_step op) = {1 / results['n/b x sgd_step op'][1]:.2f}x (bar <= 1.3x)")
    one_thread = results["sgd_epoch, cross-entropy + L2, 1 thread"][1] / results["sgd_epoch, 1 thread"][1]
    partnered = results["sgd_epoch, cross-entropy + L2"][1]
    print(
        f"- sgd_epoch cross-entropy + L2 / sgd_epoch = {partnered:.2f}x (bar <= 1.1x); "
        f"at 1 thread, unpartnered: {one_thread:.2f}x"
    )
    if "jax" in results:
        print(f"- jax / sgd_epoch = {results['jax'][1]:.2f}x (bar >= 3x)")

    x, y = synthetic_data(args.full_samples, seed=1)
    print(
        f"\n{args.epochs} epochs of sgd_epoch on {args.full_samples} samples (bar: under 2.5 s for 30 epochs of "
        f"60000), {args.repeats} runs each, alternating:"
    )
    threads = torch.get_num_threads()
    counts = {f"{threads} threads": threads, "1 thread": 1}
    runs = {label: [] for label in counts}
    for _ in range(args.repeats):
        for label, n_threads in counts.items():
            torch.set_num_threads(n_threads)
            net = bp_torch.SigmoidMLP(SIZES)
            net.sgd_epoch(x[:1000], y[:1000], LR, BATCH)  # warm up
            start = time.perf_counter()
            for _ in range(args.epochs):
                net.sgd_epoch(x, y, LR, BATCH)
            runs[label].append(time.perf_counter() - start)
    torch.set_num_threads(threads)
    steps = args.epochs * args.full_samples / BATCH
    for label, seconds in runs.items():
        median = statistics.median(seconds)
        print(
            f"- {label}: median {median:.2f} s ({1e6 * median / steps:.1f} us/step); runs: "
            + ", ".join(f"{s:.2f}" for s in seconds)
        )


if __name__ == "__main__":
    main()
