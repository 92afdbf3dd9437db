"""Autograd hygiene, on every backend: version counters, freed graphs, nothing saved without grad, and no gradient
computed that nobody asked for (checked on the output mask / needs_input_grad the backward receives, not by time).
"""

import itertools
import threading

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.utils._python_dispatch import TorchDispatchMode

import bp_torch
import bp_torch.autograd
from bp_torch import functional

INPLACE_ERROR = "modified by an inplace operation"
SECOND_BACKWARD_ERROR = "backward through the graph a second time"


def layer_inputs(requires_grad=(True, True, True), bias=True):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, generator=gen, dtype=torch.float64) if bias else None
    return [t if t is None else t.requires_grad_(rg) for t, rg in zip((x, weight, b), requires_grad)]


# --- in-place modification of a saved tensor ------------------------------------------------------------------------


@pytest.mark.parametrize("modified", ["x", "weight", "output"])
@pytest.mark.parametrize("x_requires_grad", [True, False])
def test_inplace_change_of_a_saved_tensor_raises_the_version_counter_error(modified, x_requires_grad):
    x, weight, b = layer_inputs((x_requires_grad, True, True))
    if x_requires_grad:
        x = x * 1  # a non-leaf, which may be modified in place
    out = functional.sigmoid_linear(x, weight, b)
    with torch.no_grad():
        {"x": x, "weight": weight, "output": out}[modified].add_(1)
    with pytest.raises(RuntimeError, match=INPLACE_ERROR):
        out.sum().backward()


@pytest.mark.parametrize("modified", ["input", "target"])
def test_inplace_change_of_a_saved_cost_input_raises(modified):
    a = torch.rand(3, 4, dtype=torch.float64, requires_grad=True) * 1
    y = torch.rand(3, 4, dtype=torch.float64)
    cost = functional.quadratic_cost(a, y)
    with torch.no_grad():
        {"input": a, "target": y}[modified].mul_(2)
    with pytest.raises(RuntimeError, match=INPLACE_ERROR):
        cost.backward()


def test_inplace_change_of_an_unsaved_tensor_is_fine():
    x, weight, b = layer_inputs()
    out = functional.sigmoid_linear(x, weight, b)
    with torch.no_grad():
        b.add_(1)  # the bias is not needed by the backward (dz/db = 1)
    out.sum().backward()
    assert b.grad is not None


# --- forward-mode AD --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["sigmoid_linear", "quadratic_cost", "sigmoid_mlp"])
def test_forward_mode_ad_is_refused_not_dropped(op):
    """No backend has a forward-mode (jvp) formula: a dual input raises, rather than losing its tangent."""
    x, weight, b = layer_inputs((False, False, False))
    calls = {
        "sigmoid_linear": lambda t: functional.sigmoid_linear(t, weight, b),
        "quadratic_cost": lambda t: functional.quadratic_cost(t, torch.zeros_like(x)),
        "sigmoid_mlp": lambda t: functional.sigmoid_mlp(t, [weight], [b]),
    }
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(NotImplementedError, match="forward[- ]mode AD"):
            calls[op](dual)


# --- the graph is freed after backward ------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["sigmoid_linear", "quadratic_cost"])
def test_backward_twice_without_retain_graph_raises(op):
    x, weight, b = layer_inputs()
    out = (
        functional.sigmoid_linear(x, weight, b)
        if op == "sigmoid_linear"
        else functional.quadratic_cost(x, torch.zeros_like(x.detach()))
    )
    out.sum().backward()
    with pytest.raises(RuntimeError, match=SECOND_BACKWARD_ERROR):
        out.sum().backward()


def test_backward_twice_with_retain_graph_accumulates():
    x, weight, b = layer_inputs()
    out = functional.sigmoid_linear(x, weight, b).sum()
    out.backward(retain_graph=True)
    first = [t.grad.clone() for t in (x, weight, b)]
    out.backward()
    for t, g in zip((x, weight, b), first):
        torch.testing.assert_close(t.grad, 2 * g)


# --- what is saved ---------------------------------------------------------------------------------------------------


class CountSaved(torch.autograd.graph.saved_tensors_hooks):
    def __init__(self):
        self.packed = []
        super().__init__(self.pack, lambda t: t)

    def pack(self, t):
        self.packed.append(t)
        return t


def run_both_ops():
    x, weight, b = layer_inputs()
    a = functional.sigmoid_linear(x, weight, b)
    cost = functional.quadratic_cost(a, torch.zeros_like(a))
    return a, cost


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode], ids=lambda m: m.__name__)
def test_forward_without_grad_saves_nothing(mode):
    saved = CountSaved()
    with saved, mode():
        a, cost = run_both_ops()
    assert saved.packed == []
    assert not a.requires_grad and a.grad_fn is None and cost.grad_fn is None


def test_forward_with_grad_saves_x_weight_and_output_only():
    x, weight, b = layer_inputs()
    saved = CountSaved()
    with saved:
        a = functional.sigmoid_linear(x, weight, b)
    # x, W and a: never z (sigma'(z) = a (1 - a), equation 1.2) and never the bias
    assert len(saved.packed) == 3
    assert [tuple(t.shape) for t in saved.packed] == [(3, 4), (2, 4), (3, 2)]
    assert torch.equal(saved.packed[0], x) and torch.equal(saved.packed[1], weight)
    assert torch.equal(saved.packed[2], a)
    saved = CountSaved()
    with saved:
        functional.quadratic_cost(a, torch.zeros_like(a))
    assert len(saved.packed) == 2  # a and y


# --- gradients nobody asked for are not computed ---------------------------------------------------------------------


class OpSpy(TorchDispatchMode):
    """Records every bp_torch backward op call (with its output mask) and every aten matrix product."""

    def __init__(self):
        super().__init__()
        self.masks = {}
        self.results = {}
        self.matmuls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = func.name()
        if name.startswith("bp_torch::") and name.endswith("_backward"):
            self.masks[name] = list(args[-1])
            self.results[name] = result
        if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default):
            self.matmuls += 1
        return result


@pytest.fixture
def python_spy(monkeypatch):
    """Records the needs_input_grad the Python Functions hand to the chapter's backward formulas, and the results."""
    calls = {}

    def wrap(name):
        original = getattr(bp_torch.autograd, name)

        def spy(*args):
            result = original(*args)
            calls[name] = (tuple(args[-1]), result)
            return result

        monkeypatch.setattr(bp_torch.autograd, name, spy)

    wrap("sigmoid_linear_backward")
    wrap("quadratic_cost_backward")
    return calls


def requested_and_returned(backend, op_spy, python_spy, name):
    """(the gradients the backward was asked for, the gradients it returned), as seen on the active backend:
    the output mask of the C++ backward op, or the needs_input_grad handed to the Python formula."""
    if backend == "cpp":
        return tuple(op_spy.masks[f"bp_torch::{name}"]), op_spy.results[f"bp_torch::{name}"]
    needs, returned = python_spy[name]
    return tuple(needs), returned


MIXES = [mix for mix in itertools.product([False, True], repeat=3) if any(mix)]
# Without a bias, a mix in which only the bias requires grad asks for nothing: not a case.
BIAS_MIXES = [(bias, mix) for bias in (True, False) for mix in MIXES if bias or any(mix[:2])]


@pytest.mark.parametrize(
    "bias, requires_grad",
    BIAS_MIXES,
    ids=[("bias-" if bias else "no-bias-") + "+".join(n for n, r in zip("xWb", m) if r) for bias, m in BIAS_MIXES],
)
def test_sigmoid_linear_backward_computes_only_requested_gradients(backend, python_spy, requires_grad, bias):
    x, weight, b = layer_inputs(requires_grad, bias)
    asked = (requires_grad[0], requires_grad[1], bias and requires_grad[2])
    with OpSpy() as spy:
        out = functional.sigmoid_linear(x, weight, b)
        out.sum().backward()
    requested, returned = requested_and_returned(backend, spy, python_spy, "sigmoid_linear_backward")
    assert requested == asked
    assert [g is not None for g in returned] == list(asked)
    # The matrix products run only for what was asked: dx = delta W, dW = delta^T x (the cpp kernel calls BLAS
    # below the dispatcher, so only the python backend's products are visible here).
    if backend == "python":
        assert spy.matmuls == 1 + asked[0] + asked[1]  # + the forward's addmm/mm


@pytest.mark.parametrize("requires_grad", MIXES, ids=lambda m: "+".join(n for n, r in zip("xWb", m) if r))
def test_create_graph_backward_computes_only_requested_gradients(requires_grad):
    x, weight, b = layer_inputs(requires_grad)
    out = functional.sigmoid_linear(x, weight, b)
    with OpSpy() as spy:
        grads = torch.autograd.grad(
            out.sum(), [t for t, r in zip((x, weight, b), requires_grad) if r], create_graph=True
        )
    assert spy.matmuls == requires_grad[0] + requires_grad[1]
    assert all(g.requires_grad for g in grads)


def test_double_backward_runs_in_another_thread(backend):
    """On the C++ backend a create_graph backward calls the Python formulas from C++ (the backward ops' Autograd
    kernels), which take the GIL: a thread that is not the main one gets the same exact second derivatives."""
    x, weight, b = layer_inputs()
    w2 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    results = {}

    def run():
        results["gradgradcheck"] = torch.autograd.gradgradcheck(
            lambda x, w, b, w2: functional.quadratic_cost(
                functional.sigmoid_mlp(x, [w, w2], [b, None]), torch.zeros(3, 3, dtype=torch.float64)
            ),
            (x, weight, b, w2),
        )

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive() and results == {"gradgradcheck": True}


@pytest.mark.parametrize("requires_grad", [(True, False), (False, True), (True, True)], ids=["a", "y", "a+y"])
def test_quadratic_cost_backward_computes_only_requested_gradients(backend, python_spy, requires_grad):
    a = torch.rand(3, 4, dtype=torch.float64, requires_grad=requires_grad[0])
    y = torch.rand(3, 4, dtype=torch.float64, requires_grad=requires_grad[1])
    with OpSpy() as spy:
        functional.quadratic_cost(a, y).backward()
    requested, returned = requested_and_returned(backend, spy, python_spy, "quadratic_cost_backward")
    assert requested == requires_grad
    assert [g is not None for g in returned] == list(requires_grad)


@pytest.mark.backends("cpp")
def test_cpp_backward_ops_return_none_where_the_mask_is_false(backend):
    x, weight, _ = layer_inputs((False, False, False))
    a = functional.sigmoid_linear(x, weight)
    grad = torch.ones_like(a)
    for mask in itertools.product([False, True], repeat=3):
        result = torch.ops.bp_torch.sigmoid_linear_backward(grad, x, weight, a, list(mask))
        assert [g is not None for g in result] == list(mask)
    for mask in itertools.product([False, True], repeat=2):
        result = torch.ops.bp_torch.quadratic_cost_backward(torch.tensor(1.0, dtype=a.dtype), a, a, "mean", list(mask))
        assert [g is not None for g in result] == list(mask)


@pytest.mark.backends("cpp")
def test_cpp_backward_ops_are_differentiable_where_their_inputs_require_grad(backend):
    """A backward op called on tensors that require grad, with grad mode on, computes in torch ops that autograd
    records (its differentiable twin, the Python backend's formula): its gradients have a graph, and their own
    gradients are torch autograd's second derivatives of the layer and the cost."""
    x, weight, b = layer_inputs()
    y = torch.rand(3, 2, dtype=torch.float64)
    a = torch.sigmoid(x @ weight.T + b)
    grad_a = torch.rand_like(a)
    got = torch.ops.bp_torch.sigmoid_linear_backward(grad_a, x, weight, a, [True, True, False])
    want = torch.autograd.grad(a, [x, weight], grad_a, create_graph=True)
    assert all(g.requires_grad for g in got[:2]) and got[2] is None
    torch.testing.assert_close(list(got[:2]), list(want))
    second = [torch.autograd.grad(g.sum(), [x, weight, b], retain_graph=True) for g in (*got[:2], *want)]
    for g, w in zip(second[:2], second[2:]):
        torch.testing.assert_close(g, w)
    grad_cost, grad_y = torch.ops.bp_torch.quadratic_cost_backward(
        torch.tensor(2.0, dtype=a.dtype), a, y, "sum", [True, False]
    )
    want_cost = torch.autograd.grad(2.0 * 0.5 * (y - a).square().sum(), a, create_graph=True)[0]
    assert grad_cost.requires_grad and grad_y is None
    torch.testing.assert_close(grad_cost, want_cost)
    torch.testing.assert_close(
        torch.autograd.grad(grad_cost.sum(), weight, retain_graph=True)[0],
        torch.autograd.grad(want_cost.sum(), weight)[0],
    )
