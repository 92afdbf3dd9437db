"""Worked examples from the literature, as networks ``explain`` takes: their every intermediate value is published, so
the report can be read side by side with the text (``python -m bp_torch.explain`` shows Mazur's by default)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..modules import SigmoidMLP

__all__ = ["mazur_example"]


def mazur_example(dtype: torch.dtype = torch.float64) -> tuple[SigmoidMLP, Tensor, Tensor, float]:
    """The 2-2-2 worked example of Matt Mazur, "A Step by Step Backpropagation Example" (2015).

    Returns ``(model, x, y, lr)``. Mazur's ``w1..w4`` are ``w^1`` read row by row (``w^1 = [[w1, w2], [w3, w4]]``:
    ``net_h1 = w1 i1 + w2 i2 + b1``), ``w5..w8`` are ``w^2`` row by row; his ``b1`` is the hidden bias, ``b2`` the
    output bias; ``out_h``, ``out_o`` are ``a^1``, ``a^2``; ``E_total`` is ``C``.
    """
    model = SigmoidMLP([2, 2, 2], dtype=dtype)
    parameters = dict(model.named_parameters())  # "0.weight" is w^1, "0.bias" b^1, "1.weight" w^2, "1.bias" b^2
    with torch.no_grad():
        parameters["0.weight"].copy_(torch.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=dtype))
        parameters["0.bias"].fill_(0.35)
        parameters["1.weight"].copy_(torch.tensor([[0.40, 0.45], [0.50, 0.55]], dtype=dtype))
        parameters["1.bias"].fill_(0.60)
    x = torch.tensor([0.05, 0.10], dtype=dtype)
    y = torch.tensor([0.01, 0.99], dtype=dtype)
    return model, x, y, 0.5
