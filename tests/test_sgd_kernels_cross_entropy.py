"""The C++ sgd kernels' cross-entropy step with weight decay (3.3), (3.4) against autograd on the Python backend's
CrossEntropyCostFunction and torch.optim.SGD, in float64 to tight tolerance, at sizes that take every path of the
kernels: the vector blocks and their tails in the loops, the loops split over threads, and BLAS (whose beta carries
the decay). tests/test_isa.py runs this file under each CPU capability."""

import pytest
import torch

from bp_torch import SigmoidMLP
from bp_torch import functional as F
from bp_torch.autograd import CrossEntropyCostFunction, SigmoidLinearFunction

import reference

# (sizes, batch): loop products with vector blocks and tails; loop products large enough for threads; BLAS
# products with more samples than the kernels sum in order.
SHAPES = [([37, 33, 17], 9), ([200, 300, 40], 64), ([300, 200, 60], 300)]


def oracle_steps(weights, biases, batches, lr, weight_decay):
    """Autograd through the Python backend's Functions, then torch.optim.SGD with the biases undecayed."""
    forward = reference.chain(weights, biases, SigmoidLinearFunction.apply)
    return torch.stack(
        reference.optim_sgd_steps(
            forward,
            weights,
            biases,
            batches,
            lr,
            weight_decay,
            lambda a, y: CrossEntropyCostFunction.apply(a, y, "mean"),
        )
    )


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("sizes, batch", SHAPES)
@pytest.mark.parametrize("epoch", [False, True])
@pytest.mark.parametrize("targets", ["one_hot", "soft"])
def test_cross_entropy_step_with_decay_equals_autograd(sizes, batch, epoch, targets):
    """One-hot targets take the kernels' one-log path, soft ones (and a vector of mixed ones) both logs."""
    torch.manual_seed(0)
    ours = SigmoidMLP(sizes, dtype=torch.float64)
    oracle = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    weights, biases = oracle[0::2], oracle[1::2]
    g = torch.Generator().manual_seed(1)
    n = 2 * batch + 1
    x = torch.rand(n, sizes[0], generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(sizes[-1], (n,), generator=g), sizes[-1]).double()
    if targets == "soft":
        y[::2] = torch.rand(y[::2].shape, generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    batches = [(x[idx], y[idx]) for idx in perm.split(batch)]
    lr, weight_decay = 0.5, 0.03
    want = oracle_steps(weights, biases, batches, lr, weight_decay)
    net_w, net_b = [layer.weight for layer in ours], [layer.bias for layer in ours]
    if epoch:
        got = F.sgd_epoch(x, y, net_w, net_b, lr, batch, perm, cost="cross_entropy", weight_decay=weight_decay)
    else:
        got = torch.stack(
            [
                F.sgd_step(bx, by, net_w, net_b, lr, cost="cross_entropy", weight_decay=weight_decay)
                for bx, by in batches
            ]
        )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for p, q in zip(ours.parameters(), oracle):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
