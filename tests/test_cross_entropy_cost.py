"""cross_entropy_cost and CrossEntropyCost (3.1)-(3.3) against plain torch (binary_cross_entropy), numpy (Nielsen's
CrossEntropyCost.fn), gradcheck and gradgradcheck, on every backend."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import bp_torch
from bp_torch import CrossEntropyCost, SigmoidMLP
from bp_torch.functional import cross_entropy_cost

import reference

SHAPES = {"1d": (3,), "2d": (4, 3), "3d": (2, 4, 3), "empty-batch": (0, 3)}
REDUCTIONS = ["mean", "sum", "none"]
GRADCHECK_CASES = [
    (name, shape, r) for name, shape in SHAPES.items() for r in REDUCTIONS if not (shape[0] == 0 and r == "mean")
]


def inside(shape, dtype=torch.float64, seed=0):
    """Values in [0.05, 0.95]: away from the saturated ends, where the floors of (3.1) and (3.2) take over."""
    g = torch.Generator().manual_seed(seed)
    return (0.05 + 0.9 * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("name, shape, reduction", GRADCHECK_CASES)
def test_gradcheck_and_gradgradcheck(name, shape, reduction):
    a = inside(shape).requires_grad_()
    y = inside(shape, seed=1).requires_grad_()
    fn = lambda a, y: cross_entropy_cost(a, y, reduction)  # noqa: E731
    assert gradcheck(fn, (a, y))
    assert gradgradcheck(fn, (a, y))
    assert gradcheck(fn, (a, y.detach()))
    assert gradcheck(fn, (a.detach(), y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_values_and_gradients_match_binary_cross_entropy(shape, reduction, dtype):
    a = inside(shape, dtype, seed=2).requires_grad_()
    y = inside(shape, dtype, seed=3).requires_grad_()
    out = cross_entropy_cost(a, y, reduction)
    expected = reference.cross_entropy_cost(a, y, reduction)
    torch.testing.assert_close(out, expected, equal_nan=True)
    if out.numel() and not out.isnan().any():
        grad_output = torch.rand_like(out)
        got = torch.autograd.grad(out, (a, y), grad_output)
        want = torch.autograd.grad(expected, (a, y), grad_output)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)


def test_hand_computed_values_and_backward_by_equation_3_2():
    a = torch.tensor([[0.5, 0.5], [0.8, 0.1]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    # sample 1: -ln 0.5 - ln 0.5 = 2 ln 2; sample 2: -ln 0.8 - ln 0.9
    per_sample = torch.tensor([2 * np.log(2), -np.log(0.8) - np.log(0.9)], dtype=torch.float64)
    torch.testing.assert_close(cross_entropy_cost(a, y, "none"), per_sample)
    cross_entropy_cost(a, y, "sum").backward()
    # (3.2) (a - y) / (a (1 - a)): 0.5/0.25 = 2, -0.5/0.25 = -2, -0.2/0.16 = -1.25, 0.1/0.09
    torch.testing.assert_close(a.grad, torch.tensor([[2.0, -2.0], [-1.25, 0.1 / 0.09]], dtype=torch.float64))


def test_values_match_numpy_nielsen():
    a, y = inside((6, 4), seed=4), inside((6, 4), seed=5)
    expected = reference.numpy_cross_entropy(a.numpy(), y.numpy())
    np.testing.assert_allclose(cross_entropy_cost(a, y, "none").numpy(), expected, rtol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saturated_outputs_give_finite_costs_and_gradients(dtype):
    """0 ln 0 = 0, as Nielsen's nan_to_num makes it; ln 0 = -100 where the output is saturated on the wrong side."""
    a = torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=dtype, requires_grad=True)
    cost = cross_entropy_cost(a, y, "none")
    torch.testing.assert_close(cost, torch.tensor([200.0], dtype=dtype))
    grad_a, grad_y = torch.autograd.grad(cost.sum(), (a, y))
    assert grad_a.isfinite().all() and grad_y.isfinite().all()
    torch.testing.assert_close(grad_a[0, :2], torch.zeros(2, dtype=dtype))  # a = y: no error, no gradient
    assert grad_a[0, 2] > 0 > grad_a[0, 3]  # pushed back towards y
    right = cross_entropy_cost(a[:, :2], y[:, :2], "none")
    np.testing.assert_array_equal(
        right.detach().numpy(),
        reference.numpy_cross_entropy(a[:, :2].detach().double().numpy(), y[:, :2].detach().double().numpy()),
    )


def test_nan_propagates():
    a = torch.tensor([[0.5, float("nan")]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0]])
    cost = cross_entropy_cost(a, y)
    assert cost.isnan()
    (grad,) = torch.autograd.grad(cost, a)
    assert grad[0, 1].isnan() and grad[0, 0].isfinite()


@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    reduction=st.sampled_from(REDUCTIONS),
    saturate=st.booleans(),
)
def test_drawn_inputs_match_binary_cross_entropy(rows, cols, seed, reduction, saturate):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(rows, cols, generator=g, dtype=torch.float64)
    y = torch.rand(rows, cols, generator=g, dtype=torch.float64)
    if saturate:  # some outputs exactly 0 or 1, some targets one-hot
        a = torch.where(a < 0.3, a.round(), a)
        y = torch.where(y < 0.5, y.round(), y)
    a.requires_grad_()
    out = cross_entropy_cost(a, y, reduction)
    expected = reference.cross_entropy_cost(a, y, reduction)
    torch.testing.assert_close(out, expected)
    (got,) = torch.autograd.grad(out.sum(), a)
    (want,) = torch.autograd.grad(expected.sum(), a)
    torch.testing.assert_close(got, want)
    assert got.isfinite().all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_module_relates_to_bce_loss(reduction):
    a, y = inside((5, 4), seed=6), inside((5, 4), seed=7)
    bce = nn.BCELoss(reduction=reduction)(a, y)
    factor = 4 if reduction == "mean" else 1
    torch.testing.assert_close(CrossEntropyCost(reduction)(a, y), factor * bce)
    assert repr(CrossEntropyCost(reduction)) == f"CrossEntropyCost(reduction='{reduction}')"


def test_sigma_prime_cancels_after_a_sigmoid_layer():
    """(3.3): through a sigmoid output, dC/dz^L = a^L - y, where the quadratic cost's is (a^L - y) sigma'(z^L)."""
    z = torch.tensor([[-3.0, 0.5, 4.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    a = torch.sigmoid(z)
    (ce,) = torch.autograd.grad(cross_entropy_cost(a, y, "sum"), z, retain_graph=True)
    (quadratic,) = torch.autograd.grad(bp_torch.functional.quadratic_cost(a, y, "sum"), z)
    torch.testing.assert_close(ce, (a - y).detach())
    torch.testing.assert_close(quadratic, ((a - y) * a * (1 - a)).detach())


BAD = {
    "target above 1": (
        (torch.full((2, 3), 0.5), torch.full((2, 3), 1.5)),
        "mean",
        ValueError,
        "cross_entropy_cost: target must be in [0, 1] (a probability), got 1.5",
    ),
    "target below 0": (
        (torch.full((2, 3), 0.5), torch.full((2, 3), -0.25)),
        "mean",
        ValueError,
        "cross_entropy_cost: target must be in [0, 1] (a probability), got -0.25",
    ),
    "input above 1": (
        (torch.full((2, 3), 2.0), torch.full((2, 3), 0.5)),
        "sum",
        ValueError,
        "cross_entropy_cost: input must be in [0, 1] (a probability), got 2.0",
    ),
    "reduction": (
        (torch.full((2, 3), 0.5), torch.full((2, 3), 0.5)),
        "avg",
        ValueError,
        "cross_entropy_cost: reduction must be one of ('none', 'mean', 'sum'), got 'avg'",
    ),
    "reduction None": (
        (torch.full((2, 3), 0.5), torch.full((2, 3), 0.5)),
        None,
        ValueError,
        "cross_entropy_cost: reduction must be one of ('none', 'mean', 'sum'), got None",
    ),
    "shapes": (
        (torch.full((2, 3), 0.5), torch.full((3, 2), 0.5)),
        "mean",
        ValueError,
        "cross_entropy_cost: input and target must have the same shape",
    ),
    "dtype": (
        (torch.full((2, 3), 0.5), torch.full((2, 3), 0.5, dtype=torch.float64)),
        "mean",
        TypeError,
        "cross_entropy_cost: input and target must have the same dtype",
    ),
    "integer": (
        (torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.int64)),
        "mean",
        TypeError,
        "cross_entropy_cost: input must be float32 or float64",
    ),
    "0-d": (
        (torch.tensor(0.5), torch.tensor(0.5)),
        "mean",
        ValueError,
        "cross_entropy_cost: input must have at least 1 dimension",
    ),
    "not a tensor": (
        ([0.5], torch.full((1,), 0.5)),
        "mean",
        TypeError,
        "cross_entropy_cost: input must be a Tensor, got list",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_bad_input_raises_a_clear_error(case):
    (a, y), reduction, error, message = BAD[case]
    with pytest.raises(error, match=re.escape(message)):
        cross_entropy_cost(a, y, reduction)


def test_module_refuses_a_bad_reduction():
    with pytest.raises(ValueError, match=re.escape("CrossEntropyCost: reduction must be one of")):
        CrossEntropyCost("avg")


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(8)
    net = SigmoidMLP([6, 5, 3])
    reference.assert_compiled_matches_eager(net, CrossEntropyCost(), torch.rand(4, 6), torch.rand(4, 3))


def test_torch_compile_still_checks_the_target():
    compiled = torch.compile(lambda a, y: cross_entropy_cost(a, y), fullgraph=True)
    torch._dynamo.reset()
    a = torch.full((2, 3), 0.5)
    torch.testing.assert_close(compiled(a, a), cross_entropy_cost(a, a))
    with pytest.raises((ValueError, RuntimeError), match=re.escape("cross_entropy_cost: target must be in [0, 1]")):
        compiled(a, torch.full((2, 3), 3.0))


def test_per_sample_gradients_by_vmap_match_a_loop():
    torch.manual_seed(9)
    net = SigmoidMLP([4, 3, 2]).double()
    reference.assert_per_sample_grads_match_loop(
        net, CrossEntropyCost(), torch.rand(5, 4, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    )


def test_autocast_computes_in_float32():
    a, y = inside((3, 4), torch.bfloat16, seed=10), inside((3, 4), torch.bfloat16, seed=11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = cross_entropy_cost(a, y)
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, reference.cross_entropy_cost(a.float(), y.float()))


@pytest.mark.backends("cpp")
def test_opcheck():
    a = inside((3, 4)).requires_grad_()
    y = inside((3, 4), seed=12)
    for reduction in REDUCTIONS:
        torch.library.opcheck(torch.ops.bp_torch.cross_entropy_cost.default, (a, y, reduction))
        torch.library.opcheck(torch.ops.bp_torch.cross_entropy_cost.default, (a, y.requires_grad_(), reduction))
