"""The table that ``print(report)`` shows: the forward pass, the cost, then each layer's chain rule from the output
layer down, every value labelled with its equation, and autograd's gradient beside each product of factors.

One line per value: ``  (eq)    label                      value``, the values starting at column
:data:`LABEL_WIDTH` + 2; a matrix, or one row per sample of a batch, continues on aligned lines below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from . import _notation

if TYPE_CHECKING:  # for the annotations only: _report imports this module
    from ._report import ExplainReport, LayerReport

__all__ = ["LABEL_WIDTH", "format_number", "format_report", "value_lines"]

LABEL_WIDTH = 50


def format_report(report: ExplainReport) -> str:
    """The whole table, as ``print(report)`` shows it."""
    L = len(report.layers)
    n = report.n_samples
    batch = f"{n} samples, one row each; " if n > 1 else ""
    lines = [
        f"network {'-'.join(map(str, report.sizes))}: {L} layer{'s' * (L > 1)}, {batch}"
        f"{str(report.dtype).replace('torch.', '')}, backend {report.backend}",
        "",
        "forward pass          z^l = w^l a^(l-1) + b^l,  a^l = sigma(z^l),  a^0 = x",
    ]
    lines += value_lines("a^0 = x", _per_sample(report.x))
    for layer in report.layers:
        l = layer.index
        lines += value_lines(f"w^{l}", layer.weight)
        if layer.bias is not None:
            lines += value_lines(f"b^{l}", layer.bias)
        lines += value_lines(layer.labels["z"], _per_sample(layer.z))
        lines += value_lines(layer.labels["a"], _per_sample(layer.a))
    average = "averaged over the samples" if report.reduction == "mean" else "summed over the samples"
    lines += [
        "",
        f"cost                  {_notation.cost_formula(L, report.cost_name)}" + (f", {average}" if n > 1 else ""),
    ]
    lines += value_lines("y", _per_sample(report.y))
    lines += value_lines("C", report.cost)
    for layer in reversed(report.layers):  # back-propagation's order: the output layer first
        lines += [""] + _layer_lines(layer, L, n)
    lines += ["", f"largest |product of factors - autograd| over all layers: {report.max_abs_diff:.1e}"]
    return "\n".join(lines)


def format_number(v: float) -> str:
    """A number as the table writes it: ten significant digits."""
    return f"{v:.10g}"


def value_lines(label: str, value: Tensor | float, eq: str = "") -> list[str]:
    """``  (eq)  label   value``; a matrix, or one row per sample, continues on aligned lines."""
    head = f"  {eq:<8}{label}"
    pad = " " * (LABEL_WIDTH + 2)
    if isinstance(value, Tensor) and value.dim() >= 2:
        rows = [_format_tensor(row) for row in value]
        out = [f"{head:<{LABEL_WIDTH}}  [{rows[0]}" + ("," if len(rows) > 1 else "]")]
        for i, row in enumerate(rows[1:], 1):
            out.append(f"{pad} {row}" + ("," if i < len(rows) - 1 else "]"))
        return out
    return [f"{head:<{LABEL_WIDTH}}  {_format_tensor(value)}"]


def _format_tensor(t: Tensor | float) -> str:
    if not isinstance(t, Tensor):
        return format_number(t)
    if t.dim() == 0:
        return format_number(t.item())
    return "[" + ", ".join(_format_tensor(row) for row in t) + "]"


def _per_sample(t: Tensor) -> Tensor:
    """One sample: its vector (or matrix); a batch: the tensor as is, one row (or matrix) per sample."""
    return t[0] if t.shape[0] == 1 else t


def _layer_lines(layer: LayerReport, L: int, n: int) -> list[str]:
    """Layer ``l``'s chain rule: each factor with its equation tag, then ``dC/dw^l`` weight by weight, the factors
    of each weight (one sample only) beside their product and autograd's gradient."""
    l, eq, label = layer.index, layer.equations, layer.labels
    role = "output layer" if layer.is_output else "hidden layer"
    lines = [f"layer {l} of {L} ({role})   dC/dw^{l} = dz^{l}/dw^{l} * da^{l}/dz^{l} * dC/da^{l}"]
    lines += value_lines(label["dz_dw"], _per_sample(layer.dz_dw), eq["dz_dw"])
    lines += value_lines(label["da_dz"], _per_sample(layer.da_dz), eq["da_dz"])
    if layer.dC_da_next is not None and layer.da_next_da is not None:  # a hidden layer: (2.3) = (2.3.1) x (2.3.2)
        lines += value_lines(label["dC_da_next"], _per_sample(layer.dC_da_next), eq["dC_da_next"])
        lines += value_lines(label["da_next_da"], _per_sample(layer.da_next_da), eq["da_next_da"])
    lines += value_lines(label["dC_da"], _per_sample(layer.dC_da), eq["dC_da"])
    if layer.delta is not None and layer.quadratic_delta is not None:  # cross-entropy: sigma'(z^L) cancels (3.3)
        lines += value_lines(label["delta"], _per_sample(layer.delta), eq["delta"])
        lines += value_lines(label["quadratic_delta"], _per_sample(layer.quadratic_delta), eq["quadratic_delta"])
    summed = ", summed over the samples" if n > 1 else ""
    lines.append(f"  {eq['dC_dw']:<8}{label['dC_dw']}{summed}")
    f1, f2, f3 = eq["dz_dw"], eq["da_dz"], eq["dC_da"]
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
                cells += (
                    f"{layer.dz_dw[0, k].item():>16.10g} {layer.da_dz[0, j].item():>16.10g} "
                    f"{layer.dC_da[0, j].item():>16.10g}   "
                )
            lines.append(cells + f"{product:>16.10g} {reference:>16.10g}  {abs(product - reference):>7.1e}")
    lines.append(f"  {'':8}max |dC/dw^{l} - autograd| = {layer.max_abs_diff:.1e}")
    if layer.dC_db is not None and layer.autograd_dC_db is not None:  # a layer with a bias: dz/db = 1
        lines += value_lines(label["dC_db"], layer.dC_db)
        lines += value_lines(f"autograd dC/db^{l}", layer.autograd_dC_db)
        lines.append(f"  {'':8}max |dC/db^{l} - autograd| = {layer.max_abs_diff_bias:.1e}")
    return lines
