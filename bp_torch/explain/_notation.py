"""The chapter's notation: the equation tag of each chain-rule factor, and each quantity written as the chapter
writes it. The report (its ``equations``, ``formula`` and ``labels``), the printed table and the page all take their
labels from here, so a quantity reads the same everywhere.

For layer ``l`` of ``L``:

    (1.1) / (2.1)  dz^l/dw^l = a^(l-1)
    (1.2) / (2.2)  da^l/dz^l = sigma'(z^l) = a^l (1 - a^l)
    (1.3)          dC/da^L   = a^L - y                                       (the output layer)
    (2.3)          dC/da^l   = dC/da^(l+1) (2.3.1)  x  da^(l+1)/da^l (2.3.2)  (a layer below it)
    (A)            dC/dw^L     = a^(L-1) * sigma'(z^L) * (a^L - y)
    (B)            dC/dw^(L-1) = a^(L-2) * sigma'(z^(L-1)) * (a^L - y) * sigma'(z^L) * w^L
"""
from __future__ import annotations

__all__ = ["cost_formula", "equations", "labels", "product_formula"]


def equations(l: int, L: int) -> dict[str, str]:
    """The equation tag of each factor of layer ``l`` of ``L``: (1.x) and (A) for the output layer, (2.x) and (B)
    below it, "(B) gen." further down."""
    if l == L:
        return {"dz_dw": "(1.1)", "da_dz": "(1.2)", "dC_da": "(1.3)", "dC_dw": "(A)"}
    return {"dz_dw": "(2.1)", "da_dz": "(2.2)", "dC_da": "(2.3)", "dC_da_next": "(2.3.1)",
            "da_next_da": "(2.3.2)", "dC_dw": "(B)" if l == L - 1 else "(B) gen."}


def product_formula(l: int, L: int) -> str:
    """(A) for l = L, (B) for l = L - 1, and (B) generalised further down, written as the chapter writes them:
    each layer crossed on the way down adds one factor ``sigma'(z^k) * w^k``."""
    formula = f"a^{l - 1} * sigma'(z^{l}) * (a^{L} - y)"
    for k in range(L, l, -1):
        formula += f" * sigma'(z^{k}) * w^{k}"
    return formula


def labels(l: int, L: int, bias: bool, reduction: str, n: int) -> dict[str, str]:
    """Each quantity of layer ``l`` of ``L`` written as the chapter writes it (see LayerReport.labels); ``n`` is the
    number of samples, ``reduction`` the cost's ("mean" divides (1.3) by ``n``)."""
    labels = {
        "z": f"z^{l} = w^{l} a^{l - 1} + b^{l}" if bias else f"z^{l} = w^{l} a^{l - 1}",
        "a": f"a^{l} = sigma(z^{l})",
        "dz_dw": f"dz^{l}/dw^{l} = a^{l - 1}",
        "da_dz": f"da^{l}/dz^{l} = sigma'(z^{l}) = a^{l}(1-a^{l})",
        "dC_dw": f"dC/dw^{l} = {product_formula(l, L)}",
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


def cost_formula(L: int) -> str:
    """The chapter's quadratic cost of a network of ``L`` layers, as it writes it."""
    return f"C = 1/2 sum_j (y_j - a^{L}_j)^2"
