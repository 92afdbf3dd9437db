"""Back-propagation made visible: every chain-rule factor of the chapter, per layer, checked against torch autograd.

    report = bp_torch.explain(model, x, y)      # model: SigmoidMLP, SigmoidLinear, or nn.Sequential of SigmoidLinear
    print(report)                               # a readable table, each value labelled with its equation
    report.to_dict()                            # the same numbers as plain lists and floats (JSON-serialisable)
    report.plot("net.png")                      # the network, edges coloured and sized by |dC/dw|
    report.to_html("explain.html")              # the same, as a page you can click (and inline in Jupyter)

    python -m bp_torch.explain                  # the 2-2-2 worked example of Mazur (2015), every intermediate value
    python -m bp_torch.explain --sizes 3 4 4 2 --seed 1 --lr 0.5 --plot net.png
    python -m bp_torch.explain --checkpoint net.pt --input 0.1 0.9 --target 1 0
    python -m bp_torch.explain --html explain.html --steps 20

For layer ``l`` of ``L`` the chapter writes ``dC/dw^l = dz^l/dw^l * da^l/dz^l * dC/da^l`` with

    (1.1) / (2.1)  dz^l/dw^l = a^(l-1)
    (1.2) / (2.2)  da^l/dz^l = sigma'(z^l) = a^l (1 - a^l)
    (1.3)          dC/da^L   = a^L - y                                       (the output layer)
    (2.3)          dC/da^l   = dC/da^(l+1) (2.3.1)  x  da^(l+1)/da^l (2.3.2)  (a layer below it)
    (2.3.2)        da^(l+1)/da^l = sigma'(z^(l+1)) w^(l+1)

Their product is (A) for the output layer, ``a^(L-1) * sigma'(z^L) * (a^L - y)``, and (B) for the layer below it,
``a^(L-2) * sigma'(z^(L-1)) * (a^L - y) * sigma'(z^L) * w^L``; further down, (B) generalised gains one factor
``sigma'(z^k) * w^k`` per layer crossed. The explainer computes each factor as its own tensor (the Jacobian
``da^(l+1)/da^l`` in full, not folded into a "delta"), multiplies them out weight by weight, and sets the result
beside the gradient that torch autograd computes through the model itself.

The formulas it shares with the library come from :mod:`bp_torch.autograd` (``sigmoid_prime_from_output`` for
(1.2)/(2.2), ``quadratic_cost_backward`` for (1.3)); the reference gradient comes from ``torch.autograd.grad`` on
``cost(model(x), y)``, run on copies of the parameters, so the model and its ``.grad`` are left untouched.
"""
import argparse
import html
import math
import numbers
import os
import pathlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import _backend, functional
from ..autograd import quadratic_cost_backward, sigmoid_prime_from_output
from ..modules import QuadraticCost, SigmoidLinear, SigmoidMLP
from . import _page

__all__ = ["ExplainReport", "LayerReport", "explain", "main", "mazur_example"]

COST_REDUCTIONS = ("mean", "sum")


# --------------------------------------------------------------------------------------------------------------------
# Checking what explain() is given
# --------------------------------------------------------------------------------------------------------------------

def _layers_of(model):
    """The model's SigmoidLinear layers, first to last; a clear error for anything else."""
    if isinstance(model, SigmoidLinear):
        layers = [model]
    elif isinstance(model, nn.Sequential):
        layers = list(model)
    else:
        raise TypeError(
            f"explain: model must be a bp_torch.SigmoidMLP, a bp_torch.SigmoidLinear or an nn.Sequential of "
            f"SigmoidLinear layers (the chapter's a^l = sigma(w^l a^(l-1) + b^l)), got {type(model).__name__}")
    if not layers:
        raise ValueError("explain: the model has no layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, SigmoidLinear):
            raise TypeError(
                f"explain: layer {i} of the model is {type(layer).__name__}; every layer must be a "
                f"bp_torch.SigmoidLinear, whose derivative is the chapter's sigma'(z) = a (1 - a)")
    # Before any computation, so that both backends refuse a zero-width layer with this message (each would otherwise
    # fail in its own way, deep inside a reshape or a reduction)
    for i, layer in enumerate(layers):
        if layer.in_features == 0 or layer.out_features == 0:
            raise ValueError(
                f"explain: layer {i} of the model (w^{i + 1}) has {layer.in_features} inputs and "
                f"{layer.out_features} outputs; every layer needs at least one of each, or there is no weight "
                f"w^{i + 1}_jk whose chain rule to show")
    for i, (below, above) in enumerate(zip(layers[:-1], layers[1:])):
        if above.in_features != below.out_features:
            raise ValueError(
                f"explain: layer {i + 1} takes {above.in_features} inputs but layer {i} gives {below.out_features} "
                f"outputs")
    return layers


def _cost_module(cost):
    """``None`` (the default), a QuadraticCost with reduction 'mean' or 'sum', or the reduction as a string."""
    if cost is None:
        return QuadraticCost()
    if isinstance(cost, str):
        if cost not in COST_REDUCTIONS:
            raise ValueError(f"explain: cost given as a string must be a QuadraticCost reduction, one of "
                             f"{COST_REDUCTIONS}, got {cost!r}")
        return QuadraticCost(cost)
    if not isinstance(cost, QuadraticCost):
        raise TypeError(
            f"explain: cost must be a bp_torch.QuadraticCost (or 'mean' / 'sum'), got {type(cost).__name__}: "
            f"equation (1.3), dC/da^L = a^L - y, is the derivative of the chapter's quadratic cost only")
    if cost.reduction not in COST_REDUCTIONS:
        raise ValueError(f"explain: the cost must reduce to one number, so its reduction must be one of "
                         f"{COST_REDUCTIONS}, got {cost.reduction!r}")
    return cost


def _learning_rate(lr):
    """``lr`` as a float: a real, finite number >= 0 (a Python or numpy scalar, or a one-element real tensor), as
    the library's sgd_step takes it; anything else raises TypeError (not a number) or ValueError (nan, inf, < 0)."""
    if isinstance(lr, torch.Tensor):
        if lr.is_complex() or lr.dtype == torch.bool:
            raise TypeError(f"explain: lr must be a real number, got a {lr.dtype} tensor")
        if lr.numel() != 1:
            raise ValueError(f"explain: lr must be a single number, got a tensor of shape {list(lr.shape)}")
        value = lr.item()
    elif isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        value = lr
    else:
        raise TypeError(f"explain: lr must be a real number, got {type(lr).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"explain: lr must be a finite number >= 0, got {value}")
    return value


def _as_tensor(value, like, name):
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        raise ValueError(f"explain: {name} must have at least 1 dimension (*, features), got a 0-d tensor")
    return value.detach()


# --------------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------------

@dataclass(eq=False)  # tensors inside: == between reports would be ambiguous
class LayerReport:
    """One layer's chain rule. Per-sample tensors have a leading sample dimension ``n`` (flattened ``*``).

    Attributes:
        index: ``l``, from 1 (the first layer) to ``L`` (the output layer)
        equations: the equation label of each quantity below, e.g. ``{"dz_dw": "(1.1)", "dC_dw": "(A)", ...}``
        formula: the product ``dC/dw^l`` written as the chapter writes it, e.g. ``"a^1 * sigma'(z^2) * (a^2 - y)"``
        labels: each quantity below (and the update of ``w^l``, ``b^l``) written as the chapter writes it, e.g.
            ``{"dz_dw": "dz^2/dw^2 = a^1", "da_dz": "da^2/dz^2 = sigma'(z^2) = a^2(1-a^2)", ...}``: the row labels
            of the printed table and of the page
        z: ``z^l = w^l a^(l-1) + b^l``, ``(n, n_l)``
        a: ``a^l = sigma(z^l)``, ``(n, n_l)``
        dz_dw: (1.1) / (2.1), ``a^(l-1)``, ``(n, n_(l-1))``
        da_dz: (1.2) / (2.2), ``sigma'(z^l) = a^l (1 - a^l)``, ``(n, n_l)``
        dC_da: (1.3) for the output layer, (2.3) = (2.3.1) x (2.3.2) below it, ``(n, n_l)``
        dC_da_next: (2.3.1), ``dC/da^(l+1)``, ``(n, n_(l+1))``; ``None`` for the output layer
        da_next_da: (2.3.2), ``da^(l+1)/da^l = sigma'(z^(l+1)) w^(l+1)``, ``(n, n_(l+1), n_l)``; ``None`` for the
            output layer
        dC_dw: the product of the three factors, ``sum over samples of dz_dw[k] * da_dz[j] * dC_da[j]``, ``(n_l,
            n_(l-1))``: (A), (B) or (B) generalised
        autograd_dC_dw: ``dC/dw^l`` from torch autograd on ``cost(model(x), y)``
        max_abs_diff: ``max |dC_dw - autograd_dC_dw|``
        dC_db, autograd_dC_db, max_abs_diff_bias: the same for the bias (``dz/db = 1``), ``None`` without a bias
    """

    index: int
    equations: dict
    formula: str
    labels: dict
    z: torch.Tensor
    a: torch.Tensor
    dz_dw: torch.Tensor
    da_dz: torch.Tensor
    dC_da: torch.Tensor
    dC_da_next: torch.Tensor
    da_next_da: torch.Tensor
    dC_dw: torch.Tensor
    autograd_dC_dw: torch.Tensor
    max_abs_diff: float
    weight: torch.Tensor
    bias: torch.Tensor
    dC_db: torch.Tensor
    autograd_dC_db: torch.Tensor
    max_abs_diff_bias: float

    @property
    def is_output(self):
        return self.dC_da_next is None

    def to_dict(self):
        plain = {name: _plain(getattr(self, name)) for name in (
            "z", "a", "dz_dw", "da_dz", "dC_da", "dC_da_next", "da_next_da", "dC_dw", "autograd_dC_dw",
            "max_abs_diff", "weight", "bias", "dC_db", "autograd_dC_db", "max_abs_diff_bias")}
        return {"layer": self.index, "role": "output" if self.is_output else "hidden",
                "equations": dict(self.equations), "formula": self.formula, "labels": dict(self.labels), **plain}


@dataclass(eq=False)
class ExplainReport:
    """What :func:`explain` returns: the forward pass, the cost and one :class:`LayerReport` per layer.

    ``print(report)`` gives a table per layer; ``report.to_dict()`` plain data; ``report.plot(path)`` a picture;
    ``report.to_html(path)`` an interactive page (and Jupyter shows it inline); ``report.max_abs_diff`` the largest
    difference between a product of factors and autograd's gradient.
    """

    x: torch.Tensor
    y: torch.Tensor
    sizes: list
    reduction: str
    cost: float
    layers: list
    backend: str

    @property
    def n_samples(self):
        return self.x.shape[0]

    @property
    def max_abs_diff(self):
        diffs = [layer.max_abs_diff for layer in self.layers]
        diffs += [layer.max_abs_diff_bias for layer in self.layers if layer.max_abs_diff_bias is not None]
        return max(diffs)

    @property
    def dtype(self):
        return self.x.dtype

    def to_dict(self):
        """Plain data: nested lists of floats, floats, ints and strings (``json.dumps`` takes it as is)."""
        return {
            "sizes": list(self.sizes), "n_samples": self.n_samples, "dtype": str(self.dtype).replace("torch.", ""),
            "backend": self.backend, "cost": {"name": "QuadraticCost", "reduction": self.reduction,
                                              "formula": _cost_formula(len(self.layers)), "value": self.cost},
            "x": _plain(self.x), "y": _plain(self.y), "max_abs_diff": self.max_abs_diff,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def __str__(self):
        return "\n".join(self._lines())

    def __repr__(self):
        return (f"ExplainReport(sizes={self.sizes}, n_samples={self.n_samples}, cost={self.cost:.10g}, "
                f"max_abs_diff={self.max_abs_diff:.1e})")

    def _lines(self):
        L = len(self.layers)
        n = self.n_samples
        batch = f"{n} samples, one row each; " if n > 1 else ""
        lines = [f"network {'-'.join(map(str, self.sizes))}: {L} layer{'s' * (L > 1)}, {batch}"
                 f"{str(self.dtype).replace('torch.', '')}, backend {self.backend}", "",
                 "forward pass          z^l = w^l a^(l-1) + b^l,  a^l = sigma(z^l),  a^0 = x"]
        lines += _value_lines("a^0 = x", _per_sample(self.x))
        for layer in self.layers:
            l = layer.index
            lines += _value_lines(f"w^{l}", layer.weight)
            if layer.bias is not None:
                lines += _value_lines(f"b^{l}", layer.bias)
            lines += _value_lines(layer.labels["z"], _per_sample(layer.z))
            lines += _value_lines(layer.labels["a"], _per_sample(layer.a))
        average = "averaged over the samples" if self.reduction == "mean" else "summed over the samples"
        lines += ["", f"cost                  {_cost_formula(L)}" + (f", {average}" if n > 1 else "")]
        lines += _value_lines("y", _per_sample(self.y))
        lines += _value_lines("C", self.cost)
        for layer in reversed(self.layers):
            lines += [""] + _layer_lines(layer, L, n)
        lines += ["", f"largest |product of factors - autograd| over all layers: {self.max_abs_diff:.1e}"]
        return lines

    def plot(self, path, title=None):
        """Draw the network to ``path`` (PNG): nodes show their activations, edges are coloured and sized by
        ``|dC/dw|``, so the connections that "contributed more to the cost and are adjusted more" stand out.
        With a batch, nodes show the activations averaged over the samples. Uses matplotlib's Agg canvas."""
        _plot(self, path, title)
        return path

    def to_html(self, path=None, steps=_page.DEFAULT_STEPS, lr=_page.DEFAULT_LR, title=None):
        """The report as one interactive HTML page, self-contained (inline SVG, CSS and JavaScript; nothing is
        fetched from the network), with its numbers embedded as JSON.

        The page draws the network as :meth:`plot` does (nodes show ``a^l``, edges are coloured by ``|dC/dw|``).
        Clicking an edge ``w^l_jk`` shows its chain, ``dz/dw (1.1)/(2.1) * da/dz (1.2)/(2.2) * dC/da`` with
        ``dC/da`` from (1.3), or from (2.3) = (2.3.1) x (2.3.2) written out term by term, their product, autograd's
        gradient and the difference; clicking a node shows ``z``, ``a``, ``sigma'(z)`` and ``dC/da``. Step buttons
        walk the forward pass layer by layer, the cost, then the backward pass layer by layer and the update,
        highlighting what each step computes. A slider moves through ``steps`` SGD steps ``W <- W - lr * dC/dW``
        on ``x, y`` (the library's ``sgd_step``, on copies: no model changes), showing the weights, the cost and
        the gradients as the network learns.

        Every number on the page is computed here, in Python, by :func:`explain`; the page's script only shows
        them. Networks of more than 8 units in a layer or more than 5 layers of weights, and batches of more than 8
        samples, raise ``ValueError``: the page draws every unit, weight and sample.

        Args:
            path: where to write the page (UTF-8), if given.
            steps: the number of SGD steps the slider moves through, 0 to 200 (default 20).
            lr: the learning rate ``eta`` of those steps (default 0.5): a real, finite number >= 0 (a Python or
                numpy scalar, or a one-element tensor); others raise ``TypeError`` or ``ValueError``.
            title: the page's first line of description (default: ``"network 2-2-2"`` and so on).

        Returns:
            The page, as a string.
        """
        lr = _learning_rate(lr)
        _page.check_drawable(self.sizes, self.n_samples)
        _page.check_steps(steps)
        page = _page.render(_after_sgd_steps(self, lr, steps), lr, title)
        if path is not None:
            pathlib.Path(path).write_text(page, encoding="utf-8")
        return page

    def _repr_html_(self):
        """Jupyter's view: the page of :meth:`to_html` in an iframe; for a network too large to draw, the short
        repr and the reason."""
        try:
            _page.check_drawable(self.sizes, self.n_samples)
        except ValueError as err:
            return f"<pre>{html.escape(repr(self))}\n{html.escape(str(err))}</pre>"
        return _page.notebook_frame(self.to_html())


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().tolist()
    return value


def _fmt_number(v):
    return f"{v:.10g}"


def _fmt_tensor(t):
    if not isinstance(t, torch.Tensor):
        return _fmt_number(t)
    if t.dim() == 0:
        return _fmt_number(t.item())
    return "[" + ", ".join(_fmt_tensor(row) for row in t) + "]"


LABEL_WIDTH = 50


def _value_lines(label, value, eq=""):
    """``  (eq)  label   value``; a matrix, or one row per sample, continues on aligned lines."""
    head = f"  {eq:<8}{label}"
    pad = " " * (LABEL_WIDTH + 2)
    if isinstance(value, torch.Tensor) and value.dim() >= 2:
        rows = [_fmt_tensor(row) for row in value]
        out = [f"{head:<{LABEL_WIDTH}}  [{rows[0]}" + ("," if len(rows) > 1 else "]")]
        for i, row in enumerate(rows[1:], 1):
            out.append(f"{pad} {row}" + ("," if i < len(rows) - 1 else "]"))
        return out
    return [f"{head:<{LABEL_WIDTH}}  {_fmt_tensor(value)}"]


def _per_sample(t):
    """One sample: its vector (or matrix); a batch: the tensor as is, one row (or matrix) per sample."""
    return t[0] if t.shape[0] == 1 else t


def _layer_lines(layer, L, n):
    l, eq, label = layer.index, layer.equations, layer.labels
    role = "output layer" if layer.is_output else "hidden layer"
    lines = [f"layer {l} of {L} ({role})   dC/dw^{l} = dz^{l}/dw^{l} * da^{l}/dz^{l} * dC/da^{l}"]
    lines += _value_lines(label["dz_dw"], _per_sample(layer.dz_dw), eq["dz_dw"])
    lines += _value_lines(label["da_dz"], _per_sample(layer.da_dz), eq["da_dz"])
    if not layer.is_output:
        lines += _value_lines(label["dC_da_next"], _per_sample(layer.dC_da_next), eq["dC_da_next"])
        lines += _value_lines(label["da_next_da"], _per_sample(layer.da_next_da), eq["da_next_da"])
    lines += _value_lines(label["dC_da"], _per_sample(layer.dC_da), eq["dC_da"])
    summed = ", summed over the samples" if n > 1 else ""
    lines.append(f"  {eq['dC_dw']:<8}{label['dC_dw']}{summed}")
    f1, f2, f3 = eq["dz_dw"], eq["da_dz"], ("(1.3)" if layer.is_output else "(2.3)")
    if n == 1:
        header = f"  {'j':>4} {'k':>3}  {f1:>16} {f2:>16} {f3:>16}   {'product':>16} {'autograd':>16}  {'|diff|':>7}"
    else:
        header = f"  {'j':>4} {'k':>3}  {'product':>16} {'autograd':>16}  {'|diff|':>7}"
    lines.append(header)
    for j in range(layer.dC_dw.shape[0]):
        for k in range(layer.dC_dw.shape[1]):
            product, reference = layer.dC_dw[j, k].item(), layer.autograd_dC_dw[j, k].item()
            cells = f"  {j + 1:>4} {k + 1:>3}  "
            if n == 1:
                cells += (f"{layer.dz_dw[0, k].item():>16.10g} {layer.da_dz[0, j].item():>16.10g} "
                          f"{layer.dC_da[0, j].item():>16.10g}   ")
            lines.append(cells + f"{product:>16.10g} {reference:>16.10g}  {abs(product - reference):>7.1e}")
    lines.append(f"  {'':8}max |dC/dw^{l} - autograd| = {layer.max_abs_diff:.1e}")
    if layer.dC_db is not None:
        lines += _value_lines(label["dC_db"], layer.dC_db)
        lines += _value_lines(f"autograd dC/db^{l}", layer.autograd_dC_db)
        lines.append(f"  {'':8}max |dC/db^{l} - autograd| = {layer.max_abs_diff_bias:.1e}")
    return lines


# --------------------------------------------------------------------------------------------------------------------
# explain()
# --------------------------------------------------------------------------------------------------------------------

def _product_formula(l, L):
    """(A) for l = L, (B) for l = L - 1, and (B) generalised further down, written as the chapter writes them."""
    formula = f"a^{l - 1} * sigma'(z^{l}) * (a^{L} - y)"
    for k in range(L, l, -1):
        formula += f" * sigma'(z^{k}) * w^{k}"
    return formula


def _labels(l, L, bias, reduction, n):
    """Each quantity of layer ``l`` written as the chapter writes it (see LayerReport.labels)."""
    labels = {
        "z": f"z^{l} = w^{l} a^{l - 1} + b^{l}" if bias else f"z^{l} = w^{l} a^{l - 1}",
        "a": f"a^{l} = sigma(z^{l})",
        "dz_dw": f"dz^{l}/dw^{l} = a^{l - 1}",
        "da_dz": f"da^{l}/dz^{l} = sigma'(z^{l}) = a^{l}(1-a^{l})",
        "dC_dw": f"dC/dw^{l} = {_product_formula(l, L)}",
        "update_w": f"w^{l} <- w^{l} - eta * dC/dw^{l}",
    }
    if bias:
        labels["dC_db"] = f"dC/db^{l} = 1 * sigma'(z^{l}) * dC/da^{l}"
        labels["update_b"] = f"b^{l} <- b^{l} - eta * dC/db^{l}"
    if l == L:
        mean = f" (/{n}: C is a mean)" if reduction == "mean" and n > 1 else ""
        labels["dC_da"] = f"dC/da^{l} = a^{l} - y{mean}"
    else:
        labels["dC_da_next"] = f"dC/da^{l + 1}"
        labels["da_next_da"] = f"da^{l + 1}/da^{l} = sigma'(z^{l + 1}) w^{l + 1}"
        labels["dC_da"] = f"dC/da^{l} = (2.3.1) x (2.3.2)"
    return labels


def _cost_formula(L):
    return f"C = 1/2 sum_j (y_j - a^{L}_j)^2"


def _equations(l, L):
    if l == L:
        return {"dz_dw": "(1.1)", "da_dz": "(1.2)", "dC_da": "(1.3)", "dC_dw": "(A)"}
    return {"dz_dw": "(2.1)", "da_dz": "(2.2)", "dC_da": "(2.3)", "dC_da_next": "(2.3.1)",
            "da_next_da": "(2.3.2)", "dC_dw": "(B)" if l == L - 1 else "(B) gen."}


def explain(model, x, y, cost=None):
    """Each chain-rule factor of each layer, their product ``dC/dw^l`` and torch autograd's gradient beside it.

    Args:
        model: a :class:`bp_torch.SigmoidMLP`, a :class:`bp_torch.SigmoidLinear`, or an ``nn.Sequential`` of
            ``SigmoidLinear`` layers (anything else raises ``TypeError``).
        x: the input, ``(n_0,)`` for one sample or ``(*, n_0)`` for a batch (leading dimensions are flattened into
            samples); a tensor, or anything ``torch.as_tensor`` takes (then given the model's dtype).
        y: the target, shaped like the model's output.
        cost: the chapter's quadratic cost: ``None`` (default: ``QuadraticCost()``, the mean over the samples), a
            :class:`bp_torch.QuadraticCost` with reduction ``"mean"`` or ``"sum"``, or that reduction as a string.
            Other costs raise ``TypeError`` (equation (1.3) is the quadratic cost's derivative), and
            ``reduction="none"`` raises ``ValueError`` (there is no single C to differentiate).

    Returns:
        An :class:`ExplainReport`. Nothing in the model changes: autograd runs on copies of its parameters.

    Example::

        >>> net = bp_torch.SigmoidMLP([2, 2, 2]).double()
        >>> report = bp_torch.explain(net, torch.tensor([0.05, 0.10]), torch.tensor([0.01, 0.99]))
        >>> report.max_abs_diff < 1e-12
        True
    """
    layers = _layers_of(model)
    cost_module = _cost_module(cost)
    first = layers[0].weight
    x = _as_tensor(x, first, "x")
    y = _as_tensor(y, first, "y")
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
        cost_value = cost_module(activations[-1], y)
        wanted = weights + [b for b in biases if b is not None]
        grads = list(torch.autograd.grad(cost_value, wanted))
    autograd_w, autograd_b = grads[:len(weights)], iter(grads[len(weights):])
    autograd_b = [None if b is None else next(autograd_b) for b in biases]

    with torch.no_grad():
        a = [t.detach() for t in activations]
        weights = [w.detach() for w in weights]
        biases = [None if b is None else b.detach() for b in biases]
        L = len(layers)
        # (1.3) dC/da^L = a^L - y, from the cost's own backward (it carries the 1/n of a mean over n samples).
        dC_da, _ = quadratic_cost_backward(torch.ones((), dtype=y.dtype, device=y.device), a[L], y,
                                           cost_module.reduction, (True, False))
        reports = []
        dC_da_next = da_next_da = None
        for l in range(L, 0, -1):
            if l < L:
                # (2.3.2) da^(l+1)/da^l = sigma'(z^(l+1)) w^(l+1): the full Jacobian, one (n_(l+1), n_l) per sample
                da_next_da = sigmoid_prime_from_output(a[l + 1]).unsqueeze(-1) * weights[l]
                dC_da_next = dC_da                                                   # (2.3.1)
                dC_da = torch.einsum("nj,njk->nk", dC_da_next, da_next_da)           # (2.3) = (2.3.1) x (2.3.2)
            dz_dw = a[l - 1]                                                          # (1.1) / (2.1)
            da_dz = sigmoid_prime_from_output(a[l])                                   # (1.2) / (2.2)
            # dC/dw^l_jk = sum over samples of dz_k/dw * da_j/dz_j * dC/da_j: the chain rule, weight by weight
            dC_dw = torch.einsum("nk,nj,nj->jk", dz_dw, da_dz, dC_da)
            dC_db = None if biases[l - 1] is None else torch.einsum("nj,nj->j", da_dz, dC_da)  # dz/db = 1
            reports.append(LayerReport(
                index=l, equations=_equations(l, L), formula=_product_formula(l, L),
                labels=_labels(l, L, biases[l - 1] is not None, cost_module.reduction, x.shape[0]),
                z=F.linear(a[l - 1], weights[l - 1], biases[l - 1]), a=a[l],
                dz_dw=dz_dw, da_dz=da_dz, dC_da=dC_da, dC_da_next=dC_da_next, da_next_da=da_next_da,
                dC_dw=dC_dw, autograd_dC_dw=autograd_w[l - 1],
                max_abs_diff=(dC_dw - autograd_w[l - 1]).abs().max().item(),
                weight=weights[l - 1], bias=biases[l - 1], dC_db=dC_db, autograd_dC_db=autograd_b[l - 1],
                max_abs_diff_bias=None if dC_db is None else (dC_db - autograd_b[l - 1]).abs().max().item()))
    sizes = [layers[0].in_features] + [layer.out_features for layer in layers]
    return ExplainReport(x=x, y=y, sizes=sizes, reduction=cost_module.reduction, cost=cost_value.item(),
                         layers=reports[::-1], backend=_backend.backend())


def _after_sgd_steps(report, lr, steps):
    """``report``, then the report after each of ``steps`` steps of gradient descent on its ``x, y``.

    The steps are the library's own update, :func:`bp_torch.functional.sgd_step` (``W <- W - lr * dC/dW`` and the
    biases), applied to a copy of the network the report describes, built from the parameters the report holds
    (copies already): the model it was made from is never touched, whatever happens here.
    """
    network = nn.Sequential(*(_layer_from(layer) for layer in report.layers))
    # sgd_step's C is the mean over the mini-batch; the report's may be the sum, whose gradient is n times larger
    step_lr = lr * report.n_samples if report.reduction == "sum" else lr
    reports = [report]
    for _ in range(steps):
        functional.sgd_step(report.x, report.y, [layer.weight for layer in network],
                            [layer.bias for layer in network], step_lr)
        reports.append(explain(network, report.x, report.y, cost=report.reduction))
    return reports


def _layer_from(layer_report):
    """A SigmoidLinear holding copies of the report's w^l and b^l. Made on the meta device and then filled, so
    nothing draws from torch's random generator: recording the steps leaves the caller's random stream alone."""
    out_features, in_features = layer_report.weight.shape
    layer = SigmoidLinear(in_features, out_features, bias=layer_report.bias is not None, device="meta",
                          dtype=layer_report.weight.dtype).to_empty(device=layer_report.weight.device)
    with torch.no_grad():
        layer.weight.copy_(layer_report.weight)
        if layer_report.bias is not None:
            layer.bias.copy_(layer_report.bias)
    return layer


# --------------------------------------------------------------------------------------------------------------------
# The picture
# --------------------------------------------------------------------------------------------------------------------

def _plot_labels_edges(sizes):
    """Whether the picture writes each gradient on its edge: small networks only, where the labels stay legible."""
    return sum(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:])) <= 24


def _plot(report, path, title):
    _need_matplotlib()  # optional for the library itself: bp_torch[plot]
    import matplotlib
    import numpy as np
    from matplotlib import cm, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    sizes, L = report.sizes, len(report.layers)
    tallest = max(sizes)
    fig = Figure(figsize=(2.6 * (L + 1) + 1.5, max(3.0, 0.9 * min(tallest, 12) + 1.5)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()

    def positions(size):
        spread = (size - 1) / max(tallest - 1, 1)
        return [0.5 if size == 1 else 0.5 + spread * (0.5 - i / (size - 1)) for i in range(size)]

    ys = [positions(n) for n in sizes]
    grads = [layer.dC_dw.abs().double() for layer in report.layers]
    biggest = max(g.max().item() for g in grads) or 1.0
    norm = colors.Normalize(vmin=0.0, vmax=biggest)
    # plasma_r without its palest quarter, so that the weakest edges still show on white
    cmap = colors.ListedColormap(matplotlib.colormaps["plasma_r"](np.linspace(0.25, 1.0, 256)))
    segments, widths, edge_colours, labels = [], [], [], []
    for l, g in enumerate(grads, 1):
        for j in range(g.shape[0]):
            for k in range(g.shape[1]):
                value = g[j, k].item()
                segments.append([(l - 1, ys[l - 1][k]), (l, ys[l][j])])
                widths.append(0.6 + 7.0 * value / biggest)
                edge_colours.append(cmap(norm(value)))
                labels.append((l, j, k, report.layers[l - 1].dC_dw[j, k].item()))
    order = sorted(range(len(segments)), key=lambda i: widths[i])  # the strongest edges on top
    ax.add_collection(LineCollection([segments[i] for i in order], linewidths=[widths[i] for i in order],
                                     colors=[edge_colours[i] for i in order], zorder=1))
    labels_drawn = _plot_labels_edges(sizes)
    if labels_drawn:  # small networks: write each gradient on its edge
        for l, j, k, value in labels:
            t = 0.3 if (j + k) % 2 == 0 else 0.7  # stagger the labels of crossing edges
            px, py = l - 1 + t, ys[l - 1][k] + t * (ys[l][j] - ys[l - 1][k])
            ax.text(px, py, f"{value:.3g}", fontsize=7, ha="center", va="center", zorder=3,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))

    activations = [report.x.mean(0)] + [layer.a.mean(0) for layer in report.layers]
    node_size = 1400 if tallest <= 12 else max(20, 20000 // tallest)
    for l, (act, col) in enumerate(zip(activations, ys)):
        values = act.double().tolist()
        ax.scatter([l] * len(col), col, s=node_size, c=values, cmap="Greys", vmin=0.0, vmax=1.0,
                   edgecolors="black", linewidths=1.0, zorder=2)
        if tallest <= 12:
            for v, py in zip(values, col):
                ax.text(l, py, f"{v:.4g}", fontsize=8, ha="center", va="center", zorder=4,
                        color="white" if v > 0.55 else "black")
        name = "x = a^0" if l == 0 else f"a^{l}"
        ax.text(l, 1.13, name, ha="center", va="bottom", fontsize=10)
    if tallest <= 12:
        for v, py in zip(report.y.mean(0).double().tolist(), ys[-1]):
            ax.text(L + 0.22, py, f"y = {v:.4g}", fontsize=8, ha="left", va="center")
    ax.set_xlim(-0.4, L + 0.6)
    ax.set_ylim(-0.2, 1.22)  # room below the lowest nodes, whose circles reach about 0.17 under their centres
    mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
    # the colour and width show the size of each gradient; the numbers written on the edges keep their sign
    fig.colorbar(mappable, ax=ax, fraction=0.04, pad=0.02, label="|dC/dw| (edge colour and width)")
    batch = f", activations averaged over {report.n_samples} samples" if report.n_samples > 1 else ""
    signed = "\nthe numbers on the edges: dC/dw, with its sign" if labels_drawn else ""
    ax.set_title((title or f"network {'-'.join(map(str, sizes))}, C = {report.cost:.6g}{batch}") + signed,
                 fontsize=10)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")


# --------------------------------------------------------------------------------------------------------------------
# The command line: python -m bp_torch.explain
# --------------------------------------------------------------------------------------------------------------------

def mazur_example(dtype=torch.float64):
    """The 2-2-2 worked example of Matt Mazur, "A Step by Step Backpropagation Example" (2015).

    Returns ``(model, x, y, lr)``. Mazur's ``w1..w4`` are ``w^1`` read row by row (``w^1 = [[w1, w2], [w3, w4]]``:
    ``net_h1 = w1 i1 + w2 i2 + b1``), ``w5..w8`` are ``w^2`` row by row; his ``b1`` is the hidden bias, ``b2`` the
    output bias; ``out_h``, ``out_o`` are ``a^1``, ``a^2``; ``E_total`` is ``C``.
    """
    model = SigmoidMLP([2, 2, 2], dtype=dtype)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=dtype))
        model[0].bias.fill_(0.35)
        model[1].weight.copy_(torch.tensor([[0.40, 0.45], [0.50, 0.55]], dtype=dtype))
        model[1].bias.fill_(0.60)
    x = torch.tensor([0.05, 0.10], dtype=dtype)
    y = torch.tensor([0.01, 0.99], dtype=dtype)
    return model, x, y, 0.5


TRAIN_DIGITS_FORMAT = "bp_torch.train_digits/1"   # the "format" of a checkpoint from examples/train_digits.py --save


class UsageError(ValueError):
    """A mistake on the command line (a missing file, a file that is not a checkpoint, a bad shape): one line."""


def _load_checkpoint(path, dtype):
    """``(model, description)``: a SigmoidMLP with the weights saved in ``path``, which holds either

    * the checkpoint that ``examples/train_digits.py --save`` writes: a dict with ``"format"``, ``"sizes"`` and a
      ``"state_dict"`` keyed for ``nn.Sequential(nn.Linear, nn.Sigmoid, ...)`` (``'0.weight'``, ``'2.weight'``, ...);
    * a state_dict saved with ``torch.save``: a SigmoidMLP's (``'0.weight'``, ``'0.bias'``, ``'1.weight'``, ...) or a
      plain ``nn.Sequential`` of ``nn.Linear`` and ``nn.Sigmoid``'s (``'0.weight'``, ``'2.weight'``, ...).

    Anything else raises UsageError, in one line that says what the file holds.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise UsageError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # torch.load's errors for a file that is not one it wrote are of many kinds
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UsageError(f"{path} is not a checkpoint that torch.load can read ({type(err).__name__}: "
                         f"{first_line[:120]})") from None
    expected = ("expected the checkpoint of examples/train_digits.py --save or a SigmoidMLP state_dict "
                "(keys '0.weight', '0.bias', '1.weight', ...)")
    description = f"weights from {path}"
    if isinstance(saved, dict) and saved.get("format") == TRAIN_DIGITS_FORMAT:
        state = saved.get("state_dict")
        description += f" (train_digits.py --save, {saved.get('dataset', '?')} network {saved.get('sizes')})"
    else:
        state = saved
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}; {expected}")
    # The layers are the modules that have a weight, in order: 0, 1, 2, ... (a SigmoidMLP) or 0, 2, 4, ... (an
    # nn.Sequential with an nn.Sigmoid after each nn.Linear)
    indices = sorted(int(key.split(".")[0]) for key in state
                     if isinstance(key, str) and key.endswith(".weight") and key.split(".")[0].isdigit())
    if not indices:
        keys = sorted(map(str, state))
        raise UsageError(f"{path} holds a dict with keys {keys[:6]}{' ...' if len(keys) > 6 else ''}; {expected}")
    weights = [state[f"{i}.weight"] for i in indices]
    biases = [state.get(f"{i}.bias") for i in indices]
    for i, w, b in zip(indices, weights, biases):
        if not isinstance(w, torch.Tensor) or w.dim() != 2 or 0 in w.shape:
            shape = list(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise UsageError(f"{path}: '{i}.weight' must be a non-empty (out, in) matrix, got {shape}")
        if b is not None and (not isinstance(b, torch.Tensor) or list(b.shape) != [w.shape[0]]):
            shape = list(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise UsageError(f"{path}: '{i}.bias' must have shape {[w.shape[0]]} like '{i}.weight''s rows, got {shape}")
    if any(b is None for b in biases) and not all(b is None for b in biases):
        raise UsageError(f"{path}: some layers have a bias and some have none; a SigmoidMLP has one on every layer or "
                         f"on none")
    for (i, below), (j, above) in zip(zip(indices, weights), zip(indices[1:], weights[1:])):
        if above.shape[1] != below.shape[0]:
            raise UsageError(f"{path}: '{j}.weight' takes {above.shape[1]} inputs but '{i}.weight' gives "
                             f"{below.shape[0]} outputs")
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    model = SigmoidMLP(sizes, bias=biases[0] is not None, dtype=dtype)
    with torch.no_grad():
        for layer, w, b in zip(model, weights, biases):
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(b)
    return model, description


def _need_matplotlib():
    """Raise ImportError, naming the extra that installs it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(f"explain: plotting needs matplotlib, which is not installed ({err}); "
                          f"pip install 'bp_torch[plot]' (or pip install matplotlib) adds it") from None


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m bp_torch.explain",
        description="Back-propagation term by term: each factor of the chapter's chain rule, labelled with its "
                    "equation, checked against torch autograd, then one step of gradient descent. With no options: "
                    "the 2-2-2 worked example of Mazur, 'A Step by Step Backpropagation Example' (2015).")
    p.add_argument("--sizes", type=int, nargs="+", metavar="N",
                   help="a random SigmoidMLP with these layer sizes, input first (e.g. --sizes 3 4 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights, input and target (default 0)")
    p.add_argument("--lr", "--eta", type=float, default=None, dest="lr",
                   help="learning rate eta of the gradient-descent step (default 0.5)")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="load the weights from the checkpoint of examples/train_digits.py --save, or from a "
                        "SigmoidMLP state_dict saved with torch.save")
    p.add_argument("--input", type=float, nargs="+", metavar="X", help="the input x (default: random, or Mazur's)")
    p.add_argument("--target", type=float, nargs="+", metavar="Y", help="the target y (default: random, or Mazur's)")
    p.add_argument("--backend", choices=_backend.available_backends(), help="bp_torch backend (default: active)")
    p.add_argument("--plot", metavar="PATH.png", help="draw the network, edges coloured and sized by |dC/dw| "
                                                      "(needs matplotlib: pip install 'bp_torch[plot]')")
    p.add_argument("--html", metavar="PATH.html",
                   help="write an interactive page: click an edge for its chain rule, step through the forward and "
                        f"backward passes, slide through SGD steps (networks up to {_page.MAX_UNITS} units per layer "
                        f"and {_page.MAX_LAYERS} layers)")
    p.add_argument("--steps", type=_steps,
                   help=f"SGD steps the page records, 0 to {_page.MAX_STEPS} (default {_page.DEFAULT_STEPS})")
    return p


def _write(method, path, **kwargs):
    try:
        method(path, **kwargs)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    except ValueError as err:  # the page refuses what it cannot show, such as an inf or NaN from --input
        raise UsageError(f"{path} not written: {str(err).removeprefix('explain: ')}") from None


def _steps(text):
    try:
        steps = int(text)
        _page.check_steps(steps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {_page.MAX_STEPS}, got {text!r}") from None
    return steps


def main(argv=None):
    """``python -m bp_torch.explain``. A mistake on the command line (a missing file, a file that is not a
    checkpoint, a shape that does not fit the network, no matplotlib for --plot) ends in one line,
    ``python -m bp_torch.explain: error: ...``, and exit status 2, as argparse ends its own."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except (UsageError, ImportError) as err:
        parser.exit(2, f"{parser.prog}: error: {str(err).removeprefix('explain: ')}\n")


def _run(parser, args):
    if args.steps is not None and not args.html:
        parser.error("--steps sets the SGD steps of the --html page; give --html PATH.html too")
    steps = _page.DEFAULT_STEPS if args.steps is None else args.steps
    if args.lr is not None:
        try:
            _learning_rate(args.lr)
        except ValueError:
            raise UsageError(f"--lr must be a finite number >= 0, got {args.lr}") from None
    for option, path in (("--plot", args.plot), ("--html", args.html)):
        # before anything is printed: an output that cannot be written is known now
        folder = os.path.dirname(path) if path else ""
        if folder and not os.path.isdir(folder):
            raise UsageError(f"{option} {path}: there is no folder {folder}")
    if args.plot:
        _need_matplotlib()
    if args.backend:
        _backend.set_backend(args.backend)
    dtype = torch.float64
    torch.manual_seed(args.seed)
    mazur = args.sizes is None and args.checkpoint is None
    if mazur:
        model, x, y, lr = mazur_example(dtype)
        source = "the worked example of Mazur, 'A Step by Step Backpropagation Example' (2015)"
    elif args.checkpoint:
        model, source = _load_checkpoint(args.checkpoint, dtype)
        if args.sizes is not None and list(args.sizes) != model.sizes:
            raise UsageError(f"--sizes {' '.join(map(str, args.sizes))} disagrees with the checkpoint's sizes "
                             f"{model.sizes}")
    else:
        try:
            model = SigmoidMLP(args.sizes, dtype=dtype)
        except ValueError as err:
            raise UsageError(f"--sizes: {err}") from None
        source = f"random weights (nn.Linear's initialisation), seed {args.seed}"
    if not mazur:
        x = torch.rand(model.sizes[0], dtype=dtype)
        y = torch.rand(model.sizes[-1], dtype=dtype)
        lr = 0.5
    for option, values, n, what in (("--input", args.input, model.sizes[0], "inputs"),
                                    ("--target", args.target, model.sizes[-1], "outputs")):
        if values is not None and len(values) != n:
            raise UsageError(f"{option} has {len(values)} value{'s' * (len(values) != 1)}, but network "
                             f"{model.sizes} has {n} {what}")
    if args.input is not None:
        x = torch.tensor(args.input, dtype=dtype)
    if args.target is not None:
        y = torch.tensor(args.target, dtype=dtype)
    if args.lr is not None:
        lr = args.lr
    if args.html:
        try:  # before the report is printed: a network the page cannot draw is a usage error, in one line
            _page.check_drawable(model.sizes, n_samples=1, elsewhere="without --html, the command (and --plot) shows")
        except ValueError as err:
            raise UsageError(str(err)) from None
    try:
        report = explain(model, x, y)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None

    print("bp_torch.explain: back-propagation term by term, each factor labelled with its equation")
    print(f"{source}; one sample, quadratic cost, eta = {lr:g}")
    if mazur:
        print("Mazur's names: i1, i2 = a^0; out_h1, out_h2 = a^1; out_o1, out_o2 = a^2; E_total = C;")
        print("               w^1 = [[w1, w2], [w3, w4]], w^2 = [[w5, w6], [w7, w8]]; b^1 = b1, b^2 = b2")
    print(report)

    # One step of gradient descent with the library's own update (bp_torch.functional.sgd_step): W <- W - eta dC/dW
    cost_before = model.sgd_step(report.x, report.y, lr).item()
    with torch.no_grad():
        cost_after = QuadraticCost()(model(report.x), report.y).item()
    print("")
    print(f"gradient descent      W <- W - eta * dC/dW,  b <- b - eta * dC/db,  eta = {lr:g}")
    for l, layer in enumerate(model, 1):
        for line in _value_lines(f"w^{l} <- w^{l} - eta * dC/dw^{l}", layer.weight.detach()):
            print(line)
    for l, layer in enumerate(model, 1):
        if layer.bias is not None:
            for line in _value_lines(f"b^{l} <- b^{l} - eta * dC/db^{l}", layer.bias.detach()):
                print(line)
    print(f"  {'':8}{'C before the step':<{LABEL_WIDTH - 10}}  {_fmt_number(cost_before)}")
    print(f"  {'':8}{'C after the step':<{LABEL_WIDTH - 10}}  {_fmt_number(cost_after)}")
    if mazur:
        print("  (Mazur updates the weights only and keeps the biases; the weights above are the same either way.)")
    if args.plot:
        _write(report.plot, args.plot)
        print(f"\nwrote {args.plot}: nodes show a^l, edges are coloured and sized by |dC/dw| (before the step)"
              + ("; the numbers on the edges are dC/dw, with their signs" if _plot_labels_edges(report.sizes) else ""))
    if args.html:
        # From the report's own copies of the parameters, as they were before the step above
        _write(report.to_html, args.html, steps=steps, lr=lr, title=source)
        print(f"\nwrote {args.html}: click an edge or a node; step through the forward and backward passes; "
              f"slide through {steps} SGD steps (open it in a browser)")
    return 0
