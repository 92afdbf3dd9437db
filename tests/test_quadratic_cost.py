"""quadratic_cost and QuadraticCost against the cost written with torch ops, and by gradcheck."""

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

from bp_torch import QuadraticCost
from bp_torch.functional import quadratic_cost

import reference

SHAPES = {"1d": (3,), "2d": (4, 3), "3d": (2, 4, 3), "empty-batch": (0, 3)}
REDUCTIONS = ["mean", "sum", "none"]


# The mean over no samples is NaN, which gradcheck cannot compare; test_values_and_gradients covers that case.
GRADCHECK_CASES = [
    (name, shape, r) for name, shape in SHAPES.items() for r in REDUCTIONS if not (shape[0] == 0 and r == "mean")
]


@pytest.mark.parametrize("name, shape, reduction", GRADCHECK_CASES)
def test_gradcheck_and_gradgradcheck(name, shape, reduction):
    torch.manual_seed(0)
    a = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    y = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    fn = lambda a, y: quadratic_cost(a, y, reduction)  # noqa: E731
    assert gradcheck(fn, (a, y))
    assert gradgradcheck(fn, (a, y))
    assert gradcheck(fn, (a, y.detach()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_values_and_gradients_match_torch_autograd(shape, reduction, dtype):
    torch.manual_seed(1)
    a = torch.rand(shape, dtype=dtype, requires_grad=True)
    y = torch.rand(shape, dtype=dtype, requires_grad=True)
    out = quadratic_cost(a, y, reduction)
    expected = reference.quadratic_cost(a, y, reduction)
    torch.testing.assert_close(out, expected, equal_nan=True)
    if out.numel() and not out.isnan().any():
        grad_output = torch.rand_like(out)
        got = torch.autograd.grad(out, (a, y), grad_output)
        want = torch.autograd.grad(expected, (a, y), grad_output)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_backward_is_a_minus_y_by_equation_1_3():
    a = torch.tensor([[0.2, 0.9], [0.6, 0.1]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    quadratic_cost(a, y, "sum").backward()
    torch.testing.assert_close(a.grad, torch.tensor([[0.2, -0.1], [-0.4, 0.1]], dtype=torch.float64))


def test_hand_computed_values():
    a = torch.tensor([[0.2, 0.9], [0.6, 0.1]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # sample 1: (0.04 + 0.01) / 2 = 0.025; sample 2: (0.16 + 0.01) / 2 = 0.085
    torch.testing.assert_close(quadratic_cost(a, y, "none"), torch.tensor([0.025, 0.085], dtype=torch.float64))
    torch.testing.assert_close(quadratic_cost(a, y, "sum"), torch.tensor(0.11, dtype=torch.float64))
    torch.testing.assert_close(quadratic_cost(a, y), torch.tensor(0.055, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_module_relates_to_mse_loss(reduction):
    """Same interface as nn.MSELoss; the chapter's cost is half the squared error, summed over the outputs."""
    torch.manual_seed(2)
    a, y = torch.rand(5, 4, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64)
    mse = nn.MSELoss(reduction=reduction)(a, y)
    factor = 0.5 * 4 if reduction == "mean" else 0.5
    torch.testing.assert_close(QuadraticCost(reduction)(a, y), factor * mse)
    assert repr(QuadraticCost(reduction)) == f"QuadraticCost(reduction='{reduction}')"
