"""two_layer_quadratic_cost: equations (A) and (B) against torch autograd and by gradcheck."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from bp_torch.functional import two_layer_quadratic_cost

import reference

SHAPES = {"1d": (3,), "2d": (4, 3), "3d": (2, 4, 3)}


def network(shape, n_hidden=5, n_out=2, dtype=torch.float64):
    x = torch.randn(shape, dtype=dtype)
    w1, b1 = torch.randn(n_hidden, shape[-1], dtype=dtype), torch.randn(n_hidden, dtype=dtype)
    w2, b2 = torch.randn(n_out, n_hidden, dtype=dtype), torch.randn(n_out, dtype=dtype)
    y = torch.rand(*shape[:-1], n_out, dtype=dtype)
    return [x, w1, b1, w2, b2, y]


def autograd_reference(x, w1, b1, w2, b2, y):
    return reference.quadratic_cost(reference.sigmoid_linear(reference.sigmoid_linear(x, w1, b1), w2, b2), y)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_gradcheck_and_gradgradcheck(shape):
    torch.manual_seed(0)
    inputs = [t.requires_grad_() for t in network(shape)]
    assert gradcheck(two_layer_quadratic_cost, inputs)
    assert gradgradcheck(two_layer_quadratic_cost, inputs)


def test_gradcheck_when_only_the_weights_require_grad():
    torch.manual_seed(1)
    inputs = network((4, 3))
    for i in (1, 3):
        inputs[i].requires_grad_()
    assert gradcheck(two_layer_quadratic_cost, inputs)
    assert gradgradcheck(two_layer_quadratic_cost, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_equations_a_and_b_equal_autograd(shape, dtype):
    torch.manual_seed(2)
    inputs = [t.requires_grad_() for t in network(shape, dtype=dtype)]
    cost, got = reference.grads(two_layer_quadratic_cost, inputs)
    expected_cost, expected = reference.grads(autograd_reference, inputs)
    torch.testing.assert_close(cost, expected_cost)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_empty_batch_gives_zero_gradients():
    inputs = [t.requires_grad_() for t in network((0, 3))]
    cost = two_layer_quadratic_cost(*inputs)
    assert cost.isnan()  # the mean of no samples, as torch's mean gives
    grads = torch.autograd.grad(cost, inputs[1:5], allow_unused=True)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
