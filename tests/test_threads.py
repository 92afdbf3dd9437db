"""Threads, on every backend: forward and backward from 4 Python threads at once give the serial results, on separate
modules and on one shared module; and the C++ kernels hold no global mutable state.
"""

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import bp_torch
from bp_torch import functional

import reference

N_THREADS = 4
ROUNDS = 5
# (batch, in, out): small, and large enough for the kernels' at::parallel_for to split the work (> 32768 elements)
SIZES = [(8, 5, 3), (256, 64, 192)]


def make_net(seed, n_in, n_out):
    torch.manual_seed(seed)
    return torch.nn.Sequential(bp_torch.SigmoidLinear(n_in, n_out), bp_torch.SigmoidLinear(n_out, 4))


def make_batch(seed, batch, n_in):
    gen = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(batch, n_in, generator=gen), torch.rand(batch, 4, generator=gen)


def step(net, x, y):
    """Forward, cost, and the gradients of every parameter and of x (autograd.grad: nothing is accumulated)."""
    x = x.clone().requires_grad_()
    out = net(x)
    cost = functional.quadratic_cost(out, y)
    grads = torch.autograd.grad(cost, [x, *net.parameters()])
    return [out.detach(), cost.detach(), *grads]


def run_in_threads(work):
    """Runs work(i) for i in range(N_THREADS), all threads released together; returns the results in order."""
    results, errors = [None] * N_THREADS, []
    barrier = threading.Barrier(N_THREADS)

    def target(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results


def assert_same(got, expected):
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_separate_modules_in_threads_match_serial(sizes):
    batch, n_in, n_out = sizes
    nets = [make_net(i, n_in, n_out) for i in range(N_THREADS)]
    data = [make_batch(i, batch, n_in) for i in range(N_THREADS)]
    serial = [step(nets[i], *data[i]) for i in range(N_THREADS)]
    threaded = run_in_threads(lambda i: [step(nets[i], *data[i]) for _ in range(ROUNDS)])
    for i in range(N_THREADS):
        for result in threaded[i]:
            assert_same(result, serial[i])


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_shared_module_in_threads_matches_serial(sizes):
    batch, n_in, n_out = sizes
    net = make_net(0, n_in, n_out)
    data = [make_batch(i, batch, n_in) for i in range(N_THREADS)]
    serial = [step(net, *data[i]) for i in range(N_THREADS)]
    threaded = run_in_threads(lambda i: [step(net, *data[i]) for _ in range(ROUNDS)])
    for i in range(N_THREADS):
        for result in threaded[i]:
            assert_same(result, serial[i])


def test_shared_module_backward_accumulates_every_threads_gradient():
    net = make_net(0, 16, 8)
    data = [make_batch(i, 32, 16) for i in range(N_THREADS)]
    expected = [torch.zeros_like(p) for p in net.parameters()]
    for i in range(N_THREADS):
        for e, g in zip(expected, step(net, *data[i])[3:]):
            e += g

    def work(i):
        functional.quadratic_cost(net(data[i][0]), data[i][1]).backward()  # into the shared .grad

    run_in_threads(work)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.grad, e)  # the order of the 4 additions may differ


def test_sgd_step_on_separate_networks_in_threads_matches_serial():
    def make(seed):  # in the main thread: init draws from the global RNG
        torch.manual_seed(seed)
        return bp_torch.SigmoidMLP([16, 8, 4]), *make_batch(seed, 32, 16)

    def train(net, x, y):
        costs = [net.sgd_step(x, y, 3.0) for _ in range(ROUNDS)]
        return [*costs, *[p.detach() for p in net.parameters()]]

    serial = [train(*make(i)) for i in range(N_THREADS)]
    setups = [make(i) for i in range(N_THREADS)]
    threaded = run_in_threads(lambda i: train(*setups[i]))
    for got, expected in zip(threaded, serial):
        assert_same(got, expected)


# --- torch's thread count ------------------------------------------------------------------------------------------


@pytest.fixture
def restore_num_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_loop_products_do_not_depend_on_the_thread_count(backend, dtype, restore_num_threads):
    """[784, 128, 10] at mini-batch 10: its 1M-multiply-add products still run in the C++ loops, which split them
    over up to 3 threads, each taking a block of neurons (or of dC/dx's columns). Every output entry is still one
    thread's sum in one order, so 1, 2 and 3 threads (an uneven split) agree bit for bit. On the baseline copy one
    thread runs these products in BLAS instead (csrc/cpu/capability/internal.h, use_small): there 2 and 3 threads
    agree bit for bit (tests/test_isa.py runs this test under each copy)."""
    sizes = [784, 128, 10]
    torch.manual_seed(0)
    template = bp_torch.SigmoidMLP(sizes, dtype=dtype)
    x = torch.rand(10, 784, dtype=dtype)
    y = torch.rand(10, 10, dtype=dtype)

    def run(threads):
        torch.set_num_threads(threads)
        net = bp_torch.SigmoidMLP(sizes, dtype=dtype)
        net.load_state_dict(template.state_dict())
        x_ = x.clone().requires_grad_()
        out = net(x_)
        grads = torch.autograd.grad(functional.quadratic_cost(out, y), [x_, *net.parameters()])
        costs = [net.sgd_step(x, y, 3.0) for _ in range(3)]
        return [out.detach(), *grads, *costs, *[p.detach() for p in net.parameters()]]

    first, *others = (2, 3) if torch.ops.bp_torch.kernel_capability() == "DEFAULT" else (1, 2, 3)
    serial = run(first)
    assert not torch.equal(serial[-4], template[0].weight.detach())  # the steps did train
    for threads in others:
        assert_same(run(threads), serial)


def assert_split_products_equal_autograd(sizes, batch, threads, input_grad, seed):
    """SigmoidMLP(sizes) at mini-batch `batch` on `threads` of torch's threads: forward, gradients (of x too with
    input_grad) and three sgd steps against float64 autograd through plain torch ops on copies of its parameters,
    with torch.optim.SGD as the update (tests/reference.py)."""
    torch.set_num_threads(threads)
    lr = 0.5
    torch.manual_seed(seed)
    net = bp_torch.SigmoidMLP(sizes)
    weights = [layer.weight.detach().double().requires_grad_() for layer in net]
    biases = [layer.bias.detach().double().requires_grad_() for layer in net]
    oracle = reference.chain(weights, biases)
    oracle_params = [p for layer in zip(weights, biases) for p in layer]  # net.parameters()' order
    x, y = torch.rand(batch, sizes[0]), torch.rand(batch, sizes[-1])
    x_net, x_oracle = x.clone().requires_grad_(input_grad), x.double().requires_grad_(input_grad)

    out = net(x_net)
    want_out = oracle(x_oracle)
    wrt_net, wrt_oracle = [*net.parameters()], oracle_params
    if input_grad:
        wrt_net, wrt_oracle = [x_net, *wrt_net], [x_oracle, *wrt_oracle]
    grads = torch.autograd.grad(functional.quadratic_cost(out, y), wrt_net)
    want_grads = torch.autograd.grad(reference.quadratic_cost(want_out, y.double()), wrt_oracle)
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.detach(), want_out.detach().float(), **tol)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want.float(), **tol)

    costs = [net.sgd_step(x, y, lr) for _ in range(3)]
    want_costs = reference.optim_sgd_steps(
        oracle, weights, biases, [(x.double(), y.double())] * 3, lr, 0.0, reference.COSTS["quadratic"]
    )
    torch.testing.assert_close(torch.stack(costs), torch.stack(want_costs).float(), **tol)
    for got, want in zip(net.parameters(), oracle_params):
        torch.testing.assert_close(got.detach(), want.detach().float(), **tol)


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("input_grad", [False, True], ids=["params-only", "with-dx"])
@pytest.mark.parametrize("sizes, batch", [([300, 200, 60], 67), ([784, 100, 10], 10)], ids=["blas", "crossover"])
def test_products_split_over_threads_equal_autograd(backend, threads, input_grad, sizes, batch, restore_num_threads):
    """[300, 200, 60] at mini-batch 67: the first layer's products (4M multiply-adds) go to BLAS on every kernel
    copy, which gets blocks of the output's rows, one per thread: 67 samples and 200 neurons split unevenly over 2
    and 3 threads. [784, 100, 10] at mini-batch 10 (0.78M): the loops split over threads, except on the baseline
    copy at one thread, where BLAS takes them (tests/test_isa.py runs this test under each copy). Without dC/dx,
    dC/dW^1 is the layer's only backward product, and sgd_step's update of W^1 always is. Forward, gradients and
    three sgd steps against float64 autograd on a plain-torch copy, with torch.optim.SGD as the update."""
    assert_split_products_equal_autograd(sizes, batch, threads, input_grad, seed=threads)


@pytest.mark.backends("cpp")
@settings(max_examples=25)
@given(
    n_in=st.integers(600, 900),
    hidden=st.integers(40, 140),
    batch=st.integers(5, 14),
    threads=st.integers(1, 3),
    input_grad=st.booleans(),
)
def test_products_around_the_loops_and_blas_thresholds_equal_autograd(
    backend, n_in, hidden, batch, threads, input_grad, restore_num_threads
):
    """Drawn networks [n_in, hidden, 10] whose first layer's products (120k to 1.8M multiply-adds) fall on either
    side of where a product is split over threads (2^19) and where the loops give way to BLAS (2^20; from 2^19 on the
    baseline copy at one thread), on 1 to 3 threads."""
    assert_split_products_equal_autograd([n_in, hidden, 10], batch, threads, input_grad, seed=n_in + hidden + batch)


# --- no global mutable state in the C++ extension ---------------------------------------------------------------------

CSRC = Path(__file__).resolve().parents[1] / "csrc"


@pytest.mark.backends("cpp")
def test_cpp_extension_has_no_global_mutable_state(backend):
    """Every writable data symbol (.data/.bss) of bp_torch's own code is a dispatcher op handle held in a
    function-local static (thread-safe initialisation, read-only afterwards), the kernel copy chosen for this CPU
    (likewise), a TORCH_LIBRARY registration object,
    or the Python module definition: no caches, counters or buffers shared between threads."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    library = bp_torch._ops._C.__file__
    sources = "\n".join(p.read_text() for p in sorted(CSRC.rglob("*.cpp")) + sorted(CSRC.rglob("*.h")))
    op_handles = set(re.findall(r"static\s+(?:const\s+)?auto\s+(\w+)\s*=\s*c10::Dispatcher::singleton\(\)", sources))
    # The kernel copy chosen for this CPU (csrc/cpu/sigmoid_mlp.cpp): a const function-local static, set once.
    op_handles |= set(re.findall(r"static\s+const\s+Capability\s+(\w+)\s*=", sources))
    symbols = subprocess.run([nm, "-C", library], capture_output=True, text=True, check=True).stdout.splitlines()
    offenders = []
    for line in symbols:
        parts = line.split(maxsplit=2)
        if len(parts) != 3 or parts[1] not in "bBdD":
            continue
        name = parts[2]
        if "bp_torch" not in name and not name.startswith("PyInit"):
            continue  # the C++ runtime's and torch's own
        if name.startswith(("typeinfo for", "vtable for", "guard variable for")):
            continue  # RTTI, vtables, static-init guards
        if re.match(r"bp_torch::TORCH_LIBRARY(_IMPL)?_static_init_", name) or name == "PyInit__C::module":
            continue
        local_static = re.search(r"\)::(\w+)$", name)
        if local_static and local_static.group(1) in op_handles:
            continue
        offenders.append(name)
    assert op_handles
    assert not offenders, f"writable global state in {library}: {offenders}"
