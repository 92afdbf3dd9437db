"""Side-by-side timing: every variant runs in each round, in a shuffled order, and each round gives a ratio to
the baseline. The median of those ratios is robust to a noisy, shared machine; absolute times are not."""

import random
import statistics
import time

from torch import nn


def calibrate(fn, target_s=0.01):
    """How many calls of fn take about target_s."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > target_s / 4:
            return max(1, int(n * target_s / (time.perf_counter() - start)))
        n *= 4


def compare(variants, baseline, rounds=31, target_s=0.01, seed=0):
    """variants: {name: zero-arg callable}. Returns {name: (median seconds per call, median ratio to baseline)}."""
    for fn in variants.values():
        fn()  # warm up: first-call allocations, lazy init
    calls = calibrate(variants[baseline], target_s)
    order = list(variants)
    rng = random.Random(seed)
    times = {name: [] for name in variants}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = variants[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {
        name: (statistics.median(t), statistics.median(a / b for a, b in zip(t, times[baseline])))
        for name, t in times.items()
    }


def plain_torch_mlp(sizes):
    """The plain-torch network that bp_torch's SigmoidMLP replaces: nn.Linear + nn.Sigmoid per layer."""
    return nn.Sequential(*[m for n_in, n_out in zip(sizes, sizes[1:]) for m in (nn.Linear(n_in, n_out), nn.Sigmoid())])
