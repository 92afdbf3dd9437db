"""Training with bp_torch gives the weights of an independent numpy re-statement of Nielsen's algorithm."""

import copy

import numpy as np
import pytest
import torch

from bp_torch import QuadraticCost, SigmoidLinear, SigmoidMLP

import reference

SIZES, N_SAMPLES, BATCH, LR = [6, 5, 4, 3], 50, 2, 3.0  # 25 steps of mini-batch 2


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(N_SAMPLES, SIZES[0], dtype=torch.float64, generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, SIZES[-1], (N_SAMPLES,), generator=gen), SIZES[-1]).double()
    return x, y


def nielsen_net():
    torch.manual_seed(1)
    net = SigmoidMLP(SIZES, dtype=torch.float64)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()  # Nielsen's N(0, 1) initialisation
    return net


def numpy_result(net, x, y):
    weights = [layer.weight.detach().numpy() for layer in net]
    biases = [layer.bias.detach().numpy() for layer in net]
    new_weights, new_biases, _ = reference.numpy_nielsen_sgd(weights, biases, x.numpy(), y.numpy(), LR, BATCH)
    return new_weights, new_biases


def assert_same_weights(layers, expected):
    for layer, w, b in zip(layers, *expected):
        np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=0, atol=1e-9)
        np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=0, atol=1e-9)


def autograd_loop(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    cost = QuadraticCost()  # 1/2n sum ||y - a||^2, Nielsen's update
    for start in range(0, N_SAMPLES, BATCH):
        opt.zero_grad()
        cost(model(x[start : start + BATCH]), y[start : start + BATCH]).backward()
        opt.step()


@pytest.mark.parametrize("how", ["SigmoidMLP+autograd", "stack of SigmoidLinear+autograd", "sgd_step"])
def test_25_sgd_steps_match_numpy_nielsen(how):
    x, y = data()
    net = nielsen_net()
    expected = numpy_result(net, x, y)
    if how == "SigmoidMLP+autograd":
        autograd_loop(net, x, y)
        layers = list(net)
    elif how == "sgd_step":
        for start in range(0, N_SAMPLES, BATCH):
            net.sgd_step(x[start : start + BATCH], y[start : start + BATCH], LR)
        layers = list(net)
    else:
        stack = torch.nn.Sequential(*(SigmoidLinear(i, o, dtype=torch.float64) for i, o in zip(SIZES, SIZES[1:])))
        stack.load_state_dict(net.state_dict())
        autograd_loop(stack, x, y)
        layers = list(stack)
    assert_same_weights(layers, expected)
    # the weights did move: the comparison is not between two untouched copies
    assert not np.allclose(nielsen_net()[0].weight.detach().numpy(), expected[0][0])


def test_sgd_step_returns_the_cost_before_the_update():
    x, y = data()
    net = nielsen_net()
    before = copy.deepcopy(net)
    cost = net.sgd_step(x[:10], y[:10], LR)
    torch.testing.assert_close(cost, QuadraticCost()(before(x[:10]), y[:10]))
    assert cost.dim() == 0
