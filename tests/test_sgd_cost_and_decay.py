"""sgd_step and sgd_epoch with cost="cross_entropy" (3.3) and weight_decay (3.4), on every backend, against autograd
+ torch.optim.SGD(weight_decay=...) with the biases in a no-decay group, and against a numpy re-statement of
Nielsen's network2.py."""

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bp_torch
from bp_torch import SigmoidMLP
from bp_torch import functional as F

import reference

COSTS = ["quadratic", "cross_entropy"]


def make_net(sizes, seed=0, dtype=torch.float64, init="torch"):
    torch.manual_seed(seed)
    return SigmoidMLP(sizes, dtype=dtype, init=init)


def data(sizes, n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, sizes[0], generator=g, dtype=dtype)
    y = torch.nn.functional.one_hot(torch.randint(sizes[-1], (n,), generator=g), sizes[-1]).to(dtype)
    return x, y


def params(net):
    return [layer.weight for layer in net], [layer.bias for layer in net]


def torch_sgd_steps(net, batches, lr, cost, weight_decay):
    """The oracle: autograd through plain torch ops, then torch.optim.SGD with weight decay on the weights only.
    Returns each mini-batch's cost before its update."""
    weights, biases = params(net)
    return torch.stack(
        reference.optim_sgd_steps(
            reference.chain(weights, biases), weights, biases, batches, lr, weight_decay, reference.COSTS[cost]
        )
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("cost", COSTS)
def test_sgd_step_equals_autograd_and_torch_optim_sgd(cost, weight_decay):
    sizes = [6, 5, 4, 3]
    ours, oracle = make_net(sizes), make_net(sizes)
    x, y = data(sizes, 12)
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4)]
    want = torch_sgd_steps(oracle, batches, 0.7, cost, weight_decay)
    got = torch.stack([ours.sgd_step(bx, by, 0.7, cost=cost, weight_decay=weight_decay) for bx, by in batches])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for p, q in zip(ours.parameters(), oracle.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cost", COSTS)
def test_sgd_epoch_equals_autograd_and_torch_optim_sgd(cost):
    sizes, n, batch_size = [5, 4, 3], 11, 3
    ours, oracle = make_net(sizes, seed=2), make_net(sizes, seed=2)
    x, y = data(sizes, n, seed=3)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(4))
    batches = [(x[idx], y[idx]) for idx in perm.split(batch_size)]
    want = torch_sgd_steps(oracle, batches, 0.5, cost, 0.02)
    got = F.sgd_epoch(x, y, *params(ours), 0.5, batch_size, perm, cost=cost, weight_decay=0.02)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for p, q in zip(ours.parameters(), oracle.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


@settings(max_examples=60)
@given(
    sizes=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    n=st.integers(1, 7),
    cost=st.sampled_from(COSTS),
    weight_decay=st.sampled_from([0.0, 1e-3, 0.3]),
    lr=st.floats(0.0, 3.0),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_drawn_networks_step_as_torch_optim_sgd(sizes, n, cost, weight_decay, lr, bias, seed):
    torch.manual_seed(seed)
    ours = SigmoidMLP(sizes, bias=bias, dtype=torch.float64)
    oracle = SigmoidMLP(sizes, bias=bias, dtype=torch.float64)
    oracle.load_state_dict(ours.state_dict())
    x, y = data(sizes, n, seed=seed)
    (want,) = reference.optim_sgd_steps(oracle, *params(oracle), [(x, y)], lr, weight_decay, reference.COSTS[cost])
    got = ours.sgd_step(x, y, lr, cost=cost, weight_decay=weight_decay)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for p, q in zip(ours.parameters(), oracle.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)


def test_tied_weights_decay_once_as_in_torch_optim_sgd():
    torch.manual_seed(5)
    shared = torch.randn(4, 4, dtype=torch.float64)
    first, b1, b2 = (torch.randn(shape, dtype=torch.float64) for shape in ((4, 3), (4,), (4,)))
    x, y = data([3, 4, 4], 6, seed=6)
    oracle = [t.clone().requires_grad_() for t in (first, shared, b1, b2)]
    tied = reference.chain([oracle[0], oracle[1], oracle[1]], [oracle[2], oracle[3], oracle[3]])
    reference.optim_sgd_steps(tied, oracle[:2], oracle[2:], [(x, y)], 0.9, 0.1, reference.cross_entropy_cost)
    ours = [t.clone() for t in (first, shared, b1, b2)]
    F.sgd_step(
        x, y, [ours[0], ours[1], ours[1]], [ours[2], ours[3], ours[3]], 0.9, cost="cross_entropy", weight_decay=0.1
    )
    for p, q in zip(ours, oracle):
        torch.testing.assert_close(p, q.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cost", COSTS)
def test_trajectory_equals_numpy_network2(cost):
    """Nielsen's network2.py update, both costs, with L2 (lmbda 5.0 over n = 40 training samples), float64: the
    weights after each of several mini-batches agree to 1e-9."""
    sizes, n_train, batch_size, eta, lmbda = [7, 6, 4], 40, 5, 0.5, 5.0
    net = make_net(sizes, seed=7, init="nielsen")
    x, y = data(sizes, 30, seed=8)
    weights, biases = params(net)
    trajectory, costs = reference.numpy_network2_sgd(
        [w.detach().numpy() for w in weights],
        [b.detach().numpy() for b in biases],
        x.numpy(),
        y.numpy(),
        eta,
        batch_size,
        cost,
        lmbda,
        n_train,
    )
    assert len(trajectory) == 6
    for k, (want_w, want_b) in enumerate(trajectory):
        got_cost = F.sgd_step(
            x[k * batch_size : (k + 1) * batch_size],
            y[k * batch_size : (k + 1) * batch_size],
            weights,
            biases,
            eta,
            cost=cost,
            weight_decay=lmbda / n_train,
        )
        np.testing.assert_allclose(got_cost.item(), costs[k], rtol=1e-12)  # the cost before the update, no L2 term
        for got, want in zip([*weights, *biases], [*want_w, *want_b]):
            np.testing.assert_allclose(got.detach().numpy(), want, rtol=0, atol=1e-9)
    moved = [
        np.abs(w - w0.detach().numpy()).max()
        for w, w0 in zip(trajectory[-1][0], params(make_net(sizes, seed=7, init="nielsen"))[0])
    ]
    assert min(moved) > 1e-3  # the comparison is not between networks that never moved


@pytest.mark.parametrize("cost", COSTS)
def test_sgd_epoch_with_decay_is_exactly_a_loop_of_sgd_step(cost):
    sizes, n, batch_size = [5, 4, 3], 10, 4
    epoch_net, loop_net = make_net(sizes, seed=9), make_net(sizes, seed=9)
    x, y = data(sizes, n, seed=10)
    costs = epoch_net.sgd_epoch(x, y, 2.0, batch_size, shuffle=False, cost=cost, weight_decay=0.01)
    loop = torch.stack(
        [
            loop_net.sgd_step(x[i : i + batch_size], y[i : i + batch_size], 2.0, cost=cost, weight_decay=0.01)
            for i in range(0, n, batch_size)
        ]
    )
    assert torch.equal(costs, loop)
    for p, q in zip(epoch_net.parameters(), loop_net.parameters()):
        assert torch.equal(p, q)


def test_biases_do_not_decay():
    """With zero learning signal (lr * gradient far below the decay), only the weights shrink."""
    net = make_net([3, 2])
    x, y = data([3, 2], 4)
    w0, b0 = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    F.sgd_step(x, y, [net[0].weight], [net[0].bias], 1e-300, weight_decay=1e299)
    torch.testing.assert_close(net[0].weight, 0.9 * w0)
    torch.testing.assert_close(net[0].bias, b0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_network_learns_faster_with_cross_entropy_and_stays_finite(dtype):
    """From a badly saturated start (N(0, 1) weights, inputs scaled by 50), cross-entropy's delta^L = a - y moves the
    output layer at the rate of its error; the quadratic cost's (a - y) sigma'(z) barely moves it."""
    sizes = [8, 4]
    x, y = data(sizes, 16, dtype, seed=12)
    x = 50 * x
    moved = {}
    for cost in COSTS:
        net = make_net(sizes, seed=13, dtype=dtype, init="large")
        w0 = net[-1].weight.detach().clone()
        costs = net.sgd_epoch(x, y, 0.5, 4, shuffle=False, cost=cost)
        assert costs.isfinite().all() and all(p.isfinite().all() for p in net.parameters())
        moved[cost] = (net[-1].weight - w0).abs().sum().item()
    assert moved["cross_entropy"] > 10 * moved["quadratic"]


def test_sgd_step_under_torch_compile_fullgraph_matches_eager():
    sizes = [6, 5, 3]
    x, y = data(sizes, 8, torch.float32, seed=14)
    eager_net, compiled_net = make_net(sizes, dtype=torch.float32), make_net(sizes, dtype=torch.float32)

    def epoch(net, x, y):
        return F.sgd_epoch(x, y, *params(net), 3.0, 3, cost="cross_entropy", weight_decay=0.01)

    eager = epoch(eager_net, x, y)
    torch._dynamo.reset()
    compiled_epoch = torch.compile(epoch, fullgraph=True)
    compiled = compiled_epoch(compiled_net, x, y)
    torch.testing.assert_close(compiled, eager)
    for p, q in zip(compiled_net.parameters(), eager_net.parameters()):
        torch.testing.assert_close(p, q)
    step = torch.compile(lambda net, x, y: net.sgd_step(x, y, 1.0, cost="cross_entropy"), fullgraph=True)
    torch.testing.assert_close(step(compiled_net, x, y), eager_net.sgd_step(x, y, 1.0, cost="cross_entropy"))
    with pytest.raises((ValueError, RuntimeError), match=re.escape("sgd_epoch: y must be in [0, 1]")):
        compiled_epoch(compiled_net, x, 2 * y)


X, Y = torch.rand(4, 3), torch.eye(2)[[0, 1, 1, 0]]
BAD = {
    "unknown cost": (dict(cost="mse"), ValueError, "cost must be one of ('quadratic', 'cross_entropy'), got 'mse'"),
    "cost hyphen": (dict(cost="cross-entropy"), ValueError, "cost must be one of ('quadratic', 'cross_entropy')"),
    "cost None": (dict(cost=None), ValueError, "cost must be one of ('quadratic', 'cross_entropy'), got None"),
    "negative decay": (dict(weight_decay=-0.1), ValueError, "weight_decay must be a finite number >= 0, got -0.1"),
    "nan decay": (dict(weight_decay=math.nan), ValueError, "weight_decay must be a finite number >= 0, got nan"),
    "inf decay": (dict(weight_decay=math.inf), ValueError, "weight_decay must be a finite number >= 0, got inf"),
    "str decay": (dict(weight_decay="0.1"), TypeError, "weight_decay must be a real number, got str"),
    "bool decay": (dict(weight_decay=True), TypeError, "weight_decay must be a real number, got bool"),
    "tensor decay": (
        dict(weight_decay=torch.ones(2)),
        ValueError,
        "weight_decay must be a single number, got a tensor of shape [2]",
    ),
    "y above 1": (dict(cost="cross_entropy", y=2 * Y), ValueError, "y must be in [0, 1] (a probability), got 2.0"),
    "y below 0": (dict(cost="cross_entropy", y=-Y), ValueError, "y must be in [0, 1] (a probability), got -1.0"),
}


@pytest.mark.parametrize("op", ["sgd_step", "sgd_epoch"])
@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_input_raises_a_clear_error_and_changes_nothing(case, op):
    kwargs, error, message = BAD[case]
    kwargs = dict(kwargs)
    y = kwargs.pop("y", Y)
    net = make_net([3, 2], dtype=torch.float32)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(error, match=re.escape(f"{op}: {message}")):
        if op == "sgd_step":
            net.sgd_step(X, y, 0.1, **kwargs)
        else:
            net.sgd_epoch(X, y, 0.1, 2, **kwargs)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


def test_quadratic_cost_takes_targets_outside_0_1():
    net = make_net([3, 2], dtype=torch.float32)
    assert net.sgd_step(X, 2 * Y, 0.1).isfinite()


def test_new_options_are_keyword_only():
    net = make_net([3, 2], dtype=torch.float32)
    with pytest.raises(TypeError):
        F.sgd_step(X, Y, *params(net), 0.1, "cross_entropy")  # type: ignore[misc]


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_every_cost_and_decay_takes_the_cpp_ops(monkeypatch, cost, weight_decay):
    """The C++ backend runs every cost and weight decay in its ops, one call per step or epoch, with the Python
    Function's numbers."""
    calls = []
    for name in ("sgd_step", "sgd_epoch"):
        real = getattr(bp_torch._ops, name)
        monkeypatch.setattr(
            bp_torch._ops, name, lambda *args, name=name, real=real: calls.append((name, *args[-2:])) or real(*args)
        )
    net = make_net([3, 2], dtype=torch.float32)
    twin = make_net([3, 2], dtype=torch.float32)
    net.sgd_step(X, Y, 0.1, cost=cost, weight_decay=weight_decay)
    F.sgd_epoch(X, Y, *params(net), 0.1, 2, cost=cost, weight_decay=weight_decay)
    assert calls == [("sgd_step", cost, weight_decay), ("sgd_epoch", cost, weight_decay)]
    with bp_torch.use_backend("python"):
        twin.sgd_step(X, Y, 0.1, cost=cost, weight_decay=weight_decay)
        F.sgd_epoch(X, Y, *params(twin), 0.1, 2, cost=cost, weight_decay=weight_decay)
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.backends("cpp")
def test_cross_entropy_cost_takes_the_cpp_op(monkeypatch):
    calls = []
    real = bp_torch._ops.cross_entropy_cost
    monkeypatch.setattr(bp_torch._ops, "cross_entropy_cost", lambda *args: calls.append(1) or real(*args))
    a = torch.rand(4, 3, dtype=torch.float64)
    y = torch.rand(4, 3, dtype=torch.float64)
    expected = torch.nn.functional.binary_cross_entropy(a, y, reduction="sum") / 4
    torch.testing.assert_close(F.cross_entropy_cost(a, y), expected)
    assert calls == [1]
