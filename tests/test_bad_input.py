"""Bad input, the full list of issues 2 and 6, on every backend: each case raises the same exception type with the
same message (checked word for word) whichever backend is active. ValueError for shapes, devices and options,
TypeError for dtypes. Errors raised in C++ reach Python as exceptions, never as an abort.

A device mismatch is made with the "meta" device next to the CPU, so it is tested without a GPU.
"""

import re
import subprocess
import sys

import pytest
import torch

import bp_torch
from bp_torch import functional as F

f32, f64 = torch.float32, torch.float64


def x_(*shape, dtype=f32, device="cpu"):
    return torch.ones(shape, dtype=dtype, device=device)


W = x_(5, 4)
B = x_(5)

SL = "sigmoid_linear"
SIGMOID_LINEAR_CASES = {
    "last-dim-mismatch": (
        lambda: F.sigmoid_linear(x_(3, 3), W, B),
        ValueError,
        f"{SL}: input's last dimension must equal in_features=4, got input shape [3, 3] and weight shape [5, 4]",
    ),
    "last-dim-mismatch-1d": (
        lambda: F.sigmoid_linear(x_(5), W),
        ValueError,
        f"{SL}: input's last dimension must equal in_features=4, got input shape [5] and weight shape [5, 4]",
    ),
    "module-width": (
        lambda: bp_torch.SigmoidLinear(4, 5)(x_(2, 7, 6)),
        ValueError,
        f"{SL}: input's last dimension must equal in_features=4, got input shape [2, 7, 6] and weight shape [5, 4]",
    ),
    "weight-1d": (
        lambda: F.sigmoid_linear(x_(3, 4), x_(4), B),
        ValueError,
        f"{SL}: weight must be 2-D (out_features, in_features), got shape [4]",
    ),
    "weight-3d": (
        lambda: F.sigmoid_linear(x_(3, 4), x_(1, 5, 4), B),
        ValueError,
        f"{SL}: weight must be 2-D (out_features, in_features), got shape [1, 5, 4]",
    ),
    "weight-0d": (
        lambda: F.sigmoid_linear(x_(3, 4), torch.tensor(1.0)),
        ValueError,
        f"{SL}: weight must be 2-D (out_features, in_features), got shape []",
    ),
    "bias-length": (
        lambda: F.sigmoid_linear(x_(3, 4), W, x_(4)),
        ValueError,
        f"{SL}: bias must have shape [5] (out_features), got shape [4]",
    ),
    "bias-2d": (
        lambda: F.sigmoid_linear(x_(3, 4), W, x_(1, 5)),
        ValueError,
        f"{SL}: bias must have shape [5] (out_features), got shape [1, 5]",
    ),
    "bias-0d": (
        lambda: F.sigmoid_linear(x_(3, 4), W, torch.tensor(1.0)),
        ValueError,
        f"{SL}: bias must have shape [5] (out_features), got shape []",
    ),
    "input-0d": (
        lambda: F.sigmoid_linear(torch.tensor(1.0), W, B),
        ValueError,
        f"{SL}: input must have at least 1 dimension (*, in_features), got a 0-d tensor",
    ),
    "input-int64": (
        lambda: F.sigmoid_linear(x_(3, 4, dtype=torch.int64), W, B),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.int64",
    ),
    "input-int32": (
        lambda: F.sigmoid_linear(x_(3, 4, dtype=torch.int32), W, B),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.int32",
    ),
    "input-bool": (
        lambda: F.sigmoid_linear(x_(3, 4, dtype=torch.bool), W, B),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.bool",
    ),
    "input-complex": (
        lambda: F.sigmoid_linear(x_(3, 4, dtype=torch.complex64), W, B),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.complex64",
    ),
    "weight-int": (
        lambda: F.sigmoid_linear(x_(3, 4), x_(5, 4, dtype=torch.int64)),
        TypeError,
        f"{SL}: weight must be float32 or float64, got torch.int64",
    ),
    "input-bfloat16": (
        lambda: F.sigmoid_linear(x_(3, 4, dtype=torch.bfloat16), W, B),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.bfloat16",
    ),
    "all-float16": (
        lambda: F.sigmoid_linear(*(t.half() for t in (x_(3, 4), W, B))),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.float16",
    ),
    "bias-float16": (
        lambda: F.sigmoid_linear(x_(3, 4), W, B.half()),
        TypeError,
        f"{SL}: bias must be float32 or float64, got torch.float16",
    ),
    "mixed-input-weight": (
        lambda: F.sigmoid_linear(x_(3, 4, dtype=f64), W, B),
        TypeError,
        f"{SL}: input and weight must have the same dtype, got torch.float64 and torch.float32",
    ),
    "mixed-input-bias": (
        lambda: F.sigmoid_linear(x_(3, 4), W, B.double()),
        TypeError,
        f"{SL}: input and bias must have the same dtype, got torch.float32 and torch.float64",
    ),
    "module-float64-input": (
        lambda: bp_torch.SigmoidLinear(4, 5)(x_(3, 4, dtype=f64)),
        TypeError,
        f"{SL}: input and weight must have the same dtype, got torch.float64 and torch.float32",
    ),
    "device-weight": (
        lambda: F.sigmoid_linear(x_(3, 4), x_(5, 4, device="meta"), B),
        ValueError,
        f"{SL}: input and weight must be on the same device, got cpu and meta",
    ),
    "device-input": (
        lambda: F.sigmoid_linear(x_(3, 4, device="meta"), W, B),
        ValueError,
        f"{SL}: input and weight must be on the same device, got meta and cpu",
    ),
    "device-bias": (
        lambda: F.sigmoid_linear(x_(3, 4), W, x_(5, device="meta")),
        ValueError,
        f"{SL}: input and bias must be on the same device, got cpu and meta",
    ),
    "device-module-input": (
        lambda: bp_torch.SigmoidLinear(4, 5)(x_(3, 4, device="meta")),
        ValueError,
        f"{SL}: input and weight must be on the same device, got meta and cpu",
    ),
}

QC = "quadratic_cost"
REDUCTION_ERROR = f"{QC}: reduction must be one of ('none', 'mean', 'sum'), got "
QUADRATIC_COST_CASES = {
    "shapes-differ": (
        lambda: F.quadratic_cost(x_(3, 4), x_(3, 5)),
        ValueError,
        f"{QC}: input and target must have the same shape, got input shape [3, 4] and target shape [3, 5]",
    ),
    "shapes-broadcastable": (
        lambda: F.quadratic_cost(x_(3, 4), x_(4)),
        ValueError,
        f"{QC}: input and target must have the same shape, got input shape [3, 4] and target shape [4]",
    ),
    "shapes-transposed": (
        lambda: F.quadratic_cost(x_(3, 4), x_(4, 3)),
        ValueError,
        f"{QC}: input and target must have the same shape, got input shape [3, 4] and target shape [4, 3]",
    ),
    "module-shapes-differ": (
        lambda: bp_torch.QuadraticCost()(x_(2, 4), x_(3, 4)),
        ValueError,
        f"{QC}: input and target must have the same shape, got input shape [2, 4] and target shape [3, 4]",
    ),
    "input-0d": (
        lambda: F.quadratic_cost(torch.tensor(1.0), torch.tensor(1.0)),
        ValueError,
        f"{QC}: input must have at least 1 dimension (*, n_outputs), got a 0-d tensor",
    ),
    "input-int": (
        lambda: F.quadratic_cost(x_(3, 4, dtype=torch.int64), x_(3, 4, dtype=torch.int64)),
        TypeError,
        f"{QC}: input must be float32 or float64, got torch.int64",
    ),
    "target-int": (
        lambda: F.quadratic_cost(x_(3, 4), x_(3, 4, dtype=torch.int64)),
        TypeError,
        f"{QC}: target must be float32 or float64, got torch.int64",
    ),
    "input-bfloat16": (
        lambda: F.quadratic_cost(x_(3, 4, dtype=torch.bfloat16), x_(3, 4)),
        TypeError,
        f"{QC}: input must be float32 or float64, got torch.bfloat16",
    ),
    "mixed": (
        lambda: F.quadratic_cost(x_(3, 4), x_(3, 4, dtype=f64)),
        TypeError,
        f"{QC}: input and target must have the same dtype, got torch.float32 and torch.float64",
    ),
    "device": (
        lambda: F.quadratic_cost(x_(3, 4), x_(3, 4, device="meta")),
        ValueError,
        f"{QC}: input and target must be on the same device, got cpu and meta",
    ),
    "device-input": (
        lambda: F.quadratic_cost(x_(3, 4, device="meta"), x_(3, 4)),
        ValueError,
        f"{QC}: input and target must be on the same device, got meta and cpu",
    ),
    "reduction-unknown": (lambda: F.quadratic_cost(x_(3, 4), x_(3, 4), "avg"), ValueError, REDUCTION_ERROR + "'avg'"),
    "reduction-case": (lambda: F.quadratic_cost(x_(3, 4), x_(3, 4), "Mean"), ValueError, REDUCTION_ERROR + "'Mean'"),
    "reduction-empty": (lambda: F.quadratic_cost(x_(3, 4), x_(3, 4), ""), ValueError, REDUCTION_ERROR + "''"),
    "reduction-None": (lambda: F.quadratic_cost(x_(3, 4), x_(3, 4), None), ValueError, REDUCTION_ERROR + "None"),
    "module-reduction": (
        lambda: bp_torch.QuadraticCost("avg"),
        ValueError,
        "QuadraticCost: reduction must be one of ('none', 'mean', 'sum'), got 'avg'",
    ),
    "module-reduction-None": (
        lambda: bp_torch.QuadraticCost(None),
        ValueError,
        "QuadraticCost: reduction must be one of ('none', 'mean', 'sum'), got None",
    ),
}

NET = [4, 3, 2]
SIGMOID_MLP_CASES = {
    "one-size": (
        lambda: bp_torch.SigmoidMLP([3]),
        ValueError,
        "SigmoidMLP: sizes must have at least 2 entries (input and output), got [3]",
    ),
    "no-sizes": (
        lambda: bp_torch.SigmoidMLP([]),
        ValueError,
        "SigmoidMLP: sizes must have at least 2 entries (input and output), got []",
    ),
    "negative-size": (
        lambda: bp_torch.SigmoidMLP([3, -1]),
        ValueError,
        "SigmoidMLP: sizes must be non-negative integers, got [3, -1]",
    ),
    "float-size": (
        lambda: bp_torch.SigmoidMLP([3, 2.0]),
        ValueError,
        "SigmoidMLP: sizes must be non-negative integers, got [3, 2.0]",
    ),
    "sgd-y-width": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_step(x_(5, 4), x_(5, 3), 0.1),
        ValueError,
        "sgd_step: y must have shape [5, 2] to match x of shape [5, 4], got [5, 3]",
    ),
    "sgd-y-rows": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_step(x_(5, 4), x_(4, 2), 0.1),
        ValueError,
        "sgd_step: y must have shape [5, 2] to match x of shape [5, 4], got [4, 2]",
    ),
    "sgd-y-1d": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_step(x_(5, 4), x_(10), 0.1),
        ValueError,
        "sgd_step: y must have shape [5, 2] to match x of shape [5, 4], got [10]",
    ),
    "sgd-x-width": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_step(x_(5, 3), x_(5, 2), 0.1),
        ValueError,
        "sgd_step: x must have shape [batch, 4], got [5, 3]",
    ),
    "sgd-x-1d": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_step(x_(4), x_(2), 0.1),
        ValueError,
        "sgd_step: x must be 2-D (batch, 4), got shape [4]",
    ),
    "sgd-y-dtype": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_step(x_(5, 4), x_(5, 2, dtype=f64), 0.1),
        TypeError,
        "sgd_step: x and y must have the same dtype, got torch.float32 and torch.float64",
    ),
}

SE = "sgd_epoch"
PERM_ERROR = f"{SE}: perm must be a permutation of range(5), got "


def sgd_epoch(x=None, y=None, batch_size=2, perm=None, biases=None):
    """SigmoidMLP(NET)'s parameters through functional.sgd_epoch, with one argument changed."""
    net = bp_torch.SigmoidMLP(NET)
    x, y = x_(5, 4) if x is None else x, x_(5, 2) if y is None else y
    biases = [layer.bias for layer in net] if biases is None else biases
    return F.sgd_epoch(x, y, [layer.weight for layer in net], biases, 0.1, batch_size, perm)


SGD_EPOCH_CASES = {
    "batch-0": (lambda: sgd_epoch(batch_size=0), ValueError, f"{SE}: batch_size must be at least 1, got 0"),
    "batch-negative": (lambda: sgd_epoch(batch_size=-3), ValueError, f"{SE}: batch_size must be at least 1, got -3"),
    "batch-float": (lambda: sgd_epoch(batch_size=2.5), TypeError, f"{SE}: batch_size must be an int, got float"),
    "batch-bool": (lambda: sgd_epoch(batch_size=True), TypeError, f"{SE}: batch_size must be an int, got bool"),
    "batch-tensor": (
        lambda: sgd_epoch(batch_size=torch.tensor(2)),
        TypeError,
        f"{SE}: batch_size must be an int, got Tensor",
    ),
    "module-x-0d": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_epoch(torch.tensor(1.0), x_(5, 2), 0.1, 2),
        ValueError,
        f"{SE}: x must be 2-D (batch, 4), got shape []",
    ),
    "module-batch-0": (
        lambda: bp_torch.SigmoidMLP(NET).sgd_epoch(x_(5, 4), x_(5, 2), 0.1, 0),
        ValueError,
        f"{SE}: batch_size must be at least 1, got 0",
    ),
    "perm-int32": (
        lambda: sgd_epoch(perm=torch.arange(5, dtype=torch.int32)),
        TypeError,
        f"{SE}: perm must be a torch.int64 tensor, got torch.int32",
    ),
    "perm-float": (
        lambda: sgd_epoch(perm=torch.arange(5.0)),
        TypeError,
        f"{SE}: perm must be a torch.int64 tensor, got torch.float32",
    ),
    "perm-short": (
        lambda: sgd_epoch(perm=torch.arange(4)),
        ValueError,
        f"{SE}: perm must have shape [5] (one index per sample of x), got [4]",
    ),
    "perm-2d": (
        lambda: sgd_epoch(perm=torch.arange(5).view(5, 1)),
        ValueError,
        f"{SE}: perm must have shape [5] (one index per sample of x), got [5, 1]",
    ),
    "perm-0d": (
        lambda: sgd_epoch(perm=torch.tensor(0)),
        ValueError,
        f"{SE}: perm must have shape [5] (one index per sample of x), got []",
    ),
    "perm-device": (
        lambda: sgd_epoch(perm=torch.arange(5, device="meta")),
        ValueError,
        f"{SE}: x and perm must be on the same device, got cpu and meta",
    ),
    "perm-repeat": (
        lambda: sgd_epoch(perm=torch.tensor([0, 1, 2, 1, 4])),
        ValueError,
        PERM_ERROR + "perm[3] = 1, a repeat",
    ),
    "perm-too-large": (lambda: sgd_epoch(perm=torch.tensor([0, 1, 5, 3, 4])), ValueError, PERM_ERROR + "perm[2] = 5"),
    "perm-negative": (lambda: sgd_epoch(perm=torch.tensor([0, -1, 2, 3, 4])), ValueError, PERM_ERROR + "perm[1] = -1"),
    "perm-repeat-first": (
        lambda: sgd_epoch(perm=torch.tensor([2, 2, 9, 9, 4])),
        ValueError,
        PERM_ERROR + "perm[1] = 2, a repeat",
    ),
    "perm-too-large-first": (
        lambda: sgd_epoch(perm=torch.tensor([9, 9, 2, 2, 4])),
        ValueError,
        PERM_ERROR + "perm[0] = 9",
    ),
    "y-width": (
        lambda: sgd_epoch(y=x_(5, 3)),
        ValueError,
        f"{SE}: y must have shape [5, 2] to match x of shape [5, 4], got [5, 3]",
    ),
    "x-1d": (lambda: sgd_epoch(x=x_(4), y=x_(2)), ValueError, f"{SE}: x must be 2-D (batch, 4), got shape [4]"),
    "x-width": (lambda: sgd_epoch(x=x_(5, 3)), ValueError, f"{SE}: x must have shape [batch, 4], got [5, 3]"),
    "y-dtype": (
        lambda: sgd_epoch(y=x_(5, 2, dtype=f64)),
        TypeError,
        f"{SE}: x and y must have the same dtype, got torch.float32 and torch.float64",
    ),
    "x-int": (
        lambda: sgd_epoch(x=x_(5, 4, dtype=torch.int64)),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.int64",
    ),
    "biases-entry": (
        lambda: sgd_epoch(biases=[x_(3), 0.5]),
        TypeError,
        f"{SE}: biases[1] must be a Tensor or None, got float",
    ),
    "biases-count": (
        lambda: sgd_epoch(biases=[x_(3)]),
        ValueError,
        f"{SE}: biases must be empty (no bias) or have one entry per layer (2), got 1",
    ),
}

TWO_LAYER_CASES = {
    "w2-width": (
        lambda: F.two_layer_quadratic_cost(x_(2, 4), x_(3, 4), x_(3), x_(2, 5), x_(2), x_(2, 2)),
        ValueError,
        "two_layer_quadratic_cost: w2 must have shape [n2, 3] to follow w1 of shape [3, 4], got [2, 5]",
    ),
    "y-shape": (
        lambda: F.two_layer_quadratic_cost(x_(2, 4), x_(3, 4), x_(3), x_(2, 3), x_(2), x_(2, 3)),
        ValueError,
        "two_layer_quadratic_cost: y must have shape [2, 2], got [2, 3]",
    ),
    "x-width": (
        lambda: F.two_layer_quadratic_cost(x_(2, 5), x_(3, 4), x_(3), x_(2, 3), x_(2), x_(2, 2)),
        ValueError,
        f"{SL}: input's last dimension must equal in_features=4, got input shape [2, 5] and weight shape [3, 4]",
    ),
}

ALL_CASES = {
    **{f"sigmoid_linear-{k}": v for k, v in SIGMOID_LINEAR_CASES.items()},
    **{f"quadratic_cost-{k}": v for k, v in QUADRATIC_COST_CASES.items()},
    **{f"SigmoidMLP-{k}": v for k, v in SIGMOID_MLP_CASES.items()},
    **{f"two_layer-{k}": v for k, v in TWO_LAYER_CASES.items()},
    **{f"sgd_epoch-{k}": v for k, v in SGD_EPOCH_CASES.items()},
}


@pytest.mark.parametrize("case", ALL_CASES.values(), ids=ALL_CASES.keys())
def test_bad_input_raises_the_same_error_on_every_backend(backend, case):
    call, error, message = case
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error  # not a subclass (torch's errors subclass these)
    assert str(info.value).splitlines()[0] == message


@pytest.mark.parametrize("case", ["sigmoid_linear", "quadratic_cost"])
def test_errors_do_not_depend_on_requires_grad_or_grad_mode(backend, case):
    bad = {"sigmoid_linear": lambda t: F.sigmoid_linear(t, W), "quadratic_cost": lambda t: F.quadratic_cost(t, W)}
    t = x_(5, 3).requires_grad_()
    for mode in (torch.enable_grad, torch.no_grad, torch.inference_mode):
        with mode(), pytest.raises(ValueError, match="shape"):
            bad[case](t)


# --- the C++ ops called directly -------------------------------------------------------------------------------------

ops = torch.ops.bp_torch if "cpp" in bp_torch.available_backends() else None
G, X, A = x_(3, 5), x_(3, 4), x_(3, 5)
SLB = "sigmoid_linear_backward"
BACKWARD_CASES = {
    "grad-shape": (
        lambda d: ops.sigmoid_linear_backward(x_(3, 4, device=d), *on(d, X, W, A), [True] * 3),
        ValueError,
        f"{SLB}: grad_a and a must have shape [3, 5], got [3, 4] and [3, 5]",
    ),
    "grad-0d": (
        lambda d: ops.sigmoid_linear_backward(torch.tensor(1.0, device=d), *on(d, X, W, A), [True] * 3),
        ValueError,
        f"{SLB}: grad_a and a must have shape [3, 5], got [] and [3, 5]",
    ),
    "a-shape": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G, X, W), x_(2, 5, device=d), [True] * 3),
        ValueError,
        f"{SLB}: grad_a and a must have shape [3, 5], got [3, 5] and [2, 5]",
    ),
    "x-width": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G, x_(3, 3), W, A), [True] * 3),
        ValueError,
        f"{SL}: input's last dimension must equal in_features=4, got input shape [3, 3] and weight shape [5, 4]",
    ),
    "x-0d": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G, torch.tensor(1.0), W, A), [True] * 3),
        ValueError,
        f"{SL}: input must have at least 1 dimension (*, in_features), got a 0-d tensor",
    ),
    "weight-1d": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G, X, x_(4), A), [True] * 3),
        ValueError,
        f"{SL}: weight must be 2-D (out_features, in_features), got shape [4]",
    ),
    "x-int": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G, X.long(), W, A), [True] * 3),
        TypeError,
        f"{SL}: input must be float32 or float64, got torch.int64",
    ),
    "grad-dtype": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G.double(), X, W, A), [True] * 3),
        TypeError,
        f"{SLB}: grad_a and a must have the input's dtype",
    ),
    "a-int": (
        lambda d: ops.sigmoid_linear_backward(*on(d, G, X, W, A.long()), [True] * 3),
        TypeError,
        f"{SLB}: grad_a and a must have the input's dtype",
    ),
    "forward-weight-1d": (
        lambda d: ops.sigmoid_linear(*on(d, X, x_(4)), None),
        ValueError,
        f"{SL}: weight must be 2-D (out_features, in_features), got shape [4]",
    ),
    "cost-grad-shape-mean": (
        lambda d: ops.quadratic_cost_backward(*on(d, x_(3), X, X), "mean", [True] * 2),
        ValueError,
        "quadratic_cost_backward: grad_cost must have shape [], got [3]",
    ),
    "cost-grad-shape-none": (
        lambda d: ops.quadratic_cost_backward(*on(d, x_(4), X, X), "none", [True] * 2),
        ValueError,
        "quadratic_cost_backward: grad_cost must have shape [3], got [4]",
    ),
    "cost-grad-dtype": (
        lambda d: ops.quadratic_cost_backward(*on(d, x_(3, dtype=f64), X, X), "none", [True] * 2),
        TypeError,
        "quadratic_cost_backward: grad_cost must have the input's dtype",
    ),
    "cost-target-shape": (
        lambda d: ops.quadratic_cost_backward(*on(d, x_(), X, x_(3, 5)), "sum", [True] * 2),
        ValueError,
        f"{QC}: input and target must have the same shape, got input shape [3, 4] and target shape [3, 5]",
    ),
    "cost-reduction": (
        lambda d: ops.quadratic_cost_backward(*on(d, x_(), X, X), "avg", [True] * 2),
        ValueError,
        REDUCTION_ERROR + "'avg'",
    ),
    "cost-0d": (
        lambda d: ops.quadratic_cost_backward(*on(d, x_(), x_(), x_()), "sum", [True] * 2),
        ValueError,
        f"{QC}: input must have at least 1 dimension (*, n_outputs), got a 0-d tensor",
    ),
    "epoch-batch-0": (
        lambda d: sgd_epoch_op(d, batch_size=0),
        ValueError,
        f"{SE}: batch_size must be at least 1, got 0",
    ),
    "epoch-perm-int32": (
        lambda d: sgd_epoch_op(d, perm=torch.arange(5, dtype=torch.int32)),
        TypeError,
        f"{SE}: perm must be a torch.int64 tensor, got torch.int32",
    ),
    "epoch-perm-short": (
        lambda d: sgd_epoch_op(d, perm=torch.arange(4)),
        ValueError,
        f"{SE}: perm must have shape [5] (one index per sample of x), got [4]",
    ),
    "epoch-y-width": (
        lambda d: sgd_epoch_op(d, y=x_(5, 3)),
        ValueError,
        f"{SE}: y must have shape [5, 2] to match x of shape [5, 4], got [5, 3]",
    ),
    "epoch-biases-count": (
        lambda d: sgd_epoch_op(d, biases=[x_(3)]),
        ValueError,
        f"{SE}: biases must be empty (no bias) or have one entry per layer (2), got 1",
    ),
}


def sgd_epoch_op(device, y=None, biases=None, batch_size=2, perm=None):
    """The op itself, all its tensors on `device`, with one argument changed."""
    weights, default_biases = [x_(3, 4), x_(2, 3)], [x_(3), x_(2)]
    biases = default_biases if biases is None else biases
    tensors = on(device, x_(5, 4), x_(5, 2) if y is None else y, *weights, *biases)
    perm = None if perm is None else perm.to(device)
    return ops.sigmoid_mlp_sgd_epoch(tensors[0], tensors[1], tensors[2:4], tensors[4:], 0.1, batch_size, perm)


def on(device, *tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.backends("cpp")
@pytest.mark.parametrize("device", ["cpu", "meta"], ids=["kernel", "fake-kernel"])
@pytest.mark.parametrize("case", BACKWARD_CASES.values(), ids=BACKWARD_CASES.keys())
def test_ops_called_directly_with_bad_input_raise(backend, case, device):
    """The CPU kernels and the fake (meta) kernels that torch.compile traces with raise the same errors."""
    call, error, message = case
    with pytest.raises(error) as info:
        call(device)
    assert str(info.value).splitlines()[0] == message


@pytest.mark.backends("cpp")
def test_backward_op_with_a_wrong_length_mask_raises(backend):
    with pytest.raises(RuntimeError, match=re.escape("fixed-size array of size 3")):
        ops.sigmoid_linear_backward(G, X, W, A, [True, True])


@pytest.mark.backends("cpp")
def test_cpp_errors_never_abort_the_process(backend):
    """Every error path of the C++ ops, in a fresh interpreter: the process must exit normally, with each error
    caught as a Python exception (an abort or a crash would show as a signal in the return code)."""
    script = """
import torch, bp_torch
ops = torch.ops.bp_torch
x, w, a = torch.ones(3, 4), torch.ones(5, 4), torch.ones(3, 5)
calls = [
    lambda: ops.sigmoid_linear(torch.ones(3, 3), w, None),
    lambda: ops.sigmoid_linear(x, torch.ones(4), None),
    lambda: ops.sigmoid_linear(x, w, torch.ones(4)),
    lambda: ops.sigmoid_linear(torch.tensor(1.0), w, None),
    lambda: ops.sigmoid_linear(x.long(), w, None),
    lambda: ops.sigmoid_linear(x.half(), w.half(), None),
    lambda: ops.sigmoid_linear(x, w.double(), None),
    lambda: ops.sigmoid_linear_backward(torch.ones(2), x, w, a, [True] * 3),
    lambda: ops.sigmoid_linear_backward(a, x, w, torch.ones(7, 5), [True] * 3),
    lambda: ops.sigmoid_linear_backward(a, torch.ones(3, 9), w, a, [True] * 3),
    lambda: ops.sigmoid_linear_backward(a.int(), x, w, a, [True] * 3),
    lambda: ops.quadratic_cost(x, torch.ones(4, 3), "mean"),
    lambda: ops.quadratic_cost(x, x, "avg"),
    lambda: ops.quadratic_cost(torch.tensor(1.0), torch.tensor(1.0), "sum"),
    lambda: ops.quadratic_cost_backward(torch.ones(5), x, x, "none", [True] * 2),
    lambda: ops.quadratic_cost_backward(torch.tensor(1.0), x, x, "avg", [True] * 2),
    lambda: ops.quadratic_cost_backward(torch.tensor(1, dtype=torch.int64), x, x, "sum", [True] * 2),
    lambda: ops.sigmoid_mlp_sgd_epoch(x, a, [w], [], 0.1, 0, None),
    lambda: ops.sigmoid_mlp_sgd_epoch(x, a, [w], [], 0.1, 2, torch.tensor([0, 1, 3])),
    lambda: ops.sigmoid_mlp_sgd_epoch(x, a, [w], [], 0.1, 2, torch.tensor([0, 0, 1])),
    lambda: ops.sigmoid_mlp_sgd_epoch(x, a, [w], [], 0.1, 2, torch.tensor([0, -9, 1])),
]
caught = 0
for call in calls:
    try:
        call()
    except (ValueError, TypeError):
        caught += 1
print("caught", caught, "of", len(calls))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["21", "of", "21"], result.stdout
