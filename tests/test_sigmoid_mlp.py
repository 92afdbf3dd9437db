"""The fused SigmoidMLP: one op and one autograd node for the whole network, and sgd_step as one op.

Every test runs on both backends (see conftest.py); on the Python backend SigmoidMLP is the chain of SigmoidLinear
layers, so the comparisons there check the reference the C++ backend must equal.
"""

import copy
import re
import threading

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.library import opcheck

import bp_torch
from bp_torch import QuadraticCost, SigmoidLinear, SigmoidMLP
from bp_torch import functional as F
from bp_torch.autograd import sigmoid_mlp_sgd_step

import reference

ops = torch.ops.bp_torch if "cpp" in bp_torch.available_backends() else None
NETS = [[5, 4, 3], [7, 6, 5, 2], [6, 5, 4, 3, 2], [784, 30, 10]]
BATCHES = [(), (1,), (9,), (2, 3)]  # 1-D input, batch 1, a batch, extra batch dimensions


def make_net(sizes, bias=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = SigmoidMLP(sizes, bias=bias, dtype=dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()  # Nielsen's N(0, 1): far from sigmoid's linear middle
    return net


def reference_forward(net, x):
    """torch autograd on nn.functional.linear + torch.sigmoid, with the network's own parameters."""
    for layer in net:
        x = reference.sigmoid_linear(x, layer.weight, layer.bias)
    return x


def tolerances(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes", NETS[:3], ids=["2-layer", "3-layer", "4-layer"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("batch", BATCHES, ids=["1-D", "batch-1", "batch-9", "batch-2x3"])
def test_forward_and_gradients_equal_torch_autograd_and_a_stack_of_layers(dtype, sizes, bias, batch):
    assert_equals_torch_autograd_and_a_stack_of_layers(sizes, bias, dtype, batch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blas_sized_network_equals_torch_autograd_and_a_stack_of_layers(dtype):
    """[300, 200, 60] at batch 64: on the C++ backend the first layer's products go to BLAS, the forward splitting
    the samples between two threads and the backward running its two products side by side (with torch's two
    threads), and the second layer's run in the loops, split over the threads. In float32, sums of 200-300 terms
    of N(0, 1) weights, added in another order than torch's, differ by a few units in the last place of values
    up to about 4: hence atol 1e-5."""
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else tolerances(dtype)
    assert_equals_torch_autograd_and_a_stack_of_layers([300, 200, 60], True, dtype, (64,), tol)


def assert_equals_torch_autograd_and_a_stack_of_layers(sizes, bias, dtype, batch, tol=None):
    net = make_net(sizes, bias, dtype)
    stack = torch.nn.Sequential(*(SigmoidLinear(i, o, bias=bias, dtype=dtype) for i, o in zip(sizes, sizes[1:])))
    stack.load_state_dict(net.state_dict())
    x = torch.rand(*batch, sizes[0], dtype=dtype, requires_grad=True)
    grad_out = torch.randn(*batch, sizes[-1], dtype=dtype)
    results = []
    for model, fn in [(net, net), (stack, stack), (net, lambda x: reference_forward(net, x))]:
        out = fn(x)
        grads = torch.autograd.grad(out, [x, *model.parameters()], grad_out)
        results.append((out, *grads))
    for got in results[:2]:
        for g, want in zip(got, results[2]):
            torch.testing.assert_close(g, want, **(tol or tolerances(dtype)))


@pytest.mark.backends("cpp")
def test_the_network_is_one_autograd_node():
    net = make_net([5, 4, 3, 2])
    out = net(torch.rand(3, 5, dtype=torch.float64))
    assert "SigmoidMLPFunction" in out.grad_fn.name()  # the node of the C++ torch::autograd::Function
    # its inputs are the parameters themselves (x does not require grad): no other node in between
    assert [type(fn).__name__ for fn, _ in out.grad_fn.next_functions] == [None.__class__.__name__] + [
        "AccumulateGrad"
    ] * 6


@pytest.mark.parametrize("which", ["only x", "only weights", "first layer frozen", "only biases"])
def test_gradients_when_only_some_inputs_require_grad(which):
    net = make_net([6, 5, 4, 3])
    x = torch.rand(4, 6, dtype=torch.float64, requires_grad=which == "only x")
    for l, layer in enumerate(net):
        layer.weight.requires_grad_(which == "only weights" or (which == "first layer frozen" and l > 0))
        layer.bias.requires_grad_(which != "only weights" and which != "only x")
    wanted = [t for t in [x, *net.parameters()] if t.requires_grad]
    got = torch.autograd.grad(net(x).square().sum(), wanted)
    expected = torch.autograd.grad(reference_forward(net, x).square().sum(), wanted)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_expanded_and_transposed_upstream_gradients():
    """out.sum() hands backward a stride-0 gradient; a transposed one is strided: both must read as real memory."""
    net = make_net([6, 5, 4])
    x = torch.rand(3, 6, dtype=torch.float64, requires_grad=True)
    params = [x, *net.parameters()]
    for grad_out in [torch.ones(1, 1, dtype=torch.float64).expand(3, 4), torch.randn(4, 3, dtype=torch.float64).T]:
        got = torch.autograd.grad(net(x), params, grad_out)
        expected = torch.autograd.grad(reference_forward(net, x), params, grad_out)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e)


def test_non_contiguous_input_and_weights():
    net = make_net([6, 5, 4])
    with torch.no_grad():
        net[0].weight = torch.nn.Parameter(net[0].weight.T.contiguous().T)  # same values, transposed strides
    x = torch.rand(6, 3, dtype=torch.float64).T
    torch.testing.assert_close(net(x), reference_forward(net, x))


# ---------------------------------------------------------------------------------------------------------------
# The fused op itself (C++ backend): all activations as outputs, gradcheck, gradgradcheck, opcheck.


def op_inputs(sizes=(4, 3, 3, 2), bias=True, batch=(3,), seed=0):
    gen = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    x = torch.rand(*batch, sizes[0], generator=gen, **f64)
    weights = [torch.randn(o, i, generator=gen, **f64) for i, o in zip(sizes, sizes[1:])]
    biases = [torch.randn(o, generator=gen, **f64) for o in sizes[1:]] if bias else []
    return x, weights, biases


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("batch", [(), (3,)], ids=["1-D", "batch"])
def test_gradcheck_and_gradgradcheck_of_the_fused_op(bias, batch):
    x, weights, biases = op_inputs(bias=bias, batch=batch)
    inputs = [t.requires_grad_() for t in (x, *weights, *biases)]
    L = len(weights)

    def all_activations(x, *params):
        return tuple(ops.sigmoid_mlp(x, list(params[:L]), list(params[L:])))

    def last_activation(x, *params):
        return ops.sigmoid_mlp(x, list(params[:L]), list(params[L:]))[-1]

    for fn in (all_activations, last_activation):
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.backends("cpp")
def test_gradients_through_intermediate_activations():
    """A cost on a^1 as well as a^L: the gradient reaching a^1 directly adds to the one back-propagated to it."""
    x, weights, biases = op_inputs()
    params = [t.requires_grad_() for t in (x, *weights, *biases)]

    def cost(fn_activations):
        acts = fn_activations()
        return acts[0].square().sum() + (acts[-1] - 0.5).square().sum()

    got = torch.autograd.grad(cost(lambda: ops.sigmoid_mlp(x, weights, biases)), params)

    def reference_activations():
        acts, a = [], x
        for w, b in zip(weights, biases):
            a = reference.sigmoid_linear(a, w, b)
            acts.append(a)
        return acts

    expected = torch.autograd.grad(cost(reference_activations), params)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def _opcheck_cases():
    x, weights, biases = op_inputs()
    acts = ops.sigmoid_mlp(x, weights, biases)
    req = lambda ts: [t.detach().clone().requires_grad_() for t in ts]  # noqa: E731
    g = torch.rand_like(acts[-1])
    y = torch.rand_like(acts[-1])
    return {
        "forward, all require grad": (ops.sigmoid_mlp.default, (*req([x]), req(weights), req(biases))),
        "forward, weights only": (ops.sigmoid_mlp.default, (x, req(weights), biases)),
        "forward, no bias": (ops.sigmoid_mlp.default, (*req([x]), req(weights), [])),
        "forward, 1-D": (ops.sigmoid_mlp.default, (x[0], req(weights), biases)),
        "backward, all": (ops.sigmoid_mlp_backward.default, (g, x, weights, acts, True, True)),
        "backward, weights only": (ops.sigmoid_mlp_backward.default, (g, x, weights, acts, False, False)),
        "sgd_step": (
            ops.sigmoid_mlp_sgd_step.default,
            (x, y, [w.clone() for w in weights], [b.clone() for b in biases], 0.5),
        ),
        "sgd_step, no bias": (ops.sigmoid_mlp_sgd_step.default, (x, y, [w.clone() for w in weights], [], 3.0)),
    }


@pytest.mark.backends("cpp")
@pytest.mark.parametrize(
    "case",
    [
        "forward, all require grad",
        "forward, weights only",
        "forward, no bias",
        "forward, 1-D",
        "backward, all",
        "backward, weights only",
        "sgd_step",
        "sgd_step, no bias",
    ],
)
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    results = opcheck(op, args)  # schema (mutation included), autograd registration, fake tensor, AOT dispatch
    assert set(results.values()) == {"SUCCESS"}


def test_torch_compile_fullgraph_matches_eager():
    net = make_net([6, 5, 4, 3], dtype=torch.float32)
    cost = QuadraticCost()
    reference.assert_compiled_matches_eager(net, cost, torch.rand(4, 6), torch.rand(4, 3))


def test_vmap_grad_per_sample_gradients_equal_a_loop():
    """Under torch.func the C++ backend takes the Python path (see _backend.use_cpp): per-sample gradients work."""
    net = make_net([5, 4, 3, 2], dtype=torch.float32)
    cost = QuadraticCost()
    reference.assert_per_sample_grads_match_loop(net, cost, torch.rand(6, 5), torch.rand(6, 2))


def test_functional_call_uses_the_given_parameters():
    """SigmoidMLP reads its layers' parameters on every call, so swapped-in ones are the ones used."""
    net = make_net([5, 4, 3])
    other = make_net([5, 4, 3], seed=1)
    x = torch.rand(2, 5, dtype=torch.float64)
    torch.testing.assert_close(functional_call(net, dict(other.named_parameters()), (x,)), other(x))


# ---------------------------------------------------------------------------------------------------------------
# sgd_step

SGD_NETS = {
    "nielsen-small": ([6, 5, 4, 3], 2),
    "mnist-sized": ([784, 30, 10], 10),
    "blas-sized": ([300, 200, 60], 64),
    "batch-1": ([9, 8, 7], 1),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(SGD_NETS))
def test_sgd_step_equals_the_python_reference(case, bias, dtype):
    sizes, batch = SGD_NETS[case]
    net = make_net(sizes, bias, dtype)
    net_ref = copy.deepcopy(net)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        x = torch.rand(batch, sizes[0], dtype=dtype, generator=gen)
        y = torch.rand(batch, sizes[-1], dtype=dtype, generator=gen)
        cost = net.sgd_step(x, y, 0.5)
        with torch.no_grad():
            params = [[layer.weight for layer in net_ref], [layer.bias for layer in net_ref]]
            expected = sigmoid_mlp_sgd_step(x, y, *params, 0.5)
        torch.testing.assert_close(cost, expected, **tolerances(dtype))
        assert cost.dtype == dtype and cost.dim() == 0
    for p, p_ref in zip(net.parameters(), net_ref.parameters()):
        torch.testing.assert_close(p, p_ref, **tolerances(dtype))
    assert all(isinstance(p, torch.nn.Parameter) for p in net.parameters())


@pytest.mark.parametrize("case", ["nielsen-small", "blas-sized"])
def test_sgd_step_equals_numpy_nielsen(case):
    sizes, batch = SGD_NETS[case]
    net = make_net(sizes)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4 * batch, sizes[0], dtype=torch.float64, generator=gen)
    y = torch.rand(4 * batch, sizes[-1], dtype=torch.float64, generator=gen)
    weights = [layer.weight.detach().numpy().copy() for layer in net]
    biases = [layer.bias.detach().numpy().copy() for layer in net]
    expected_w, expected_b, expected_costs = reference.numpy_nielsen_sgd(
        weights, biases, x.numpy(), y.numpy(), 3.0, batch
    )
    costs = [
        net.sgd_step(x[start : start + batch], y[start : start + batch], 3.0).item()
        for start in range(0, len(x), batch)
    ]
    np.testing.assert_allclose(costs, expected_costs, rtol=1e-12)
    for layer, w, b in zip(net, expected_w, expected_b):
        np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=0, atol=1e-9)
        np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=0, atol=1e-9)


@pytest.mark.backends("python")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_sgd_step_backends_agree(bias):
    if "cpp" not in bp_torch.available_backends():
        pytest.skip("the C++ extension is not built")
    nets = {name: make_net([7, 6, 5, 3], bias) for name in ("python", "cpp")}
    x, y = torch.rand(5, 7, dtype=torch.float64), torch.rand(5, 3, dtype=torch.float64)
    costs = {}
    for name, net in nets.items():
        bp_torch.set_backend(name)
        costs[name] = [net.sgd_step(x, y, 2.0) for _ in range(3)]
    torch.testing.assert_close(costs["python"], costs["cpp"])
    for p, c in zip(nets["python"].parameters(), nets["cpp"].parameters()):
        torch.testing.assert_close(p, c)


def test_sgd_step_bumps_the_version_counter():
    """A graph that saved a parameter must refuse to back-propagate after sgd_step changed it."""
    net = make_net([5, 4, 3])
    x, y = torch.rand(2, 5, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    versions = [p._version for p in net.parameters()]
    out = net(x).sum()
    net.sgd_step(x, y, 0.1)
    assert all(p._version > v for p, v in zip(net.parameters(), versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_sgd_step_on_non_contiguous_parameters_and_inputs():
    net = make_net([6, 5, 4])
    net_ref = copy.deepcopy(net)
    with torch.no_grad():
        net[0].weight = torch.nn.Parameter(net[0].weight.T.contiguous().T)
    x, y = torch.rand(6, 3, dtype=torch.float64).T, torch.rand(3, 4, dtype=torch.float64)
    cost = net.sgd_step(x, y, 0.5)
    expected = net_ref.sgd_step(x.contiguous(), y, 0.5)
    torch.testing.assert_close(cost, expected)
    for p, p_ref in zip(net.parameters(), net_ref.parameters()):
        torch.testing.assert_close(p, p_ref)
    assert net[0].weight.stride() == (1, 5)  # updated where it lives


def test_functional_sgd_step_takes_none_biases():
    net, net_ref = make_net([5, 4, 3], bias=False), make_net([5, 4, 3], bias=False)
    x, y = torch.rand(2, 5, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    weights = [layer.weight for layer in net]
    F.sgd_step(x, y, weights, [None, None], 0.5)
    net_ref.sgd_step(x, y, 0.5)
    for p, p_ref in zip(net.parameters(), net_ref.parameters()):
        torch.testing.assert_close(p, p_ref)
    # A network whose layers mix biases and none: the layers without one stay without one.
    bias = torch.rand(4, dtype=torch.float64)
    w0, w1, b0 = weights[0].detach().clone(), weights[1].detach().clone(), bias.clone()
    F.sgd_step(x, y, [w0, w1], [b0, None], 0.5)
    params = [w.detach().clone().requires_grad_() for w in (weights[0], weights[1], bias)]
    a = torch.sigmoid(torch.sigmoid(x @ params[0].T + params[2]) @ params[1].T)
    (0.5 * (a - y).square().sum(-1).mean()).backward()
    for got, p in zip((w0, w1, b0), params):
        torch.testing.assert_close(got, p.detach() - 0.5 * p.grad)


def test_sgd_step_in_threads_equals_serial():
    """The C++ kernels keep their work buffers per thread: threads training different nets do not interfere."""
    shapes = [([784, 30, 10], 10), ([50, 40, 30, 20], 7), ([300, 200, 60], 64), ([9, 8], 3)]
    data = [(torch.rand(b, s[0]), torch.rand(b, s[-1])) for s, b in shapes]
    serial = [make_net(s, dtype=torch.float32, seed=i) for i, (s, _) in enumerate(shapes)]
    threaded = copy.deepcopy(serial)
    for net, (x, y) in zip(serial, data):
        for _ in range(20):
            net.sgd_step(x, y, 0.5)

    def train(net, x, y):
        for _ in range(20):
            net.sgd_step(x, y, 0.5)

    threads = [threading.Thread(target=train, args=(net, *xy)) for net, xy in zip(threaded, data)]
    backend = bp_torch.backend()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bp_torch.backend() == backend
    for a, b in zip(serial, threaded):
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q)


BAD_CALLS = {
    "chain": (
        lambda x, y, w, b: F.sgd_step(x, y, [w[0], w[0]], [b[0], b[0]], 0.1),
        ValueError,
        "sgd_step: weights[1] must have in_features=4 (the previous layer's out_features), got shape [4, 5]",
    ),
    "no-layers": (
        lambda x, y, w, b: F.sgd_step(x, y, [], [], 0.1),
        ValueError,
        "sgd_step: weights must have at least one entry (one per layer), got none",
    ),
    "bias-count": (
        lambda x, y, w, b: F.sgd_step(x, y, w, b[:1], 0.1),
        ValueError,
        "sgd_step: biases must be empty (no bias) or have one entry per layer (2), got 1",
    ),
    "bias-dtype": (
        lambda x, y, w, b: F.sgd_step(x, y, w, [b[0].float(), b[1]], 0.1),
        TypeError,
        "sigmoid_linear: input and bias must have the same dtype, got torch.float64 and torch.float32",
    ),
    "forward-chain": (
        lambda x, y, w, b: F.sigmoid_mlp(x, [w[0], w[0]], [b[0], b[0]]),
        ValueError,
        "sigmoid_mlp: weights[1] must have in_features=4 (the previous layer's out_features), got shape [4, 5]",
    ),
    "forward-input": (
        lambda x, y, w, b: F.sigmoid_mlp(x[:, :3], w, b),
        ValueError,
        "sigmoid_mlp: weights[0] must have in_features=3 (the input's last dimension), got shape [4, 5]",
    ),
    "forward-bias": (
        lambda x, y, w, b: F.sigmoid_mlp(x, w, [b[0], b[0]]),
        ValueError,
        "sigmoid_mlp: biases[1] must have shape [3] (out_features), got shape [4]",
    ),
    "forward-dtype": (
        lambda x, y, w, b: F.sigmoid_mlp(x, [w[0], w[1].float()], b),
        TypeError,
        "sigmoid_mlp: input and weights[1] must have the same dtype, got torch.float64 and torch.float32",
    ),
    "forward-0d": (
        lambda x, y, w, b: F.sigmoid_mlp(x[0, 0], w, b),
        ValueError,
        "sigmoid_mlp: input must have at least 1 dimension",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_the_same_error_on_both_backends(case):
    fn, error, message = BAD_CALLS[case]
    net = make_net([5, 4, 3])
    x, y = torch.rand(2, 5, dtype=torch.float64), torch.rand(2, 3, dtype=torch.float64)
    weights, biases = [layer.weight.detach() for layer in net], [layer.bias.detach() for layer in net]
    with pytest.raises(error, match=re.escape(message)):
        fn(x, y, weights, biases)
