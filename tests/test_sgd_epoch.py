"""sgd_epoch: a whole epoch of Nielsen's SGD in one call (issue 14), on every backend.

It must be exactly a loop of sgd_step over the same mini-batches (the C++ op runs the same kernel on the same rows,
the Python backend the same torch ops), and it must equal the numpy re-statement of Nielsen's algorithm.
"""

import copy
import re
import threading

import numpy as np
import pytest
import torch
from torch.library import opcheck

import bp_torch
from bp_torch import SigmoidMLP
from bp_torch import functional as F

import reference

ops = torch.ops.bp_torch if "cpp" in bp_torch.available_backends() else None

# (sizes, samples, batch size): partial last mini-batches, batch 1, one batch larger than the data, and a network
# whose products take BLAS on the C++ backend.
CASES = {
    "small-partial": ([6, 5, 4, 3], 23, 5),
    "nielsen-partial": ([784, 30, 10], 95, 10),
    "batch-1": ([7, 6, 2], 9, 1),
    "one-batch": ([5, 4, 3], 7, 50),
    "blas-sized": ([300, 200, 60], 130, 64),
}


def make_net(sizes, bias=True, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = SigmoidMLP(sizes, bias=bias, dtype=dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()  # Nielsen's N(0, 1)
    return net


def data(sizes, n, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, sizes[0], dtype=dtype, generator=gen), torch.rand(n, sizes[-1], dtype=dtype, generator=gen))


def step_loop(net, x, y, lr, batch_size, perm):
    """The reference: one sgd_step per mini-batch, in perm's order, as a Python loop would take them."""
    order = torch.arange(len(x)) if perm is None else perm
    return torch.stack([net.sgd_step(x[index], y[index], lr) for index in order.split(batch_size)])


def assert_same_parameters(net, other):
    for p, q in zip(net.parameters(), other.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("shuffled", [True, False], ids=["perm", "in-order"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(CASES))
def test_sgd_epoch_is_exactly_a_loop_of_sgd_step(case, bias, dtype, shuffled):
    sizes, n, batch_size = CASES[case]
    net = make_net(sizes, bias, dtype)
    net_ref = copy.deepcopy(net)
    x, y = data(sizes, n, dtype)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5)) if shuffled else None
    weights, biases = [layer.weight for layer in net], [layer.bias for layer in net]
    costs = F.sgd_epoch(x, y, weights, biases, 3.0, batch_size, perm)
    expected = step_loop(net_ref, x, y, 3.0, batch_size, perm)
    assert costs.shape == ((n + batch_size - 1) // batch_size,) and costs.dtype == dtype
    assert torch.equal(costs, expected)
    assert_same_parameters(net, net_ref)


@pytest.mark.parametrize("case", ["small-partial", "nielsen-partial", "blas-sized"])
def test_sgd_epoch_equals_numpy_nielsen(case):
    sizes, n, batch_size = CASES[case]
    net = make_net(sizes)
    x, y = data(sizes, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(6))
    weights = [layer.weight.detach().numpy().copy() for layer in net]
    biases = [layer.bias.detach().numpy().copy() for layer in net]
    expected_w, expected_b, expected_costs = reference.numpy_nielsen_sgd(
        weights, biases, x[perm].numpy(), y[perm].numpy(), 3.0, batch_size
    )
    costs = F.sgd_epoch(x, y, [layer.weight for layer in net], [layer.bias for layer in net], 3.0, batch_size, perm)
    np.testing.assert_allclose(costs.numpy(), expected_costs, rtol=1e-12)
    for layer, w, b in zip(net, expected_w, expected_b):
        np.testing.assert_allclose(layer.weight.detach().numpy(), w, rtol=0, atol=1e-9)
        np.testing.assert_allclose(layer.bias.detach().numpy(), b, rtol=0, atol=1e-9)


@pytest.mark.backends("python")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sgd_epoch_backends_agree(dtype):
    if "cpp" not in bp_torch.available_backends():
        pytest.skip("the C++ extension is not built")
    sizes, n, batch_size = CASES["nielsen-partial"]
    x, y = data(sizes, n, dtype)
    nets, costs = {}, {}
    for name in ("python", "cpp"):
        bp_torch.set_backend(name)
        nets[name] = make_net(sizes, dtype=dtype)
        costs[name] = nets[name].sgd_epoch(x, y, 3.0, batch_size, generator=torch.Generator().manual_seed(7))
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(costs["python"], costs["cpp"], **tol)
    for p, q in zip(nets["python"].parameters(), nets["cpp"].parameters()):
        torch.testing.assert_close(p, q, **tol)


def test_module_sgd_epoch_shuffles_with_its_generator():
    sizes, n, batch_size = CASES["small-partial"]
    x, y = data(sizes, n)
    net, net_ref, net_in_order = make_net(sizes), make_net(sizes), make_net(sizes)
    costs = net.sgd_epoch(x, y, 3.0, batch_size, generator=torch.Generator().manual_seed(8))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(perm, torch.arange(n))
    assert torch.equal(costs, step_loop(net_ref, x, y, 3.0, batch_size, perm))
    assert_same_parameters(net, net_ref)
    # shuffle=False takes the samples in order, as perm=None does
    in_order = net_in_order.sgd_epoch(x, y, 3.0, batch_size, shuffle=False)
    assert torch.equal(in_order, step_loop(make_net(sizes), x, y, 3.0, batch_size, None))


def test_sgd_epoch_trains_the_network():
    """Many epochs of a learnable task lower the cost: the costs returned are those of real updates."""
    torch.manual_seed(0)
    x = torch.rand(200, 4, dtype=torch.float64)
    y = torch.nn.functional.one_hot((x[:, 0] > x[:, 1]).long(), 2).double()
    net = make_net([4, 8, 2])
    first = net.sgd_epoch(x, y, 3.0, 10, generator=torch.Generator().manual_seed(0))
    for _ in range(40):
        last = net.sgd_epoch(x, y, 3.0, 10, generator=torch.Generator().manual_seed(0))
    assert last.mean() < 0.3 * first.mean()
    accuracy = (net(x).argmax(1) == y.argmax(1)).double().mean()
    assert accuracy > 0.9


def test_sgd_epoch_on_non_contiguous_data():
    """x transposed, x and y with rows strided (every other column of a wider tensor), and a strided perm."""
    sizes, n, batch_size = [6, 5, 4], 11, 3
    x, y = data(sizes, n)
    wide_x = torch.zeros(n, 2 * sizes[0], dtype=torch.float64)
    wide_x[:, ::2] = x
    wide_y = torch.zeros(n, sizes[-1] + 3, dtype=torch.float64)
    wide_y[:, : sizes[-1]] = y
    perm_storage = torch.zeros(2 * n, dtype=torch.int64)
    perm_storage[::2] = torch.randperm(n, generator=torch.Generator().manual_seed(9))
    perm = perm_storage[::2]
    expected_net = make_net(sizes)
    expected = step_loop(expected_net, x, y, 0.5, batch_size, perm.contiguous())
    for x_view, y_view in [(x.T.contiguous().T, y), (wide_x[:, ::2], wide_y[:, : sizes[-1]])]:
        assert not x_view.is_contiguous()
        net = make_net(sizes)
        costs = F.sgd_epoch(
            x_view, y_view, [layer.weight for layer in net], [layer.bias for layer in net], 0.5, batch_size, perm
        )
        assert torch.equal(costs, expected)
        assert_same_parameters(net, expected_net)


@pytest.mark.parametrize("batch_size", [2**40, 2**63 - 1])
def test_sgd_epoch_with_a_batch_size_far_beyond_n_is_one_step(batch_size):
    """One mini-batch of all n samples: nothing sized by batch_size itself is allocated, and ceil(n / batch_size)
    does not overflow."""
    sizes, n = [6, 5, 3], 7
    x, y = data(sizes, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(12))
    net, net_ref = make_net(sizes), make_net(sizes)
    costs = F.sgd_epoch(x, y, [layer.weight for layer in net], [layer.bias for layer in net], 0.5, batch_size, perm)
    assert torch.equal(costs, net_ref.sgd_step(x[perm], y[perm], 0.5).reshape(1))
    assert_same_parameters(net, net_ref)


def test_sgd_epoch_of_no_samples_changes_nothing():
    net = make_net([5, 4, 3])
    before = copy.deepcopy(net)
    costs = net.sgd_epoch(torch.zeros(0, 5, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64), 3.0, 10)
    assert costs.shape == (0,) and costs.dtype == torch.float64
    assert_same_parameters(net, before)


def test_sgd_epoch_bumps_the_version_counter():
    """A graph that saved a parameter must refuse to back-propagate after sgd_epoch changed it."""
    net = make_net([5, 4, 3])
    x, y = data([5, 4, 3], 6)
    versions = [p._version for p in net.parameters()]
    out = net(x).sum()
    net.sgd_epoch(x, y, 0.1, 4)
    assert all(p._version > v for p, v in zip(net.parameters(), versions))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_sgd_epoch_works_on_parameters_that_require_grad_and_builds_no_graph():
    net = make_net([5, 4, 3])
    x, y = data([5, 4, 3], 6)
    costs = net.sgd_epoch(x.requires_grad_(), y, 0.1, 4)
    assert not costs.requires_grad and costs.grad_fn is None
    assert all(p.grad is None for p in net.parameters())


def test_sgd_epoch_under_torch_compile_fullgraph_matches_eager():
    sizes, n, batch_size = CASES["small-partial"]
    x, y = data(sizes, n, torch.float32)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10))
    eager_net, compiled_net = make_net(sizes, dtype=torch.float32), make_net(sizes, dtype=torch.float32)

    def epoch(net, x, y, perm):
        weights, biases = [layer.weight for layer in net], [layer.bias for layer in net]
        return F.sgd_epoch(x, y, weights, biases, 3.0, batch_size, perm)

    eager = epoch(eager_net, x, y, perm)
    torch._dynamo.reset()
    compiled_epoch = torch.compile(epoch, fullgraph=True)
    compiled = compiled_epoch(compiled_net, x, y, perm)
    # The C++ op is the same kernel compiled or not; on the Python backend inductor fuses the torch ops its own way.
    torch.testing.assert_close(compiled, eager)
    for p, q in zip(compiled_net.parameters(), eager_net.parameters()):
        torch.testing.assert_close(p, q)
    # The values of perm are still checked in the compiled graph.
    bad = perm.clone()
    bad[3] = bad[4]
    with pytest.raises(
        (ValueError, RuntimeError), match=re.escape(f"sgd_epoch: perm must be a permutation of range({n})")
    ):
        compiled_epoch(compiled_net, x, y, bad)


def _opcheck_cases():
    sizes, n, batch_size = [6, 5, 3], 7, 3
    x, y = data(sizes, n)
    net = make_net(sizes)
    weights = [layer.weight.detach().clone() for layer in net]
    biases = [layer.bias.detach().clone() for layer in net]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(11))
    return {
        "perm": (x, y, weights, biases, 3.0, batch_size, perm),
        "in order": (x, y, weights, biases, 3.0, batch_size, None),
        "no bias": (x, y, weights, [], 0.5, 2, perm),
        "one batch": (x, y, weights, biases, 0.5, 100, None),
    }


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("case", ["perm", "in order", "no bias", "one batch"])
def test_opcheck(case):
    results = opcheck(ops.sigmoid_mlp_sgd_epoch.default, _opcheck_cases()[case])
    assert set(results.values()) == {"SUCCESS"}


# Long epochs on the C++ backend get a partner thread where torch has two (csrc/cpu/partner.h, Partner;
# csrc/cpu/capability/epoch.cpp, BatchRing): from 1,024 mini-batches on, it gathers the next mini-batches and takes
# a third of each product of 32k multiply-adds or more. The results must not depend on it: same kernels, same
# blocks, same rows.
PARTNER_MIN_BATCHES = 1024
PARTNERED = {
    # Nielsen's network: its hidden layer's 30 neurons split 20 / 10 (blocks of 5 rows with AVX-512, 21 / 9 with
    # the other copies' blocks of 3).
    "nielsen": ([784, 30, 10], 10),
    # Three split products of other shapes (AVX-512 splits): 384 neurons (255 / 129, the partner's last block a
    # partial one), 40 (25 / 15) and the 384 columns of delta^1 = (W^2)^T delta^2 sigma' (256 / 128).
    "uneven": ([300, 384, 40, 10], 4),
}


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("layout", ["contiguous", "strided-rows"])
@pytest.mark.parametrize("shuffled", [True, False], ids=["perm", "in-order"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(PARTNERED))
def test_partnered_epoch_is_exactly_a_loop_of_sgd_step(case, dtype, shuffled, layout, two_threads):
    sizes, batch_size = PARTNERED[case]
    n = PARTNER_MIN_BATCHES * batch_size + 7  # and a partial last mini-batch
    x, y = data(sizes, n, dtype)
    if layout == "strided-rows":  # rows of a wider tensor: gathered, never copied whole
        x = torch.cat([x, torch.zeros(n, 3, dtype=dtype)], 1)[:, : sizes[0]]
        y = torch.cat([y, torch.zeros(n, 1, dtype=dtype)], 1)[:, : sizes[-1]]
        assert not x.is_contiguous() and x.stride(1) == 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(13)) if shuffled else None
    net = make_net(sizes, dtype=dtype)
    net_one_thread, net_ref = copy.deepcopy(net), copy.deepcopy(net)
    weights, biases = [layer.weight for layer in net], [layer.bias for layer in net]
    costs = F.sgd_epoch(x, y, weights, biases, 3.0, batch_size, perm)

    torch.set_num_threads(1)  # no partner
    costs_one_thread = F.sgd_epoch(
        x,
        y,
        [layer.weight for layer in net_one_thread],
        [layer.bias for layer in net_one_thread],
        3.0,
        batch_size,
        perm,
    )
    expected = step_loop(net_ref, x, y, 3.0, batch_size, perm)
    assert torch.equal(costs_one_thread, expected)
    assert torch.equal(costs, expected)
    assert_same_parameters(net, net_ref)


@pytest.mark.backends("cpp")
def test_partnered_epoch_is_exact_while_other_threads_compete_for_the_cores(two_threads):
    """Two Python threads run large matrix products throughout (the GIL released): the partner loses its core now
    and then, so jobs are taken back, waited for and stalled on, and mini-batches gathered by either thread."""
    sizes, batch_size = PARTNERED["nielsen"]
    n = 2 * PARTNER_MIN_BATCHES * batch_size
    x, y = data(sizes, n, torch.float32)
    net = make_net(sizes, dtype=torch.float32)
    net_ref = copy.deepcopy(net)
    stop = threading.Event()

    def compete():
        a = torch.rand(300, 300)
        while not stop.is_set():
            a = torch.tanh(a @ a)

    competitors = [threading.Thread(target=compete) for _ in range(2)]
    for t in competitors:
        t.start()
    try:
        costs = [net.sgd_epoch(x, y, 3.0, batch_size, generator=torch.Generator().manual_seed(15)) for _ in range(3)]
    finally:
        stop.set()
        for t in competitors:
            t.join()
    torch.set_num_threads(1)
    for epoch in range(3):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(15))
        assert torch.equal(costs[epoch], step_loop(net_ref, x, y, 3.0, batch_size, perm))
    assert_same_parameters(net, net_ref)
