"""The report that :func:`bp_torch.explain.explain` returns: :class:`LayerReport`, one layer's chain rule, factor by
factor, beside torch autograd's gradient; :class:`ExplainReport`, the forward pass, the cost and a LayerReport per
layer.

The report holds the numbers; its views live in modules of their own, and its methods hand the report to them: the
table of ``print(report)`` (``_text.py``), the picture of ``report.plot`` (``_plot.py``) and the page of
``report.to_html`` (``_page.py`` and ``page.html``).
"""

from __future__ import annotations

import html
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..modules import COST_MODULES
from . import _notation, _page, _plot, _text

__all__ = ["ExplainReport", "LayerReport"]


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
        weight, bias: ``w^l``, ``(n_l, n_(l-1))``, and ``b^l``, ``(n_l,)`` (``None`` without a bias): copies of the
            model's parameters, as they were when the report was made
        dC_db, autograd_dC_db, max_abs_diff_bias: the same for the bias (``dz/db = 1``), ``None`` without a bias
        delta: with the cross-entropy cost, the output layer's (3.3) ``delta^L = dC/da^L * da^L/dz^L``, the product
            of (3.2) and (1.2), which is ``a^L - y``: ``sigma'(z^L)`` cancels, ``(n, n_L)``; else ``None``
        quadratic_delta: beside it, the quadratic cost's ``delta^L = (a^L - y) sigma'(z^L)``, (1.3) x (1.2), for
            the same network and data, ``(n, n_L)``; ``None`` where ``delta`` is
    """

    index: int
    equations: dict[str, str]
    formula: str
    labels: dict[str, str]
    z: Tensor
    a: Tensor
    dz_dw: Tensor
    da_dz: Tensor
    dC_da: Tensor
    dC_da_next: Tensor | None
    da_next_da: Tensor | None
    dC_dw: Tensor
    autograd_dC_dw: Tensor
    max_abs_diff: float
    weight: Tensor
    bias: Tensor | None
    dC_db: Tensor | None
    autograd_dC_db: Tensor | None
    max_abs_diff_bias: float | None
    delta: Tensor | None = None
    quadratic_delta: Tensor | None = None

    @property
    def is_output(self) -> bool:
        """Whether this is the output layer ``L``, whose ``dC/da^L`` is (1.3) rather than (2.3)."""
        return self.dC_da_next is None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as :meth:`ExplainReport.to_dict`: the layer's index, role, equation tags and labels, and
        each tensor above as nested lists of floats."""
        plain = {
            name: _plain(getattr(self, name))
            for name in (
                "z",
                "a",
                "dz_dw",
                "da_dz",
                "dC_da",
                "dC_da_next",
                "da_next_da",
                "dC_dw",
                "autograd_dC_dw",
                "max_abs_diff",
                "weight",
                "bias",
                "dC_db",
                "autograd_dC_db",
                "max_abs_diff_bias",
                "delta",
                "quadratic_delta",
            )
        }
        return {
            "layer": self.index,
            "role": "output" if self.is_output else "hidden",
            "equations": dict(self.equations),
            "formula": self.formula,
            "labels": dict(self.labels),
            **plain,
        }


@dataclass(eq=False)
class ExplainReport:
    """What :func:`explain` returns: the forward pass, the cost and one :class:`LayerReport` per layer.

    ``print(report)`` gives a table per layer; ``report.to_dict()`` plain data; ``report.plot(path)`` a picture;
    ``report.to_html(path)`` an interactive page (and Jupyter shows it inline); ``report.max_abs_diff`` the largest
    difference between a product of factors and autograd's gradient.
    """

    x: Tensor
    y: Tensor
    sizes: list[int]
    reduction: str
    cost: float
    layers: list[LayerReport]
    backend: str
    cost_name: str = "quadratic"

    @property
    def n_samples(self) -> int:
        """The number of samples ``n``, one per row of ``x``."""
        return self.x.shape[0]

    @property
    def max_abs_diff(self) -> float:
        """The largest ``|product of factors - autograd|``, over every weight and bias of every layer."""
        diffs = [layer.max_abs_diff for layer in self.layers]
        diffs += [layer.max_abs_diff_bias for layer in self.layers if layer.max_abs_diff_bias is not None]
        return max(diffs)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of every tensor in the report, which is the model's."""
        return self.x.dtype

    def to_dict(self) -> dict[str, Any]:
        """Plain data: nested lists of floats, floats, ints and strings (``json.dumps`` takes it as is)."""
        return {
            "sizes": list(self.sizes),
            "n_samples": self.n_samples,
            "dtype": str(self.dtype).replace("torch.", ""),
            "backend": self.backend,
            "cost": {
                "name": COST_MODULES[self.cost_name].__name__,
                "reduction": self.reduction,
                "formula": _notation.cost_formula(len(self.layers), self.cost_name),
                "value": self.cost,
            },
            "x": _plain(self.x),
            "y": _plain(self.y),
            "max_abs_diff": self.max_abs_diff,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def __str__(self) -> str:
        """The table of ``print(report)``: the forward pass, the cost, then each layer's factors, each labelled with
        its equation, and their products beside autograd's gradients."""
        return _text.format_report(self)

    def __repr__(self) -> str:
        return (
            f"ExplainReport(sizes={self.sizes}, n_samples={self.n_samples}, cost={self.cost:.10g}, "
            f"max_abs_diff={self.max_abs_diff:.1e})"
        )

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> str | os.PathLike[str]:
        """Draw the network to ``path`` (PNG): nodes show their activations, edges are coloured and sized by
        ``|dC/dw|``, so the connections that "contributed more to the cost and are adjusted more" stand out.
        With a batch, nodes show the activations averaged over the samples. Uses matplotlib's Agg canvas; without
        matplotlib, raises ImportError naming the extra that installs it (``bp_torch[plot]``). Returns ``path``."""
        _plot.plot(self, path, title)
        return path

    def to_html(
        self,
        path: str | os.PathLike[str] | None = None,
        steps: int = _page.DEFAULT_STEPS,
        lr: float | Tensor = _page.DEFAULT_LR,
        title: str | None = None,
    ) -> str:
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
        # Imported here rather than at the top: _explain builds this class, so it imports this module first
        from ._explain import after_sgd_steps, learning_rate

        lr = learning_rate(lr)
        _page.check_drawable(self.sizes, self.n_samples)
        _page.check_steps(steps)
        page = _page.render(after_sgd_steps(self, lr, steps), lr, title)
        if path is not None:
            pathlib.Path(path).write_text(page, encoding="utf-8")
        return page

    def _repr_html_(self) -> str:
        """Jupyter's view: the page of :meth:`to_html` in an iframe; for a network too large to draw, the short
        repr and the reason."""
        try:
            _page.check_drawable(self.sizes, self.n_samples)
        except ValueError as err:
            return f"<pre>{html.escape(repr(self))}\n{html.escape(str(err))}</pre>"
        return _page.notebook_frame(self.to_html())


def _plain(value: Any) -> Any:
    """A tensor as nested lists of floats (float64, on the CPU); anything else as it is."""
    if isinstance(value, Tensor):
        return value.detach().cpu().double().tolist()
    return value
