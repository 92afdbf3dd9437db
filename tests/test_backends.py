"""The backend switch, the C++ ops' registration (opcheck), and torch.compile on each backend."""

import os
import subprocess
import sys

import pytest
import torch
from torch.library import opcheck

import bp_torch
from bp_torch import SigmoidLinear
from bp_torch.functional import quadratic_cost, sigmoid_linear

import reference


def test_switch():
    assert bp_torch.available_backends()[0] == "python"
    for name in bp_torch.available_backends():
        bp_torch.set_backend(name)
        assert bp_torch.backend() == name
    with pytest.raises(ValueError, match="unknown or unavailable backend 'fortran'"):
        bp_torch.set_backend("fortran")


def test_cpp_backend_is_built_unless_disabled():
    """A silently failed build would leave only the Python backend; CI must notice."""
    if os.environ.get("BP_TORCH_NO_EXT") == "1":
        assert bp_torch.available_backends() == ("python",)
    else:
        assert bp_torch.available_backends() == ("python", "cpp")


@pytest.mark.backends("python")
@pytest.mark.parametrize("name", ["python", "cpp"])
def test_environment_variable_selects_the_backend_at_import(name):
    if name not in bp_torch.available_backends():
        pytest.skip("the C++ extension is not built")
    code = "import bp_torch; print(bp_torch.backend())"
    env = {**os.environ, "BP_TORCH_BACKEND": name}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == name


@pytest.mark.backends("python")
def test_environment_variable_with_an_unknown_backend_fails_clearly():
    env = {**os.environ, "BP_TORCH_BACKEND": "fortran"}
    out = subprocess.run([sys.executable, "-c", "import bp_torch"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown or unavailable backend 'fortran'" in out.stderr


@pytest.mark.backends("python")
def test_backends_agree_with_each_other():
    if "cpp" not in bp_torch.available_backends():
        pytest.skip("the C++ extension is not built")
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, requires_grad=True)
    w = torch.randn(3, 7, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = torch.rand(2, 5, 3)
    results = {}
    for name in ("python", "cpp"):
        bp_torch.set_backend(name)
        cost = quadratic_cost(sigmoid_linear(x, w, b), y)
        results[name] = (cost, *torch.autograd.grad(cost, (x, w, b)))
    for p, c in zip(*results.values()):
        torch.testing.assert_close(p, c)


def _opcheck_cases():
    torch.manual_seed(0)
    f64 = dict(dtype=torch.float64)
    x, w, b = torch.randn(3, 4, **f64), torch.randn(2, 4, **f64), torch.randn(2, **f64)
    a = torch.sigmoid(x @ w.T + b)
    y = torch.rand(3, 2, **f64)
    ops = torch.ops.bp_torch
    cases = [
        (ops.sigmoid_linear.default, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_())),
        (ops.sigmoid_linear.default, (x.detach(), w.detach().requires_grad_(), None)),
        (ops.sigmoid_linear.default, (torch.randn(2, 5, 4, **f64), w.detach(), b.detach())),
        (ops.sigmoid_linear_backward.default, (torch.randn(3, 2, **f64), x.detach(), w.detach(), a, [True] * 3)),
        (
            ops.sigmoid_linear_backward.default,
            (torch.randn(3, 2, **f64), x.detach(), w.detach(), a, [False, True, False]),
        ),
        (ops.quadratic_cost_backward.default, (torch.tensor(1.5, **f64), a, y, "mean", [True, True])),
        (ops.quadratic_cost_backward.default, (torch.rand(3, **f64), a, y, "none", [True, False])),
    ]
    cases += [(ops.quadratic_cost.default, (a.clone().requires_grad_(), y, r)) for r in ("mean", "sum", "none")]
    return cases


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("case", range(10))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    results = opcheck(op, args)  # schema, autograd registration, fake tensor, AOT dispatch: raises on failure
    assert set(results.values()) == {"SUCCESS"}


def test_torch_compile_fullgraph_matches_eager():
    torch.manual_seed(1)
    model = torch.nn.Sequential(SigmoidLinear(6, 5), SigmoidLinear(5, 3))
    cost = bp_torch.QuadraticCost()
    reference.assert_compiled_matches_eager(model, cost, torch.randn(4, 6), torch.rand(4, 3))


@pytest.mark.parametrize("network", ["SigmoidLinear layers", "SigmoidMLP"])
def test_compiled_autograd_matches_eager(network):
    """torch.compile with compiled autograd captures the backward too: each node's saved tensors and scalars go to
    dynamo (compiled_args), which traces the node's backward. The gradients equal the eager engine's."""
    torch.manual_seed(2)
    model = (
        bp_torch.SigmoidMLP([6, 5, 3])
        if network == "SigmoidMLP"
        else torch.nn.Sequential(SigmoidLinear(6, 5), SigmoidLinear(5, 3))
    )
    cost = bp_torch.QuadraticCost()
    x, y = torch.randn(4, 6), torch.rand(4, 3)

    def train_step(x, y):
        cost(model(x), y).backward()

    train_step(x, y)
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._dynamo.config.patch(compiled_autograd=True):
        torch.compile(train_step, backend="eager")(x, y)
    assert torch._dynamo.utils.counters["compiled_autograd"]["captures"] == 1
    for p, eager in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, eager)
