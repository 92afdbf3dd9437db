"""Differential tests: the two backends are one product.

Hypothesis draws a network and its inputs (sizes, zero-width layers included; the bias pattern; modules appended to a
SigmoidMLP; hooks; parametrizations; tied weights; x or y sharing memory with a parameter; memory layouts) and misuse
values, and runs the same call on the Python and the C++ backend. They must give the same values, gradients and
updated parameters (float64: 1e-12), or raise the same exception with the same message. Where a call computes, it is
also compared with an oracle written here from plain torch: autograd on copies of the parameters and
``torch.optim.SGD``, with the gradients taken at the values before the step and summed over every use of a tensor.
"""

import asyncio
import copy
import math
import os
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

import bp_torch
from bp_torch import functional

import reference

# Each test runs both backends itself: generated once, and not at all without the C++ extension.
pytestmark = [
    pytest.mark.backends("cpp"),
    pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op"),
]

BACKENDS = ("python", "cpp")
TOL = 1e-12
seeds = st.integers(0, 2**31 - 1)


def on_each_backend(fn):
    """fn() on each backend: ("value", result) or ("raised", type, message)."""
    results = {}
    for name in BACKENDS:
        with bp_torch.use_backend(name):
            try:
                results[name] = ("value", fn())
            except Exception as err:  # noqa: BLE001 - comparing what each backend raises is the test
                results[name] = ("raised", type(err), str(err))
    return results


def tensors_of(value):
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in tensors_of(v)] if isinstance(value, (list, tuple)) else []


def assert_close(got, expected, tol=TOL):
    got, expected = tensors_of(got), tensors_of(expected)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=tol, equal_nan=True)


def assert_agree(results):
    """Both backends computed the same, or raised the same; returns the Python backend's value (None if raised)."""
    py, cpp = results["python"], results["cpp"]
    assert py[0] == cpp[0], (
        f"python: {py[1:] if py[0] == 'raised' else 'a value'}; cpp: {cpp[1:] if cpp[0] == 'raised' else 'a value'}"
    )
    if py[0] == "raised":
        assert (py[1], py[2]) == (cpp[1], cpp[2])
        return None
    assert_close(cpp[1], py[1])
    return py[1]


def assert_refused_alike(results, error=ValueError):
    assert_agree(results)
    assert results["python"][0] == "raised" and issubclass(results["python"][1], error), results["python"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# SigmoidMLP as the nn.Sequential it is: edited networks
# ----------------------------------------------------------------------------------------------------------------


class Doubled(nn.Module):
    """A parametrization: the layer computes with 2 W."""

    def forward(self, weight):
        return 2 * weight


class ScaledSigmoidLinear(bp_torch.SigmoidLinear):
    """A subclass that overrides forward."""

    def forward(self, input):
        return 0.5 * super().forward(input)


# Edits a user makes to a SigmoidMLP. The first group keeps it a plain chain of SigmoidLinear layers, which sgd_step
# must compute; the others change what the network computes, which the fused op must not ignore and sgd_step must
# refuse.
CHAIN_EDITS = ["none", "tie-first-and-last"]
OTHER_EDITS = [
    "append-linear",
    "append-identity",
    "append-subclass",
    "forward-hook",
    "forward-pre-hook",
    "full-backward-hook",
    "parametrize",
    "spectral-norm",
    "subclass-layer",
]


@dataclass
class NetSpec:
    sizes: list
    biases: list
    edit: str
    seed: int


@st.composite
def net_specs(draw, edits=CHAIN_EDITS + OTHER_EDITS):
    edit = draw(st.sampled_from(edits))
    if edit == "tie-first-and-last":  # square layers, so one tensor can serve the first and the last
        width = draw(st.integers(1, 4))
        sizes = [width] * draw(st.integers(3, 4))
    else:
        sizes = draw(st.lists(st.integers(0, 5), min_size=2, max_size=4))
        if edit in ("parametrize", "spectral-norm") and 0 in sizes[:2]:
            sizes[:2] = [max(n, 1) for n in sizes[:2]]  # spectral_norm cannot normalise an empty matrix
    biases = draw(st.lists(st.booleans(), min_size=len(sizes) - 1, max_size=len(sizes) - 1))
    return NetSpec(sizes, biases, edit, draw(seeds))


def build(spec, dtype=torch.float64):
    """The same network, parameter for parameter, each time it is called."""
    torch.manual_seed(spec.seed)
    net = bp_torch.SigmoidMLP(spec.sizes, dtype=dtype)
    for l, has_bias in enumerate(spec.biases):
        if not has_bias:
            net[l] = bp_torch.SigmoidLinear(spec.sizes[l], spec.sizes[l + 1], bias=False, dtype=dtype)
    out = spec.sizes[-1]
    edit = spec.edit
    if edit == "tie-first-and-last":
        net[len(net) - 1].weight = net[0].weight
    elif edit == "append-linear":
        net.append(nn.Linear(out, 3, dtype=dtype))
    elif edit == "append-identity":
        net.append(nn.Identity())
    elif edit == "append-subclass":
        net.append(ScaledSigmoidLinear(out, 2, dtype=dtype))
    elif edit == "subclass-layer":
        net[0] = ScaledSigmoidLinear(spec.sizes[0], spec.sizes[1], dtype=dtype)
    elif edit == "forward-hook":
        net[0].register_forward_hook(lambda module, args, output: 3 * output - 1)
    elif edit == "forward-pre-hook":
        net[0].register_forward_pre_hook(lambda module, args: (args[0] * 2 + 1,))
    elif edit == "full-backward-hook":
        net[0].register_full_backward_hook(
            lambda module, grad_input, grad_output: tuple(None if g is None else 5 * g for g in grad_input)
        )
    elif edit == "parametrize":
        parametrize.register_parametrization(net[0], "weight", Doubled())
    elif edit == "spectral-norm":
        nn.utils.spectral_norm(net[0])
    return net


def data(spec, n, seed, dtype=torch.float64, layout="contiguous"):
    g = gen(seed)
    x = torch.randn(n, spec.sizes[0], generator=g, dtype=dtype)
    if layout == "transposed":
        x = torch.randn(spec.sizes[0], n, generator=g, dtype=dtype).T
    elif layout == "sliced":
        x = torch.randn(2 * n, 2 * spec.sizes[0], generator=g, dtype=dtype)[::2, ::2]
    width = {"append-linear": 3, "append-subclass": 2}.get(spec.edit, spec.sizes[-1])  # the appended module's
    return x, torch.rand(n, width, generator=g, dtype=dtype)


def oracle_forward(net, x):
    """The network in plain torch, module by module, for networks without hooks or subclasses."""
    a = x
    for layer in net:
        a = (
            torch.sigmoid(TF.linear(a, layer.weight, layer.bias))
            if isinstance(layer, bp_torch.SigmoidLinear)
            else layer(a)
        )
    return a


@given(
    spec=net_specs(),
    batch=st.lists(st.integers(0, 4), min_size=1, max_size=2).map(tuple),
    layout=st.sampled_from(["contiguous", "transposed", "sliced"]),
    seed=seeds,
)
def test_module_forward_and_gradients_agree(spec, batch, layout, seed):
    def run():
        net = build(spec)
        x, y = data(spec, math.prod(batch), seed, layout=layout)
        x = x.reshape(*batch, x.shape[-1]).requires_grad_()
        y = y.reshape(*batch, y.shape[-1])
        out = net(x)
        cost = 0.5 * (out - y).square().sum()
        grads = torch.autograd.grad(cost, [x, *net.parameters()], allow_unused=True, materialize_grads=True)
        return [out, *grads]

    result = assert_agree(on_each_backend(run))
    if spec.edit in CHAIN_EDITS + ["append-linear", "append-identity", "parametrize"]:
        net = build(spec)
        x, y = data(spec, math.prod(batch), seed, layout=layout)
        x = x.reshape(*batch, x.shape[-1]).requires_grad_()
        out = oracle_forward(net, x)
        cost = 0.5 * (out - y.reshape(*batch, y.shape[-1])).square().sum()
        grads = torch.autograd.grad(cost, [x, *net.parameters()], allow_unused=True, materialize_grads=True)
        assert_close(result, [out, *grads], tol=1e-10)


def chunks(order, batch_size):
    """The mini-batches' indices, in order (none for an empty epoch)."""
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def oracle_sgd(net, batches, lr, cost="quadratic", weight_decay=0.0):
    """autograd + torch.optim.SGD on the network as torch runs it (oracle_forward), weight_decay on the weights'
    group and none on the biases' (3.4): the steps sgd_step and sgd_epoch must take, one per mini-batch (x, y).
    Returns each mini-batch's cost before its step, as a list."""
    params = list(net.parameters())
    weights, biases = [p for p in params if p.dim() == 2], [p for p in params if p.dim() == 1]
    forward = lambda x: oracle_forward(net, x)  # noqa: E731
    return reference.optim_sgd_steps(forward, weights, biases, batches, lr, weight_decay, reference.COSTS[cost])


def module_update_on_each_backend(spec, n, seed, update):
    """update(net, x, y) on a fresh network and data of ``spec``, on each backend, with the parameters after it:
    on_each_backend's results. A network that is not a plain chain must be refused alike, with a message naming the
    layer; that gives None."""

    def run():
        net = build(spec)
        x, y = data(spec, n, seed)
        value = update(net, x, y)
        return [value, *[p.detach().clone() for p in net.parameters()]]

    results = on_each_backend(run)
    if spec.edit not in CHAIN_EDITS:
        assert_refused_alike(results)
        assert "layer" in results["python"][2]
        return None
    return results


@given(spec=net_specs(), n=st.integers(0, 5), lr=st.sampled_from([0.0, 0.5, 3.0]), seed=seeds)
def test_module_sgd_step_is_autograd_and_optim_sgd_or_refused(spec, n, lr, seed):
    results = module_update_on_each_backend(spec, n, seed, lambda net, x, y: net.sgd_step(x, y, lr))
    if results is None:
        return
    result = assert_agree(results)
    assert result is not None, results["python"]
    net = build(spec)
    x, y = data(spec, n, seed)
    (cost,) = oracle_sgd(net, [(x, y)], lr)
    assert_close(result, [cost, *[p.detach() for p in net.parameters()]], tol=1e-10)


@given(spec=net_specs(), n=st.integers(0, 7), batch_size=st.integers(1, 8), shuffle=st.booleans(), seed=seeds)
def test_module_sgd_epoch_is_a_loop_of_oracle_steps_or_refused(spec, n, batch_size, shuffle, seed):
    results = module_update_on_each_backend(
        spec, n, seed, lambda net, x, y: net.sgd_epoch(x, y, 0.5, batch_size, shuffle=shuffle, generator=gen(seed))
    )
    if results is None:
        return
    result = assert_agree(results)
    net = build(spec)
    x, y = data(spec, n, seed)
    order = torch.randperm(n, generator=gen(seed)) if shuffle else torch.arange(n)
    costs = oracle_sgd(net, [(x[index], y[index]) for index in chunks(order, batch_size)], 0.5)
    expected_costs = torch.stack(costs) if costs else x.new_empty(0)
    assert_close(result, [expected_costs, *[p.detach() for p in net.parameters()]], tol=1e-10)


def test_the_fused_op_serves_exactly_the_plain_chains():
    """The C++ forward takes one op for the whole network only where that is exact, and the chain otherwise."""
    for edit in CHAIN_EDITS + OTHER_EDITS:
        net = build(NetSpec([3, 4, 2], [True, False], edit, 0))
        fused = net._fused_parameters() is not None
        assert fused == (edit in CHAIN_EDITS), edit
    handle = nn.modules.module.register_module_forward_hook(lambda module, args, output: None)
    try:
        assert build(NetSpec([3, 4, 2], [True, True], "none", 0))._fused_parameters() is None
    finally:
        handle.remove()


def test_a_forward_hook_on_a_layer_runs_on_every_backend():
    for name in BACKENDS:
        calls = []
        net = bp_torch.SigmoidMLP([3, 4, 2])
        net[1].register_forward_hook(lambda module, args, output: calls.append(output.shape))
        with bp_torch.use_backend(name):
            net(torch.rand(5, 3))
        assert calls == [torch.Size([5, 2])], name


# ----------------------------------------------------------------------------------------------------------------
# The functional sgd_step and sgd_epoch: tied weights, aliasing, mixed biases
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """How the tensors of a step are made from a few leaf tensors, so that they share memory as drawn.

    ``leaves``: shapes; ``weights[l] = (leaf, transposed)``; ``biases[l]``: a leaf or None; ``x`` and ``y``:
    ("own", shape) or ("view", leaf, shape), a view of a leaf's memory reshaped.
    """

    leaves: list
    weights: list
    biases: list
    x: tuple
    y: tuple
    seed: int


@st.composite
def recipes(draw):
    kind = draw(
        st.sampled_from(
            ["independent", "one-tensor", "autoencoder", "x-is-a-weight", "x-views-a-bias", "y-views-a-bias", "y-is-x"]
        )
    )
    n = draw(st.integers(1, 4))
    if kind == "one-tensor":  # one square weight in every layer; biases shared or not
        width, depth = draw(st.integers(1, 4)), draw(st.integers(2, 3))
        leaves = [(width, width), (width,), (width,)]
        weights = [(0, False)] * depth
        biases = [draw(st.sampled_from([None, 1, 2])) for _ in range(depth)]
        sizes = [width] * (depth + 1)
    elif kind == "autoencoder":  # W and W.T: a tied autoencoder
        k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        leaves = [(m, k), (m,), (k,)]
        weights = [(0, False), (0, True)]
        biases = [draw(st.sampled_from([None, 1])), draw(st.sampled_from([None, 2]))]
        sizes = [k, m, k]
    else:
        sizes = draw(st.lists(st.integers(0 if kind == "independent" else 1, 4), min_size=2, max_size=4))
        if kind == "x-views-a-bias":  # the first bias holds n * sizes[0] numbers: x is a view of it
            sizes[1] = n * sizes[0]
        if kind == "y-is-x":
            sizes[-1] = sizes[0]
        layers = len(sizes) - 1
        leaves = [(sizes[l + 1], sizes[l]) for l in range(layers)] + [(sizes[l + 1],) for l in range(layers)]
        weights = [(l, False) for l in range(layers)]
        biases = [layers + l if draw(st.booleans()) else None for l in range(layers)]
        if kind == "x-views-a-bias":
            biases[0] = layers
        if kind == "y-views-a-bias":
            biases[-1] = 2 * layers - 1
        if kind == "x-is-a-weight":
            n = sizes[1]
    x, y = ("own", (n, sizes[0])), ("own", (n, sizes[-1]))
    if kind == "x-is-a-weight":
        x = ("view", 0, (n, sizes[0]))
    elif kind == "x-views-a-bias":
        x = ("view", biases[0], (n, sizes[0]))
    elif kind == "y-views-a-bias":
        x, y = ("own", (1, sizes[0])), ("view", biases[-1], (1, sizes[-1]))
    elif kind == "y-is-x":  # an autoencoder's target is its input: read twice, never written
        y = ("x",)
    return Recipe(leaves, weights, biases, x, y, draw(seeds))


def make_tensors(recipe, dtype=torch.float64):
    """leaves, weights, biases, x, y, sharing memory as the recipe says."""
    g = gen(recipe.seed)
    leaves = [torch.randn(shape, generator=g, dtype=dtype) for shape in recipe.leaves]
    weights = [leaves[i].T if transposed else leaves[i] for i, transposed in recipe.weights]
    biases = [None if i is None else leaves[i] for i in recipe.biases]

    def data_tensor(spec, rand):
        if spec[0] == "view":
            return leaves[spec[1]].view(spec[2])
        return rand(spec[1], generator=g, dtype=dtype)

    x = data_tensor(recipe.x, torch.randn)
    y = x if recipe.y == ("x",) else data_tensor(recipe.y, torch.rand)
    return leaves, weights, biases, x, y


def oracle_step(recipe, leaves, xb, yb, lr):
    """autograd on copies of the leaves, every use's gradient summed, then W <- W - lr dC/dW on each leaf."""
    params = [leaf.detach().clone().requires_grad_() for leaf in leaves]
    a = xb.detach().clone()
    for (i, transposed), b in zip(recipe.weights, recipe.biases):
        a = torch.sigmoid(TF.linear(a, params[i].T if transposed else params[i], None if b is None else params[b]))
    cost = 0.5 * (a - yb.detach().clone()).square().sum(-1).mean()
    cost.backward()
    with torch.no_grad():
        for leaf, p in zip(leaves, params):
            if p.grad is not None:
                leaf.sub_(lr * p.grad)
    return cost.detach()


@given(recipe=recipes(), lr=st.sampled_from([0.0, 0.5, 3.0]))
def test_functional_sgd_step_with_shared_memory_is_the_oracle(recipe, lr):
    def run():
        leaves, weights, biases, x, y = make_tensors(recipe)
        cost = functional.sgd_step(x, y, weights, biases, lr)
        return [cost, *leaves]

    result = assert_agree(on_each_backend(run))
    assert result is not None
    leaves, _, _, x, y = make_tensors(recipe)
    cost = oracle_step(recipe, leaves, x, y, lr)
    assert_close(result, [cost, *leaves], tol=1e-10)


@given(recipe=recipes(), batch_size=st.integers(1, 5), shuffle=st.booleans())
def test_functional_sgd_epoch_with_shared_memory_is_a_loop_of_oracle_steps(recipe, batch_size, shuffle):
    n = recipe.x[-1][0]

    def order():
        return torch.randperm(n, generator=gen(recipe.seed)) if shuffle else None

    def run():
        leaves, weights, biases, x, y = make_tensors(recipe)
        costs = functional.sgd_epoch(x, y, weights, biases, 0.5, batch_size, order())
        return [costs, *leaves]

    result = assert_agree(on_each_backend(run))
    leaves, _, _, x, y = make_tensors(recipe)
    perm = order()
    # Each mini-batch is read when its step begins: x may be a view of a parameter that earlier steps changed.
    costs = [
        oracle_step(recipe, leaves, x[index], y[index], 0.5)
        for index in chunks(torch.arange(n) if perm is None else perm, batch_size)
    ]
    assert_close(result, [torch.stack(costs), *leaves], tol=1e-10)


def test_an_empty_epoch_changes_nothing_and_leaves_graphs_usable():
    for name in BACKENDS:
        net = bp_torch.SigmoidMLP([3, 2])
        out = net(torch.rand(4, 3))  # a graph that saved the weights
        with bp_torch.use_backend(name):
            costs = net.sgd_epoch(torch.empty(0, 3), torch.empty(0, 2), 0.5, 4)
        assert costs.shape == (0,)
        out.sum().backward()  # raises if a version counter moved


# ----------------------------------------------------------------------------------------------------------------
# Misuse: the same exception, with the same message, on both backends
# ----------------------------------------------------------------------------------------------------------------


def small_net():
    g = gen(0)
    return (
        [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)],
        [torch.randn(3, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)],
        torch.rand(5, 4, generator=g, dtype=torch.float64),
        torch.rand(5, 2, generator=g, dtype=torch.float64),
    )


bad_numbers = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.complex_numbers(max_magnitude=10),
    st.integers(-3, 3),
    st.floats(-10, 10),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.lists(st.floats(0, 1), max_size=2),
    st.sampled_from(
        [
            torch.tensor(0.5),
            torch.tensor([0.5]),
            torch.tensor([0.1, 0.2]),
            torch.tensor(1j),
            torch.tensor(True),
            torch.tensor(2),
            torch.empty(0),
        ]
    ),
)


@given(lr=bad_numbers)
def test_every_learning_rate_is_taken_or_refused_alike(lr):
    def run():
        weights, biases, x, y = small_net()
        return [functional.sgd_step(x, y, weights, biases, lr), *weights, *biases]

    results = on_each_backend(run)
    assert_agree(results)
    if results["python"][0] == "raised":
        assert results["python"][1] in (TypeError, ValueError) and "lr" in results["python"][2]


@given(
    batch_size=st.one_of(st.none(), st.booleans(), st.floats(-2, 2), st.integers(-2, 9), st.integers(2**60, 2**80)),
    perm=st.one_of(
        st.none(),
        st.lists(st.integers(-1, 5), max_size=6),
        st.lists(st.integers(-1, 5), max_size=6).map(torch.tensor),
        st.permutations(range(5)).map(lambda p: torch.tensor(p, dtype=torch.int32)),
        st.permutations(range(5)).map(torch.tensor),
    ),
)
def test_every_batch_size_and_perm_are_taken_or_refused_alike(batch_size, perm):
    def run():
        weights, biases, x, y = small_net()
        return [functional.sgd_epoch(x, y, weights, biases, 0.5, batch_size, perm), *weights, *biases]

    results = on_each_backend(run)
    assert_agree(results)
    if results["python"][0] == "raised":
        assert results["python"][1] in (TypeError, ValueError)


PARAMETER_MISUSES = {
    "weights-one-tensor": lambda w, b: (w[0], b),
    "weights-generator": lambda w, b: ((t for t in w), b),
    "weights-none-entry": lambda w, b: ([w[0], None], b),
    "weights-empty": lambda w, b: ([], []),
    "weights-int": lambda w, b: ([w[0].long(), w[1]], b),
    "weights-float32": lambda w, b: ([w[0], w[1].float()], b),
    "weights-3d": lambda w, b: ([w[0][None], w[1]], b),
    "weights-chain": lambda w, b: ([w[0], w[1].T], b),
    "weights-expanded": lambda w, b: ([w[0][:1].expand(3, 4), w[1]], b),
    "biases-none": lambda w, b: (w, None),
    "biases-one-tensor": lambda w, b: (w, b[0]),
    "biases-short": lambda w, b: (w, b[:1]),
    "biases-one-none": lambda w, b: (w, [None, b[1]]),
    "biases-all-none": lambda w, b: (w, [None, None]),
    "biases-shape": lambda w, b: (w, [b[0][:2], b[1]]),
    "biases-dtype": lambda w, b: (w, [b[0].float(), b[1]]),
    "biases-expanded": lambda w, b: (w, [b[0][:1].expand(3), b[1]]),
}


@pytest.mark.parametrize("misuse", PARAMETER_MISUSES.values(), ids=PARAMETER_MISUSES.keys())
@pytest.mark.parametrize("op", ["sgd_step", "sgd_epoch", "sigmoid_mlp"])
def test_parameter_lists_are_taken_or_refused_alike(op, misuse):
    def run():
        weights, biases, x, y = small_net()
        weights, biases = misuse(weights, biases)
        if op == "sigmoid_mlp":
            return functional.sigmoid_mlp(x, weights, biases)
        if op == "sgd_step":
            return [functional.sgd_step(x, y, weights, biases, 0.5), *small_net()[0]]
        return functional.sgd_epoch(x, y, weights, biases, 0.5, 2)

    assert_agree(on_each_backend(run))


TENSOR_MISUSES = {
    "linear-weight-none": lambda: functional.sigmoid_linear(torch.rand(2, 3), None),
    "linear-input-list": lambda: functional.sigmoid_linear([[0.0, 1.0, 2.0]], torch.rand(2, 3)),
    "linear-bias-number": lambda: functional.sigmoid_linear(torch.rand(2, 3), torch.rand(2, 3), 1.0),
    "cost-target-list": lambda: functional.quadratic_cost(torch.rand(2, 3), [[0.0] * 3] * 2),
    "cost-reduction-none": lambda: functional.quadratic_cost(torch.rand(2, 3), torch.rand(2, 3), None),
    "step-x-none": lambda: functional.sgd_step(None, torch.rand(2, 2), *small_net()[:2], 0.5),
    "step-y-numpy": lambda: functional.sgd_step(small_net()[2], small_net()[3].numpy(), *small_net()[:2], 0.5),
}


@pytest.mark.parametrize("call", TENSOR_MISUSES.values(), ids=TENSOR_MISUSES.keys())
def test_arguments_that_are_not_tensors_are_refused_alike(call):
    results = on_each_backend(call)
    assert_refused_alike(results, (TypeError, ValueError))


# ----------------------------------------------------------------------------------------------------------------
# vmap over the backward, small thread stacks, the scoped backend choice
# ----------------------------------------------------------------------------------------------------------------


@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=4), n=st.integers(1, 3), seed=seeds)
def test_batched_gradients_agree_with_plain_torch(sizes, n, seed):
    """torch.autograd.grad(is_grads_batched=True) and jacobian(vectorize=True) run the backward under vmap."""

    def run():
        torch.manual_seed(seed)
        net = bp_torch.SigmoidMLP(sizes, dtype=torch.float64)
        x = torch.rand(n, sizes[0], generator=gen(seed), dtype=torch.float64)
        out = net(x)
        basis = torch.eye(out.numel(), dtype=torch.float64).reshape(-1, *out.shape)
        per_output = torch.autograd.grad(out, list(net.parameters()), basis, is_grads_batched=True)
        jacobian = torch.autograd.functional.jacobian(net[0], x, vectorize=True)
        return [*per_output, jacobian]

    result = assert_agree(on_each_backend(run))
    torch.manual_seed(seed)
    net = bp_torch.SigmoidMLP(sizes, dtype=torch.float64)
    x = torch.rand(n, sizes[0], generator=gen(seed), dtype=torch.float64)
    params = list(net.parameters())
    out = oracle_forward(net, x)
    rows = [torch.autograd.grad(out.reshape(-1)[i], params, retain_graph=True) for i in range(out.numel())]
    expected = [torch.stack([row[p] for row in rows]) for p in range(len(params))]
    jacobian = torch.autograd.functional.jacobian(lambda v: torch.sigmoid(TF.linear(v, net[0].weight, net[0].bias)), x)
    assert_close(result, [*expected, jacobian], tol=1e-10)


def test_a_thread_with_a_small_stack_trains_on_every_backend():
    """Plain torch runs on a 36 KiB thread stack; so must bp_torch (its work buffers are on the heap). In a
    subprocess: a stack overflow would take the test process with it. Under AddressSanitizer (scripts/asan_test.sh)
    every frame carries redzones several times its size, so the stack is scaled by the same factor there."""
    stack_kib = 36 * (8 if "libasan" in os.environ.get("LD_PRELOAD", "") else 1)
    code = textwrap.dedent(f"""
        import threading, torch, bp_torch
        results = []
        def work():
            for name in bp_torch.available_backends():
                with bp_torch.use_backend(name):
                    torch.manual_seed(0)
                    net = bp_torch.SigmoidMLP([784, 100, 10])
                    x, y = torch.rand(10, 784), torch.rand(10, 10)
                    net(x).sum().backward()
                    net.sgd_step(x, y, 0.5)
                    costs = net.sgd_epoch(torch.rand(2000, 784), torch.rand(2000, 10), 0.5, 10)
                    results.append((name, float(costs.sum())))
        threading.stack_size({stack_kib} * 1024)
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        print(results)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    results = eval(out.stdout)  # noqa: S307 - our own subprocess's list of (name, float)
    assert [name for name, _ in results] == list(bp_torch.available_backends())
    assert math.isclose(results[0][1], results[-1][1], rel_tol=1e-4)


def grad_fn_name():
    """Which backend a layer ran on, read off the autograd node it built."""
    layer = bp_torch.SigmoidLinear(3, 2)
    return type(layer(torch.rand(1, 3)).grad_fn).__name__


def test_use_backend_is_scoped_to_its_block_and_restores_on_error():
    cpp_node = grad_fn_name()
    with bp_torch.use_backend("python"):
        python_node = grad_fn_name()
        with bp_torch.use_backend("cpp"):
            assert bp_torch.backend() == "cpp" and grad_fn_name() == cpp_node
        assert bp_torch.backend() == "python"
    assert python_node != cpp_node
    with pytest.raises(ZeroDivisionError), bp_torch.use_backend("python"):
        raise ZeroDivisionError
    assert bp_torch.backend() == "cpp" and grad_fn_name() == cpp_node
    with pytest.raises(ValueError, match="unknown or unavailable backend 'fortran'"), bp_torch.use_backend("fortran"):
        pass


def test_one_threads_choice_does_not_leak_into_another():
    """A worker inside use_backend("python") while the main thread runs layers: the main thread stays on C++."""
    cpp_node = grad_fn_name()
    entered, release = threading.Event(), threading.Event()
    seen = {}

    def worker():
        with bp_torch.use_backend("python"):
            seen["worker"] = grad_fn_name()
            entered.set()
            release.wait(10)
            seen["worker, later"] = grad_fn_name()

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    seen["main"] = [grad_fn_name() for _ in range(5)]
    release.set()
    thread.join()
    assert seen["main"] == [cpp_node] * 5
    assert seen["worker"] == seen["worker, later"] != cpp_node


def test_asyncio_tasks_keep_their_own_choice():
    async def layer_on(name, started, other_started):
        with bp_torch.use_backend(name):
            started.set()
            await other_started.wait()  # both blocks are open at once
            return bp_torch.backend(), grad_fn_name()

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(layer_on("python", a, b), layer_on("cpp", b, a))

    (python_name, python_node), (cpp_name, cpp_node) = asyncio.run(main())
    assert (python_name, cpp_name) == ("python", "cpp") and python_node != cpp_node


def test_set_backend_stays_the_default_outside_blocks():
    bp_torch.set_backend("python")
    try:
        with bp_torch.use_backend("cpp"):
            assert bp_torch.backend() == "cpp"
        assert bp_torch.backend() == "python"
        seen = []
        thread = threading.Thread(target=lambda: seen.append(bp_torch.backend()))
        thread.start()
        thread.join()
        assert seen == ["python"]  # the process-wide default, in every thread
    finally:
        bp_torch.set_backend("cpp")


def test_deepcopy_of_an_edited_network_still_agrees():
    """copy.deepcopy keeps hooks and parametrizations: the copy falls back exactly as the original does."""
    net = build(NetSpec([3, 4, 2], [True, True], "forward-hook", 1))
    twin = copy.deepcopy(net)
    x = torch.rand(5, 3, dtype=torch.float64)
    results = on_each_backend(lambda: [net(x), twin(x)])
    value = assert_agree(results)
    assert_close(value[0], value[1])


# ----------------------------------------------------------------------------------------------------------------
# The next chapter: sgd_step and sgd_epoch with cost= (3.3) and weight_decay= (3.4), bad values included
# ----------------------------------------------------------------------------------------------------------------


def chapter_three_misuse(cost, weight_decay, y):
    """Whether these arguments must be refused: an unknown cost, a negative or NaN weight decay, or a cross-entropy
    target outside [0, 1]."""
    return (
        cost not in ("quadratic", "cross_entropy")
        or not weight_decay >= 0
        or (cost == "cross_entropy" and bool(((y < 0) | (y > 1)).any()))
    )


chapter_three_costs = st.sampled_from(["quadratic", "cross_entropy", "cross_entropy", "mse"])
weight_decays = st.sampled_from([0.0, 0.01, 0.5, 0.5, -0.1, math.nan])


@given(
    spec=net_specs(),
    n=st.integers(0, 5),
    cost=chapter_three_costs,
    weight_decay=weight_decays,
    y_scale=st.sampled_from([1.0, 1.0, 2.0]),
    seed=seeds,
)
def test_module_sgd_step_with_cost_and_weight_decay_agrees_with_the_oracle(spec, n, cost, weight_decay, y_scale, seed):
    results = module_update_on_each_backend(
        spec, n, seed, lambda net, x, y: net.sgd_step(x, y_scale * y, 0.5, cost=cost, weight_decay=weight_decay)
    )
    if results is None:
        return
    result = assert_agree(results)
    net = build(spec)
    x, y = data(spec, n, seed)
    if chapter_three_misuse(cost, weight_decay, y_scale * y):
        assert result is None and results["python"][1] is ValueError, results["python"]
        return
    (expected,) = oracle_sgd(net, [(x, y_scale * y)], 0.5, cost, weight_decay)
    assert_close(result, [expected, *[p.detach() for p in net.parameters()]], tol=1e-10)


@given(
    spec=net_specs(),
    n=st.integers(0, 7),
    batch_size=st.integers(1, 8),
    cost=chapter_three_costs,
    weight_decay=weight_decays,
    seed=seeds,
)
def test_module_sgd_epoch_with_cost_and_weight_decay_is_a_loop_of_oracle_steps(
    spec, n, batch_size, cost, weight_decay, seed
):
    results = module_update_on_each_backend(
        spec,
        n,
        seed,
        lambda net, x, y: net.sgd_epoch(
            x, y, 0.5, batch_size, generator=gen(seed), cost=cost, weight_decay=weight_decay
        ),
    )
    if results is None:
        return
    result = assert_agree(results)
    net = build(spec)
    x, y = data(spec, n, seed)
    if chapter_three_misuse(cost, weight_decay, y):
        assert result is None and results["python"][1] is ValueError, results["python"]
        return
    order = torch.randperm(n, generator=gen(seed))
    costs = oracle_sgd(net, [(x[index], y[index]) for index in chunks(order, batch_size)], 0.5, cost, weight_decay)
    expected_costs = torch.stack(costs) if costs else x.new_empty(0)
    assert_close(result, [expected_costs, *[p.detach() for p in net.parameters()]], tol=1e-10)
