"""Numerics at the edges, on every backend: saturation at large |z|, NaN and inf propagation, half types, autocast.

The reference is torch's own composite, ``torch.sigmoid(nn.functional.linear(x, W, b))``, whose backward is
``sigmoid_backward(g, a) = g * (1 - a) * a``, computed from the output as bp_torch does (equation 1.2).
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bp_torch
from bp_torch import functional

DTYPES = [torch.float32, torch.float64]


def reference(x, weight, bias):
    return torch.sigmoid(F.linear(x, weight, bias))


def forward_backward(fn, x, weight, bias, grad=None):
    """Output and (dx, dW, db) of fn, for fresh leaves with the given values."""
    x, weight, bias = (t.detach().clone().requires_grad_() for t in (x, weight, bias))
    out = fn(x, weight, bias)
    grads = torch.autograd.grad(out, (x, weight, bias), torch.ones_like(out) if grad is None else grad)
    return out.detach(), grads


@pytest.fixture
def strict_warnings():
    """Any warning (overflow, invalid value, ...) and any numpy floating-point error fails the test."""
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("magnitude", [1e4, 1e5, 1e10, 1e30], ids=lambda m: f"z={m:g}")
def test_large_z_saturates_to_exactly_0_and_1_with_zero_gradients(strict_warnings, dtype, magnitude):
    # z = x W^T + b reaches +-magnitude (and beyond, through the bias) from finite inputs.
    x = torch.tensor([[1.0], [-1.0], [2.0], [-2.0]], dtype=dtype) * magnitude
    weight = torch.tensor([[1.0], [3.0]], dtype=dtype)
    bias = torch.tensor([0.5, -0.5], dtype=dtype)
    out, grads = forward_backward(functional.sigmoid_linear, x, weight, bias)
    expected_out = (x @ weight.T > 0).to(dtype)
    assert torch.equal(out, expected_out)  # exactly 0 or 1, no NaN
    for grad in grads:
        assert torch.isfinite(grad).all()
        assert torch.equal(grad, torch.zeros_like(grad))  # sigma'(z) = a (1 - a) = 0 exactly
    ref_out, ref_grads = forward_backward(reference, x, weight, bias)
    assert torch.equal(out, ref_out)
    for grad, ref in zip(grads, ref_grads):
        assert torch.equal(grad, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_infinite_z_saturates(strict_warnings, dtype):
    x = torch.tensor(
        [[float("inf")], [-float("inf")], [torch.finfo(dtype).max], [-torch.finfo(dtype).max]], dtype=dtype
    )
    weight = torch.ones(1, 1, dtype=dtype)
    out = functional.sigmoid_linear(x, weight)
    assert torch.equal(out, torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=dtype))
    x.requires_grad_()
    (grad_x,) = torch.autograd.grad(functional.sigmoid_linear(x, weight).sum(), x)
    assert torch.equal(grad_x, torch.zeros_like(grad_x))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sweep_of_z_matches_torch_and_saturates_where_it_does(strict_warnings, dtype):
    # Through the float32 edges (exactly 1 from about z = 16.7, exactly 0 below about z = -88.7, denormals
    # between) and the float64 ones (-745, 37), out to |z| = 1e4.
    z = torch.cat([torch.linspace(-1e4, 1e4, 2001, dtype=dtype), torch.linspace(-800, 800, 16001, dtype=dtype)])
    x, weight, bias = z[:, None], torch.ones(1, 1, dtype=dtype), torch.zeros(1, dtype=dtype)
    out, grads = forward_backward(functional.sigmoid_linear, x, weight, bias)
    ref_out, ref_grads = forward_backward(reference, x, weight, bias)
    assert not out.isnan().any() and all(torch.isfinite(g).all() for g in grads)
    tol = {"rtol": 1e-6, "atol": 1e-30} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-300}
    torch.testing.assert_close(out, ref_out, **tol)
    saturated = (ref_out == 0) | (ref_out == 1)
    assert saturated.sum() > 1000
    assert torch.equal(out[saturated], ref_out[saturated])  # exactly 0 or 1 wherever torch gives exactly 0 or 1
    zero_grad = ref_grads[0] == 0
    assert torch.equal(grads[0][zero_grad], ref_grads[0][zero_grad])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=tol["rtol"] * 10, atol=tol["atol"] * 1e5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_saturated_outputs_give_a_finite_cost_and_gradients(strict_warnings, dtype):
    x = torch.tensor([[1e4, -1e4], [-1e30, 1e30]], dtype=dtype)
    weight = torch.eye(2, dtype=dtype).requires_grad_()
    bias = torch.zeros(2, dtype=dtype, requires_grad=True)
    a = functional.sigmoid_linear(x, weight, bias)
    cost = functional.quadratic_cost(a, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=dtype), "sum")
    assert cost.item() == 2.0  # the wrong two outputs, each costing 1/2 * 1^2
    grads = torch.autograd.grad(cost, (weight, bias))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)  # saturated: no gradient, but no NaN either


def nan_inputs(dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, dtype=dtype)
    weight = torch.randn(4, 5, generator=gen, dtype=dtype)
    bias = torch.randn(4, generator=gen, dtype=dtype)
    x[1, 2] = float("nan")
    x[3, 0] = float("inf")  # inf * W gives +-inf in z, and NaN in dW (inf * 0) as in torch
    weight[2, 4] = float("nan")
    bias[0] = float("nan")
    return x, weight, bias


def same_nan_positions(got, expected):
    assert torch.equal(got.isnan(), expected.isnan())
    finite = ~expected.isnan()
    torch.testing.assert_close(got[finite], expected[finite])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("where", ["x", "weight", "bias", "all", "upstream-grad"])
def test_nan_propagates_like_torch(dtype, where):
    x, weight, bias = nan_inputs(dtype)
    clean_x, clean_weight, clean_bias = (t.nan_to_num(0.0, 0.0, 0.0) for t in (x, weight, bias))
    inputs = {
        "x": (x, clean_weight, clean_bias),
        "weight": (clean_x, weight, clean_bias),
        "bias": (clean_x, clean_weight, bias),
        "all": (x, weight, bias),
        "upstream-grad": (clean_x, clean_weight, clean_bias),
    }[where]
    grad = None
    if where == "upstream-grad":
        grad = torch.ones(6, 4, dtype=dtype)
        grad[2, 1] = float("nan")
    out, grads = forward_backward(functional.sigmoid_linear, *inputs, grad=grad)
    ref_out, ref_grads = forward_backward(reference, *inputs, grad=grad)
    assert ref_out.isnan().any() or where == "upstream-grad"
    assert any(g.isnan().any() for g in ref_grads)
    same_nan_positions(out, ref_out)
    for g, ref in zip(grads, ref_grads):
        same_nan_positions(g, ref)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_nan_propagates_through_the_cost_like_torch(reduction):
    a = torch.rand(5, 3, dtype=torch.float64)
    y = torch.rand(5, 3, dtype=torch.float64)
    a[1, 1] = float("nan")
    y[3, 2] = float("nan")

    def run(fn):
        a_, y_ = a.clone().requires_grad_(), y.clone().requires_grad_()
        out = fn(a_, y_)
        return out.detach(), torch.autograd.grad(out, (a_, y_), torch.ones_like(out))

    out, grads = run(lambda a, y: functional.quadratic_cost(a, y, reduction))
    per_sample = lambda a, y: 0.5 * (y - a).square().sum(-1)  # noqa: E731
    ref_out, ref_grads = run(
        lambda a, y: {"none": per_sample(a, y), "sum": per_sample(a, y).sum(), "mean": per_sample(a, y).mean()}[
            reduction
        ]
    )
    same_nan_positions(out, ref_out)
    for g, ref in zip(grads, ref_grads):
        same_nan_positions(g, ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_are_rejected_with_the_dtype_named(dtype):
    x = torch.randn(2, 3, dtype=dtype)
    with pytest.raises(TypeError, match=f"sigmoid_linear: input must be float32 or float64, got {dtype}"):
        functional.sigmoid_linear(x, torch.randn(4, 3, dtype=dtype))
    with pytest.raises(TypeError, match=f"quadratic_cost: input must be float32 or float64, got {dtype}"):
        functional.quadratic_cost(x, x)
    with pytest.raises(TypeError, match=f"got {dtype}"):
        bp_torch.SigmoidLinear(3, 4, dtype=dtype)(x)


# --- autocast: the ops declare their casting (float32), where nn.Linear runs in bfloat16 -----------------------------


def test_autocast_bfloat16_runs_the_layers_in_float32():
    torch.manual_seed(0)
    layer = bp_torch.SigmoidLinear(8, 5)
    plain = torch.nn.Linear(8, 5)
    x = torch.randn(4, 8)
    expected = layer(x)  # float32, outside autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        assert plain(x).dtype == torch.bfloat16  # what nn.Linear does: it computes in bfloat16
    assert out.dtype == torch.float32  # what bp_torch does: it declares float32
    assert torch.equal(out, expected)  # ... and computes exactly the float32 result


def test_autocast_casts_half_inputs_to_float32_and_gradients_flow_back():
    torch.manual_seed(0)
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    weight = torch.randn(5, 8, dtype=torch.bfloat16, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)  # float32 parameters mixed with bfloat16 ones
    target = torch.rand(4, 5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = functional.sigmoid_linear(x, weight, bias)
        cost = functional.quadratic_cost(a, target)
    assert a.dtype == torch.float32 and cost.dtype == torch.float32
    cost.backward()  # outside autocast, as torch recommends
    assert weight.grad.dtype == torch.bfloat16 and bias.grad.dtype == torch.float32

    w32, b32 = weight.detach().float().requires_grad_(), bias.detach().clone().requires_grad_()
    a32 = functional.sigmoid_linear(x.float(), w32, b32)
    cost32 = functional.quadratic_cost(a32, target.float())
    cost32.backward()
    assert torch.equal(a, a32) and torch.equal(cost, cost32)  # the same float32 computation
    assert torch.equal(weight.grad, w32.grad.bfloat16()) and torch.equal(bias.grad, b32.grad)


def test_autocast_leaves_float64_alone():
    x = torch.randn(3, 4, dtype=torch.float64)
    weight = torch.randn(2, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = functional.sigmoid_linear(x, weight)
        cost = functional.quadratic_cost(out, torch.zeros_like(out))
    assert out.dtype == torch.float64 and cost.dtype == torch.float64
    assert torch.equal(out, functional.sigmoid_linear(x, weight))


def test_autocast_sigmoid_mlp_runs_in_float32_on_every_backend():
    torch.manual_seed(0)
    net = bp_torch.SigmoidMLP([6, 5, 3])
    x = torch.randn(4, 6)
    expected = net(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(net(x), expected)  # float32 parameters: the float32 result, exactly
        net_bf16 = net.to(torch.bfloat16)
        out = net_bf16(x.bfloat16())  # bfloat16 parameters: cast, computed in float32
    assert out.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad.dtype == torch.bfloat16 for p in net_bf16.parameters())
    net32 = bp_torch.SigmoidMLP([6, 5, 3])
    net32.load_state_dict({k: v.float() for k, v in net_bf16.state_dict().items()})
    assert torch.equal(out, net32(x.bfloat16().float()))
