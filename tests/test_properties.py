"""Property tests: every op of every backend against torch autograd on the composite of plain torch ops.

The reference is ``torch.sigmoid(nn.functional.linear(x, W, b))`` and the quadratic cost written with torch ops.
Hypothesis draws the leading batch dimensions (0 to 3 of them, each of size 0 to 7), the feature sizes (1 to 64),
the dtype (float32, float64), bias or none, the memory layout of every input (contiguous, transposed, sliced), every
mix of requires_grad, the layout of the upstream gradient (contiguous, expanded with stride 0, transposed, sliced)
and create_graph (which takes the C++ backend's differentiable backward instead of its fused kernel).

The example count comes from the hypothesis profile (tests/conftest.py): "ci" by default (deterministic),
``--hypothesis-profile=thorough`` for 10x more.
"""

import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import bp_torch
from bp_torch import functional

DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "transposed", "sliced"]
GRAD_LAYOUTS = ["contiguous", "expanded", "ones-expanded", "transposed", "sliced"]

batch_shapes = st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple)
features = st.integers(1, 64)
seeds = st.integers(0, 2**31 - 1)


def tolerances(dtype):
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}


def make(gen, shape, dtype, layout):
    """A tensor of the given shape, with standard normal values, laid out in memory as asked."""
    shape = tuple(shape)
    if layout == "transposed":  # the same shape viewed from the reversed-shape tensor: reversed strides
        return torch.randn(shape[::-1], generator=gen, dtype=dtype).permute(*reversed(range(len(shape))))
    if layout == "sliced":  # every other element of the last dimension, and of the first
        wide = torch.randn(
            (2 * shape[0], *shape[1:-1], 2 * shape[-1]) if len(shape) > 1 else (2 * shape[0],),
            generator=gen,
            dtype=dtype,
        )
        return wide[::2, ..., ::2] if len(shape) > 1 else wide[::2]
    return torch.randn(shape, generator=gen, dtype=dtype)


def make_grad(gen, shape, dtype, layout):
    """An upstream gradient: expanded ones are what ``out.sum().backward()`` hands to the op."""
    if layout == "ones-expanded":
        return torch.ones((), dtype=dtype).expand(shape)
    if layout == "expanded":  # one row, broadcast over the samples (stride 0 in the leading dims)
        return (
            torch.randn(shape[-1:], generator=gen, dtype=dtype).expand(shape)
            if shape
            else torch.randn((), generator=gen, dtype=dtype)
        )
    if not shape:
        return torch.randn((), generator=gen, dtype=dtype)
    return make(gen, shape, dtype, layout)


def compare(got, expected, dtype):
    if expected is None:
        assert got is None
        return
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, equal_nan=True, **tolerances(dtype))


def check_against_reference(op, reference, build, seed, requires_grad, grad_layout, create_graph, dtype):
    """Values, and gradients of every input that requires grad, of op vs reference, with the same upstream gradient.

    ``build(gen)`` makes the inputs; it runs twice with the same seed, so both sides get equal, separate tensors
    with the same strides.
    """
    mine = build(torch.Generator().manual_seed(seed))
    theirs = build(torch.Generator().manual_seed(seed))
    for m, t, rg in zip(mine, theirs, requires_grad):
        if m is not None:
            m.requires_grad_(rg)
            t.requires_grad_(rg)
    gen = torch.Generator().manual_seed(seed + 1)
    out = op(*mine)
    expected = reference(*theirs)
    compare(out.detach(), expected.detach(), dtype)
    wanted = [i for i, (t, rg) in enumerate(zip(mine, requires_grad)) if t is not None and rg]
    assert out.requires_grad == bool(wanted)
    if not wanted:
        assert out.grad_fn is None
        return
    grad_out = make_grad(gen, out.shape, dtype, grad_layout)
    got = torch.autograd.grad(out, [mine[i] for i in wanted], grad_out, create_graph=create_graph)
    exp = torch.autograd.grad(expected, [theirs[i] for i in wanted], grad_out)
    for g, e in zip(got, exp):
        compare(g.detach(), e, dtype)
    if create_graph:  # the gradients are differentiable: one more backward runs
        total = sum(g.sum() for g in got if g.requires_grad)
        if isinstance(total, torch.Tensor) and total.requires_grad:
            torch.autograd.grad(total, [mine[i] for i in wanted], allow_unused=True)


# --- sigmoid_linear -------------------------------------------------------------------------------------------------


def reference_sigmoid_linear(x, weight, bias):
    return torch.sigmoid(F.linear(x, weight, bias))


@given(
    batch=batch_shapes,
    n_in=features,
    n_out=features,
    dtype=st.sampled_from(DTYPES),
    bias=st.booleans(),
    layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 3),
    requires_grad=st.tuples(*[st.booleans()] * 3),
    grad_layout=st.sampled_from(GRAD_LAYOUTS),
    create_graph=st.booleans(),
    seed=seeds,
)
def test_sigmoid_linear_matches_torch(
    backend, batch, n_in, n_out, dtype, bias, layouts, requires_grad, grad_layout, create_graph, seed
):
    def build(gen):
        return [
            make(gen, (*batch, n_in), dtype, layouts[0]),
            make(gen, (n_out, n_in), dtype, layouts[1]),
            make(gen, (n_out,), dtype, layouts[2]) if bias else None,
        ]

    check_against_reference(
        functional.sigmoid_linear,
        reference_sigmoid_linear,
        build,
        seed,
        requires_grad,
        grad_layout,
        create_graph,
        dtype,
    )


# --- quadratic_cost -------------------------------------------------------------------------------------------------


def reference_quadratic_cost(a, y, reduction):
    per_sample = 0.5 * (y - a).square().sum(-1)
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]


@given(
    batch=batch_shapes,
    n=features,
    dtype=st.sampled_from(DTYPES),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 2),
    requires_grad=st.tuples(*[st.booleans()] * 2),
    grad_layout=st.sampled_from(GRAD_LAYOUTS),
    create_graph=st.booleans(),
    module=st.booleans(),
    seed=seeds,
)
def test_quadratic_cost_matches_torch(
    backend, batch, n, dtype, reduction, layouts, requires_grad, grad_layout, create_graph, module, seed
):
    def build(gen):
        return [make(gen, (*batch, n), dtype, layouts[0]), make(gen, (*batch, n), dtype, layouts[1])]

    op = bp_torch.QuadraticCost(reduction) if module else (lambda a, y: functional.quadratic_cost(a, y, reduction))
    check_against_reference(
        op,
        lambda a, y: reference_quadratic_cost(a, y, reduction),
        build,
        seed,
        requires_grad,
        grad_layout,
        create_graph,
        dtype,
    )


# --- the two-layer network of equations (A) and (B) -----------------------------------------------------------------


def reference_two_layer(x, w1, b1, w2, b2, y):
    a2 = torch.sigmoid(F.linear(torch.sigmoid(F.linear(x, w1, b1)), w2, b2))
    return 0.5 * (y - a2).square().sum(-1).mean()


@given(
    batch=batch_shapes,
    sizes=st.tuples(features, features, features),
    dtype=st.sampled_from(DTYPES),
    layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 6),
    requires_grad=st.tuples(*[st.booleans()] * 6),
    create_graph=st.booleans(),
    seed=seeds,
)
def test_two_layer_quadratic_cost_matches_torch(
    backend, batch, sizes, dtype, layouts, requires_grad, create_graph, seed
):
    n0, n1, n2 = sizes
    shapes = [(*batch, n0), (n1, n0), (n1,), (n2, n1), (n2,), (*batch, n2)]

    def build(gen):
        return [make(gen, shape, dtype, layout) for shape, layout in zip(shapes, layouts)]

    check_against_reference(
        functional.two_layer_quadratic_cost,
        reference_two_layer,
        build,
        seed,
        requires_grad,
        "contiguous",
        create_graph,
        dtype,
    )


# --- SigmoidMLP.sgd_step: one step of Nielsen's update_mini_batch ---------------------------------------------------


@given(
    n=st.integers(0, 7),
    sizes=st.lists(st.integers(1, 16), min_size=2, max_size=4),
    dtype=st.sampled_from(DTYPES),
    bias=st.booleans(),
    layouts=st.tuples(*[st.sampled_from(LAYOUTS)] * 2),
    lr=st.sampled_from([0.1, 3.0]),
    seed=seeds,
)
def test_sgd_step_matches_torch(backend, n, sizes, dtype, bias, layouts, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = bp_torch.SigmoidMLP(sizes, bias=bias, dtype=dtype)
    x = make(gen, (n, sizes[0]), dtype, layouts[0])
    y = make(gen, (n, sizes[-1]), dtype, layouts[1]).sigmoid()
    params = [p.detach().clone().requires_grad_() for p in net.parameters()]
    a = x
    for layer in range(len(sizes) - 1):
        w = params[layer * (1 + bias)]
        b = params[layer * (1 + bias) + 1] if bias else None
        a = torch.sigmoid(F.linear(a, w, b))
    expected_cost = 0.5 * (y - a).square().sum(-1).mean()
    grads = torch.autograd.grad(expected_cost, params)
    cost = net.sgd_step(x, y, lr)
    compare(cost, expected_cost.detach(), dtype)
    for p, p0, g in zip(net.parameters(), params, grads):
        compare(p.detach(), (p0 - lr * g).detach(), dtype)


# --- SigmoidMLP / functional.sigmoid_mlp: the whole network (one fused op on the C++ backend) ------------------------


def reference_mlp(x, *params, bias):
    step = 2 if bias else 1
    for layer in range(0, len(params), step):
        x = torch.sigmoid(F.linear(x, params[layer], params[layer + 1] if bias else None))
    return x


@given(
    batch=batch_shapes,
    sizes=st.lists(features, min_size=2, max_size=4),
    dtype=st.sampled_from(DTYPES),
    bias=st.booleans(),
    data=st.data(),
    grad_layout=st.sampled_from(GRAD_LAYOUTS),
    create_graph=st.booleans(),
    module=st.booleans(),
    seed=seeds,
)
def test_sigmoid_mlp_matches_torch(backend, batch, sizes, dtype, bias, data, grad_layout, create_graph, module, seed):
    n_layers = len(sizes) - 1
    shapes = [(*batch, sizes[0])]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        shapes += [(n_out, n_in), (n_out,)] if bias else [(n_out, n_in)]
    layouts = data.draw(st.lists(st.sampled_from(LAYOUTS), min_size=len(shapes), max_size=len(shapes)))
    requires_grad = data.draw(st.lists(st.booleans(), min_size=len(shapes), max_size=len(shapes)))

    def build(gen):
        return [make(gen, shape, dtype, layout) for shape, layout in zip(shapes, layouts)]

    def mlp(x, *params):
        if module:  # the module, with these tensors as its parameters
            net = bp_torch.SigmoidMLP(sizes, bias=bias, dtype=dtype, device="meta")
            return torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], params)), (x,))
        weights = list(params[::2] if bias else params)
        return functional.sigmoid_mlp(x, weights, list(params[1::2]) if bias else [])

    assert len(shapes) == 1 + n_layers * (2 if bias else 1)
    check_against_reference(
        mlp,
        lambda x, *params: reference_mlp(x, *params, bias=bias),
        build,
        seed,
        requires_grad,
        grad_layout,
        create_graph,
        dtype,
    )
