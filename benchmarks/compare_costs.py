"""The next chapter on the bundled 8x8 digits: quadratic cost against cross-entropy, L2 and Nielsen's initial weights.

    bash scripts/env.sh python benchmarks/compare_costs.py                 # the tables of README.md and BENCHMARKS.md
    bash scripts/env.sh python benchmarks/compare_costs.py --seeds 3 --epochs 10       # a quick look

Each run is examples/train_digits.py's, with the example's split (scikit-learn's digits, stratified 75/25,
random_state=0: 1,347 training and 450 test images, pixels in [0, 1]), network [64, 30, 10], mini-batch 10, its
shuffles (torch.randperm seeded with seed + epoch) and the library's own pieces: SigmoidMLP(init=...) seeded with
torch.manual_seed(seed), then one SigmoidMLP.sgd_epoch(cost=..., weight_decay=lambda / n) per epoch, which
train_digits.py --fused calls (train_digits.py --cost ... --lmbda ... --init ... --lr ... --fused --seed S runs one).
One torch thread per run.

Table 1, over --seeds seeds (mean and range of the final test accuracy):

* quadratic cost, nn.Linear's init, eta 3.0 (the chapter and the example's defaults);
* cross-entropy, eta 0.5 (Nielsen's chapter-3 eta);
* cross-entropy + L2, lambda 0.1: weight_decay = 0.1 / 1347 = 7.4e-5, near Nielsen's 5.0 / 50,000 = 1e-4 on MNIST
  (his lambda 5.0 on 1,347 images is weight_decay 3.7e-3, which shrinks this network's weights enough to cost
  accuracy: about 94.7%);
* cross-entropy + L2 + Nielsen's N(0, 1/n_in) weights.

Table 2, the learning slowdown: init "large" (N(0, 1)) with the pixels multiplied by --scale, so that most hidden
and output units start saturated; per epoch, the quadratic cost on the training set (the same yardstick for both
runs) and the test accuracy, each the mean over the seeds, training on the quadratic cost (eta 3.0) against the
cross-entropy (eta 0.5).
"""

import argparse
import os
import statistics
import sys
import time

import torch

import bp_torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from digits import data  # noqa: E402  (the example's own split)

CONFIGS = [  # name, cost, eta, lambda, init
    ("quadratic", "quadratic", 3.0, 0.0, "torch"),
    ("cross-entropy", "cross_entropy", 0.5, 0.0, "torch"),
    ("cross-entropy + L2", "cross_entropy", 0.5, 0.1, "torch"),
    ("cross-entropy + L2 + nielsen init", "cross_entropy", 0.5, 0.1, "nielsen"),
]


def train(split, cost, eta, lmbda, init, seed, epochs, scale=1.0, every_epoch=False):
    """One run; returns the final test accuracy, and with ``every_epoch`` the (training-set quadratic cost, test
    accuracy) after each epoch."""
    x_train, y_train, x_test, y_test = (
        scale * split["x_train"],
        split["y_train"],
        scale * split["x_test"],
        split["y_test"],
    )
    y_hot = torch.nn.functional.one_hot(y_train, 10).to(torch.float32)
    torch.manual_seed(seed)
    net = bp_torch.SigmoidMLP([64, 30, 10], init=init)
    history = []
    for epoch in range(epochs):
        shuffle = torch.Generator().manual_seed(seed + epoch)
        net.sgd_epoch(x_train, y_hot, eta, 10, generator=shuffle, cost=cost, weight_decay=lmbda / len(x_train))
        if every_epoch or epoch == epochs - 1:
            with torch.no_grad():
                quadratic = bp_torch.QuadraticCost()(net(x_train), y_hot).item()
                accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
            history.append((quadratic, accuracy))
    return history[-1][1], history


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1; default: 10")
    p.add_argument("--epochs", type=int, default=30, help="default: 30")
    p.add_argument("--slowdown-epochs", type=int, default=15, help="epochs of table 2; default: 15")
    p.add_argument("--scale", type=float, default=20.0, help="input scale of table 2; default: 20")
    p.add_argument("--backend", choices=bp_torch.available_backends(), default=bp_torch.backend())
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bp_torch.set_backend(args.backend)
    split = data.load_dataset("digits", None, False)
    start = time.perf_counter()

    print(f"digits [64, 30, 10], batch 10, {args.epochs} epochs, seeds 0-{args.seeds - 1}, backend {args.backend}")
    print(f"| {'run':<34} | eta | lambda | init    | test accuracy, mean | range         |")
    print(f"|{'-' * 36}|-----|--------|---------|--------------------:|---------------|")
    for name, cost, eta, lmbda, init in CONFIGS:
        accs = [100 * train(split, cost, eta, lmbda, init, seed, args.epochs)[0] for seed in range(args.seeds)]
        print(
            f"| {name:<34} | {eta:<3g} | {lmbda:<6g} | {init:<7} | {statistics.mean(accs):18.2f}% | "
            f"{min(accs):.2f}-{max(accs):.2f}% |",
            flush=True,
        )

    print(
        f"\nlearning slowdown: init large, pixels x {args.scale:g}; per epoch the quadratic cost on the training set "
        f"and the test accuracy, means over seeds 0-{args.seeds - 1}"
    )
    runs = {}
    for cost, eta in (("quadratic", 3.0), ("cross_entropy", 0.5)):
        histories = [
            train(split, cost, eta, 0.0, "large", seed, args.slowdown_epochs, args.scale, every_epoch=True)[1]
            for seed in range(args.seeds)
        ]
        runs[cost] = [tuple(statistics.mean(v) for v in zip(*epoch)) for epoch in zip(*histories)]
    print("| epoch | quadratic (eta 3.0): C | test    | cross-entropy (eta 0.5): C | test    |")
    print("|------:|-----------------------:|--------:|---------------------------:|--------:|")
    for epoch, ((qc, qa), (cc, ca)) in enumerate(zip(runs["quadratic"], runs["cross_entropy"]), 1):
        print(f"| {epoch:5d} | {qc:22.4f} | {100 * qa:6.2f}% | {cc:26.4f} | {100 * ca:6.2f}% |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
