"""sigmoid_linear against torch autograd on nn.functional.linear + torch.sigmoid, and by gradcheck."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from bp_torch.functional import sigmoid_linear

import reference

IN, OUT = 4, 3
SHAPES = {"1d": (IN,), "2d": (2, IN), "3d": (2, 3, IN), "empty-batch": (0, IN)}


def make_x(shape, dtype=torch.float64, layout="contiguous"):
    if layout == "transposed":  # (5, IN) viewed from an (IN, 5) tensor
        return torch.randn(IN, shape[0], dtype=dtype).T
    if layout == "sliced":  # every other column of a wider tensor
        return torch.randn(*shape[:-1], 2 * IN, dtype=dtype)[..., ::2]
    return torch.randn(shape, dtype=dtype)


def params(dtype=torch.float64, bias=True):
    weight = torch.randn(OUT, IN, dtype=dtype)
    return weight, (torch.randn(OUT, dtype=dtype) if bias else None)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_gradcheck_and_gradgradcheck(shape, bias):
    torch.manual_seed(0)
    x = make_x(shape).requires_grad_()
    weight, b = params(bias=bias)
    inputs = (x, weight.requires_grad_(), b.requires_grad_() if bias else None)
    assert gradcheck(sigmoid_linear, inputs)
    assert gradgradcheck(sigmoid_linear, inputs)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_gradcheck_non_contiguous_input(layout):
    torch.manual_seed(1)
    x = make_x((5, IN), layout=layout).requires_grad_()
    assert not x.is_contiguous()
    weight, b = params()
    inputs = (x, weight.requires_grad_(), b.requires_grad_())
    assert gradcheck(sigmoid_linear, inputs)
    assert gradgradcheck(sigmoid_linear, inputs)


@pytest.mark.parametrize(
    "requires_grad",
    [(True, False, False), (False, True, False), (False, False, True), (False, True, True), (True, True, True)],
    ids=["x", "weight", "bias", "weight+bias", "all"],
)
def test_gradcheck_when_only_some_inputs_require_grad(requires_grad):
    torch.manual_seed(2)
    x = make_x((2, 3, IN))
    weight, b = params()
    inputs = tuple(t.requires_grad_(r) for t, r in zip((x, weight, b), requires_grad))
    assert gradcheck(sigmoid_linear, inputs)
    assert gradgradcheck(sigmoid_linear, inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_values_and_gradients_match_torch_autograd(shape, bias, dtype):
    torch.manual_seed(3)
    x = make_x(shape, dtype).requires_grad_()
    weight, b = params(dtype, bias)
    inputs = (x, weight.requires_grad_(), b.requires_grad_() if bias else None)
    grad_output = torch.randn(*shape[:-1], OUT, dtype=dtype)
    out, got = reference.grads(sigmoid_linear, inputs, grad_output)
    expected_out, expected = reference.grads(reference.sigmoid_linear, inputs, grad_output)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    assert out.shape == (*shape[:-1], OUT) and out.dtype == dtype
    torch.testing.assert_close(out, expected_out, **tol)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            torch.testing.assert_close(g, e, **tol)


@pytest.mark.parametrize("how", ["expanded", "transposed"])
def test_strided_upstream_gradients(how):
    """gradcheck hands backward contiguous gradients; real code also sends stride-0 and transposed ones."""
    torch.manual_seed(4)
    x = torch.randn(5, IN, dtype=torch.float64, requires_grad=True)
    weight, b = (t.requires_grad_() for t in params())
    if how == "expanded":
        grad_output = torch.tensor(0.7, dtype=torch.float64).expand(5, OUT)  # what out.sum().backward() sends
    else:
        grad_output = torch.randn(OUT, 5, dtype=torch.float64).T
    assert not grad_output.is_contiguous()
    _, got = reference.grads(sigmoid_linear, (x, weight, b), grad_output)
    _, expected = reference.grads(reference.sigmoid_linear, (x, weight, b), grad_output.contiguous())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_saves_input_weight_and_output_never_z():
    torch.manual_seed(5)
    x = torch.randn(2, IN, requires_grad=True)
    weight, b = (t.float().requires_grad_() for t in params())
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        a = sigmoid_linear(x, weight, b)
    saved_ptrs = sorted(t.data_ptr() for t in saved)
    assert saved_ptrs == sorted([x.data_ptr(), weight.data_ptr(), a.data_ptr()])


def test_saves_no_more_memory_than_nn_linear_plus_sigmoid():
    """Peak memory of forward + backward is set by what autograd keeps between them: compare the saved bytes."""
    torch.manual_seed(6)
    x = torch.randn(64, 256, requires_grad=True)
    plain = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.Sigmoid())

    def saved_bytes(fn):
        saved = {}
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) and t, lambda t: t
        ):
            fn()
        return sum(saved.values())

    ours = saved_bytes(lambda: sigmoid_linear(x, plain[0].weight, plain[0].bias))
    theirs = saved_bytes(lambda: plain(x))
    assert ours <= theirs
    assert ours == (64 * 256 + 128 * 256 + 64 * 128) * 4  # x, W and a: no z
