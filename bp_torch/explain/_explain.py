"""explain(): each chain-rule factor of each layer computed as its own tensor, the factors multiplied out weight by
weight, and torch autograd's gradient set beside each product; first, the checks of what it is given; last, the SGD
steps that the page's slider moves through, each step a report of its own.

The formulas it shares with the library come from :mod:`bp_torch.autograd` (``sigmoid_prime_from_output`` for
(1.2)/(2.2), ``quadratic_cost_backward`` for (1.3), ``cross_entropy_cost_backward`` for (3.2)); the update of each
step is :func:`bp_torch.functional.sgd_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _backend, _checks, functional
from ..autograd import cross_entropy_cost_backward, quadratic_cost_backward, sigmoid_prime_from_output
from ..modules import COST_MODULES, CrossEntropyCost, QuadraticCost, SigmoidLinear
from . import _notation
from ._report import ExplainReport, LayerReport

__all__ = [
    "COST_REDUCTIONS",
    "after_sgd_steps",
    "cost_module",
    "explain",
    "layers_of",
    "learning_rate",
    "tensor_argument",
]

COST_REDUCTIONS = ("mean", "sum")


def layers_of(model: nn.Module) -> list[SigmoidLinear]:
    """The model's SigmoidLinear layers, first to last; a clear error for anything else."""
    if isinstance(model, SigmoidLinear):
        modules: list[nn.Module] = [model]
    elif isinstance(model, nn.Sequential):
        modules = list(model)
    else:
        raise TypeError(
            f"explain: model must be a bp_torch.SigmoidMLP, a bp_torch.SigmoidLinear or an nn.Sequential of "
            f"SigmoidLinear layers (the chapter's a^l = sigma(w^l a^(l-1) + b^l)), got {type(model).__name__}"
        )
    if not modules:
        raise ValueError("explain: the model has no layers")
    layers: list[SigmoidLinear] = []
    for i, module in enumerate(modules):
        if not isinstance(module, SigmoidLinear):
            raise TypeError(
                f"explain: layer {i} of the model is {type(module).__name__}; every layer must be a "
                f"bp_torch.SigmoidLinear, whose derivative is the chapter's sigma'(z) = a (1 - a)"
            )
        layers.append(module)
    # Before any computation, so that both backends refuse a zero-width layer with this message (each would otherwise
    # fail in its own way, deep inside a reshape or a reduction)
    for i, layer in enumerate(layers):
        if layer.in_features == 0 or layer.out_features == 0:
            raise ValueError(
                f"explain: layer {i} of the model (w^{i + 1}) has {layer.in_features} inputs and "
                f"{layer.out_features} outputs; every layer needs at least one of each, or there is no weight "
                f"w^{i + 1}_jk whose chain rule to show"
            )
    for i, (below, above) in enumerate(zip(layers[:-1], layers[1:])):
        if above.in_features != below.out_features:
            raise ValueError(
                f"explain: layer {i + 1} takes {above.in_features} inputs but layer {i} gives {below.out_features} "
                f"outputs"
            )
    return layers


def cost_module(cost: QuadraticCost | CrossEntropyCost | str | None) -> QuadraticCost | CrossEntropyCost:
    """``None`` (the default), a QuadraticCost or CrossEntropyCost with reduction 'mean' or 'sum', or a
    QuadraticCost's reduction as a string."""
    if cost is None:
        return QuadraticCost()
    if isinstance(cost, str):
        if cost not in COST_REDUCTIONS:
            raise ValueError(
                f"explain: cost given as a string must be a QuadraticCost reduction, one of "
                f"{COST_REDUCTIONS}, got {cost!r}"
            )
        return QuadraticCost(cost)
    if not isinstance(cost, tuple(COST_MODULES.values())):
        raise TypeError(
            f"explain: cost must be a bp_torch.QuadraticCost (or 'mean' / 'sum') or a bp_torch.CrossEntropyCost, got "
            f"{type(cost).__name__}: equation (1.3), dC/da^L = a^L - y, is the derivative of the chapter's quadratic "
            f"cost, (3.2) that of the cross-entropy"
        )
    if cost.reduction not in COST_REDUCTIONS:
        raise ValueError(
            f"explain: the cost must reduce to one number, so its reduction must be one of "
            f"{COST_REDUCTIONS}, got {cost.reduction!r}"
        )
    return cost


def learning_rate(lr: float | Tensor) -> float:
    """``lr`` as a float: a real, finite number >= 0 (a Python or numpy scalar, or a one-element real tensor), checked
    as the library's sgd_step checks it (:func:`bp_torch._checks.learning_rate`), with explain's name in the error."""
    return _checks.learning_rate("explain", lr)


def tensor_argument(value: Tensor | Sequence[Any], like: Tensor, name: str) -> Tensor:
    """``value`` (x or y) detached, as a tensor of ``like``'s dtype and device if it is not a tensor yet; a 0-d
    tensor, or a lone number, raises ValueError (explain() needs a features dimension)."""
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        raise ValueError(f"explain: {name} must have at least 1 dimension (*, features), got a 0-d tensor")
    return value.detach()


def explain(
    model: nn.Module,
    x: Tensor | Sequence[Any],
    y: Tensor | Sequence[Any],
    cost: QuadraticCost | CrossEntropyCost | str | None = None,
) -> ExplainReport:
    """Each chain-rule factor of each layer, their product ``dC/dw^l`` and torch autograd's gradient beside it.

    Args:
        model: a :class:`bp_torch.SigmoidMLP`, a :class:`bp_torch.SigmoidLinear`, or an ``nn.Sequential`` of
            ``SigmoidLinear`` layers (anything else raises ``TypeError``).
        x: the input, ``(n_0,)`` for one sample or ``(*, n_0)`` for a batch (leading dimensions are flattened into
            samples); a tensor, or anything ``torch.as_tensor`` takes (then given the model's dtype).
        y: the target, shaped like the model's output.
        cost: the chapter's quadratic cost: ``None`` (default: ``QuadraticCost()``, the mean over the samples), a
            :class:`bp_torch.QuadraticCost` with reduction ``"mean"`` or ``"sum"``, or that reduction as a string;
            or a :class:`bp_torch.CrossEntropyCost` (``"mean"`` or ``"sum"``), whose ``dC/da^L`` is (3.2): the
            output layer then also shows ``delta^L = a^L - y`` (3.3) beside the quadratic cost's
            ``(a^L - y) sigma'(z^L)``, so that the cancellation of ``sigma'(z^L)`` is in the numbers. Other costs raise
            ``TypeError`` (each equation is one cost's derivative), and ``reduction="none"`` raises ``ValueError``
            (there is no single C to differentiate).

    Returns:
        An :class:`ExplainReport`. Nothing in the model changes: autograd runs on copies of its parameters.

    Example::

        >>> net = bp_torch.SigmoidMLP([2, 2, 2]).double()
        >>> report = bp_torch.explain(net, [0.05, 0.10], [0.01, 0.99])   # lists take the model's dtype
        >>> report.max_abs_diff < 1e-12
        True
    """
    layers = layers_of(model)
    cost_fn = cost_module(cost)
    cost_name = next(name for name, module in COST_MODULES.items() if isinstance(cost_fn, module))
    first = layers[0].weight
    x = tensor_argument(x, first, "x")
    y = tensor_argument(y, first, "y")
    if x.shape[-1] != layers[0].in_features:
        raise ValueError(f"explain: x must have shape (*, {layers[0].in_features}), got {list(x.shape)}")
    expected_y = [*x.shape[:-1], layers[-1].out_features]
    if list(y.shape) != expected_y:
        raise ValueError(f"explain: y must have shape {expected_y} (the model's output for x), got {list(y.shape)}")
    if x[..., 0].numel() == 0:
        raise ValueError("explain: x holds no samples")
    x = x.reshape(-1, x.shape[-1])  # one row per sample
    y = y.reshape(-1, y.shape[-1])

    # The reference: torch autograd through the model's own layers, on detached copies of the parameters (so
    # the model, its .grad and its requires_grad flags are untouched, and no_grad() around the call is harmless).
    weights = [layer.weight.detach().clone().requires_grad_() for layer in layers]
    biases = [None if layer.bias is None else layer.bias.detach().clone().requires_grad_() for layer in layers]
    with torch.enable_grad():
        activations = [x]
        for layer, weight, bias in zip(layers, weights, biases):
            params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
            activations.append(torch.func.functional_call(layer, params, (activations[-1],)))
        cost_value = cost_fn(activations[-1], y)
        wanted = weights + [b for b in biases if b is not None]
        grads = list(torch.autograd.grad(cost_value, wanted))
    autograd_w, bias_grads = grads[: len(weights)], iter(grads[len(weights) :])
    autograd_b = [None if b is None else next(bias_grads) for b in biases]

    with torch.no_grad():
        a = [t.detach() for t in activations]
        weights = [w.detach() for w in weights]
        biases = [None if b is None else b.detach() for b in biases]
        L = len(layers)
        # (1.3) dC/da^L = a^L - y, or (3.2) (a^L - y) / (a^L (1 - a^L)), from the cost's own backward (it carries
        # the 1/n of a mean over n samples).
        one = torch.ones((), dtype=y.dtype, device=y.device)
        cost_backward = cross_entropy_cost_backward if cost_name == "cross_entropy" else quadratic_cost_backward
        dC_da, _ = cost_backward(one, a[L], y, cost_fn.reduction, (True, False))
        reports = []
        dC_da_next = da_next_da = None
        for l in range(L, 0, -1):
            if l < L:
                # (2.3.2) da^(l+1)/da^l = sigma'(z^(l+1)) w^(l+1): the full Jacobian, one (n_(l+1), n_l) per sample
                da_next_da = sigmoid_prime_from_output(a[l + 1]).unsqueeze(-1) * weights[l]
                dC_da_next = dC_da  # (2.3.1)
                dC_da = torch.einsum("nj,njk->nk", dC_da_next, da_next_da)  # (2.3) = (2.3.1) x (2.3.2)
            dz_dw = a[l - 1]  # (1.1) / (2.1)
            da_dz = sigmoid_prime_from_output(a[l])  # (1.2) / (2.2)
            # dC/dw^l_jk = sum over samples of dz_k/dw * da_j/dz_j * dC/da_j: the chain rule, weight by weight
            dC_dw = torch.einsum("nk,nj,nj->jk", dz_dw, da_dz, dC_da)
            dC_db = None if biases[l - 1] is None else torch.einsum("nj,nj->j", da_dz, dC_da)  # dz/db = 1
            delta = quadratic_delta = None
            if l == L and cost_name == "cross_entropy":
                delta = dC_da * da_dz  # (3.3) = (3.2) x (1.2)
                quadratic_delta = quadratic_cost_backward(one, a[L], y, cost_fn.reduction, (True, False))[0] * da_dz
            reports.append(
                LayerReport(
                    index=l,
                    equations=_notation.equations(l, L, cost_name),
                    formula=_notation.product_formula(l, L, cost_name),
                    labels=_notation.labels(l, L, biases[l - 1] is not None, cost_fn.reduction, x.shape[0], cost_name),
                    z=F.linear(a[l - 1], weights[l - 1], biases[l - 1]),
                    a=a[l],
                    dz_dw=dz_dw,
                    da_dz=da_dz,
                    dC_da=dC_da,
                    dC_da_next=dC_da_next,
                    da_next_da=da_next_da,
                    dC_dw=dC_dw,
                    autograd_dC_dw=autograd_w[l - 1],
                    max_abs_diff=(dC_dw - autograd_w[l - 1]).abs().max().item(),
                    weight=weights[l - 1],
                    bias=biases[l - 1],
                    dC_db=dC_db,
                    autograd_dC_db=autograd_b[l - 1],
                    max_abs_diff_bias=None if dC_db is None else (dC_db - autograd_b[l - 1]).abs().max().item(),
                    delta=delta,
                    quadratic_delta=quadratic_delta,
                )
            )
    sizes = [layers[0].in_features] + [layer.out_features for layer in layers]
    return ExplainReport(
        x=x,
        y=y,
        sizes=sizes,
        reduction=cost_fn.reduction,
        cost=cost_value.item(),
        layers=reports[::-1],
        backend=_backend.backend(),
        cost_name=cost_name,
    )


def after_sgd_steps(report: ExplainReport, lr: float, steps: int) -> list[ExplainReport]:
    """``report``, then the report after each of ``steps`` steps of gradient descent on its ``x, y``.

    The steps are the library's own update, :func:`bp_torch.functional.sgd_step` (``W <- W - lr * dC/dW`` and the
    biases, on the report's cost), applied to a copy of the network the report describes, built from the parameters
    the report holds (copies already): the model it was made from is never touched, whatever happens here.
    """
    layers = [_layer_from(layer) for layer in report.layers]
    network = nn.Sequential(*layers)
    # sgd_step's C is the mean over the mini-batch; the report's may be the sum, whose gradient is n times larger
    step_lr = lr * report.n_samples if report.reduction == "sum" else lr
    cost = COST_MODULES[report.cost_name](report.reduction)
    reports = [report]
    for _ in range(steps):
        functional.sgd_step(
            report.x,
            report.y,
            [layer.weight for layer in layers],
            [layer.bias for layer in layers],
            step_lr,
            cost=report.cost_name,
        )
        reports.append(explain(network, report.x, report.y, cost=cost))
    return reports


def _layer_from(layer_report: LayerReport) -> SigmoidLinear:
    """A SigmoidLinear holding copies of the report's w^l and b^l. Made on the meta device and then filled, so
    nothing draws from torch's random generator: recording the steps leaves the caller's random stream alone."""
    out_features, in_features = layer_report.weight.shape
    layer = SigmoidLinear(
        in_features, out_features, bias=layer_report.bias is not None, device="meta", dtype=layer_report.weight.dtype
    ).to_empty(device=layer_report.weight.device)
    with torch.no_grad():
        layer.weight.copy_(layer_report.weight)
        if layer_report.bias is not None:
            layer.bias.copy_(layer_report.bias)
    return layer
