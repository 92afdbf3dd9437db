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

With the cross-entropy cost (3.1), the output layer's ``dC/da^L`` is (3.2), ``(a^L - y) / (a^L (1 - a^L))``, and its
product with (1.2) is ``delta^L = a^L - y`` (3.3): the report shows it beside the quadratic cost's
``(a^L - y) sigma'(z^L)``, and ``sigma'(z^L)`` drops out of (A) and (B).
"""

from __future__ import annotations

__all__ = ["cost_formula", "cost_title", "equations", "labels", "product_formula"]


def equations(l: int, L: int, cost: str = "quadratic") -> dict[str, str]:
    """The equation tag of each factor of layer ``l`` of ``L``: (1.x) and (A) for the output layer, (2.x) and (B)
    below it, "(B) gen." further down; with the cross-entropy ``cost``, (3.2) and (3.3) in the output layer."""
    if l == L and cost == "cross_entropy":
        return {
            "dz_dw": "(1.1)",
            "da_dz": "(1.2)",
            "dC_da": "(3.2)",
            "delta": "(3.3)",
            "quadratic_delta": "",
            "dC_dw": "(A)",
        }
    if l == L:
        return {"dz_dw": "(1.1)", "da_dz": "(1.2)", "dC_da": "(1.3)", "dC_dw": "(A)"}
    return {
        "dz_dw": "(2.1)",
        "da_dz": "(2.2)",
        "dC_da": "(2.3)",
        "dC_da_next": "(2.3.1)",
        "da_next_da": "(2.3.2)",
        "dC_dw": "(B)" if l == L - 1 else "(B) gen.",
    }


def product_formula(l: int, L: int, cost: str = "quadratic") -> str:
    """(A) for l = L, (B) for l = L - 1, and (B) generalised further down, written as the chapter writes them:
    each layer crossed on the way down adds one factor ``sigma'(z^k) * w^k``. With the cross-entropy ``cost``,
    ``sigma'(z^L)`` has cancelled (3.3): (A) is ``a^(L-1) * (a^L - y)`` and the crossing of layer L adds ``w^L``."""
    cross_entropy = cost == "cross_entropy"
    formula = f"a^{l - 1} * (a^{L} - y)" if cross_entropy and l == L else f"a^{l - 1} * sigma'(z^{l}) * (a^{L} - y)"
    for k in range(L, l, -1):
        formula += f" * w^{k}" if cross_entropy and k == L else f" * sigma'(z^{k}) * w^{k}"
    return formula


def labels(l: int, L: int, bias: bool, reduction: str, n: int, cost: str = "quadratic") -> dict[str, str]:
    """Each quantity of layer ``l`` of ``L`` written as the chapter writes it (see LayerReport.labels); ``n`` is the
    number of samples, ``reduction`` the cost's ("mean" divides (1.3) by ``n``), ``cost`` its name."""
    labels = {
        "z": f"z^{l} = w^{l} a^{l - 1} + b^{l}" if bias else f"z^{l} = w^{l} a^{l - 1}",
        "a": f"a^{l} = sigma(z^{l})",
        "dz_dw": f"dz^{l}/dw^{l} = a^{l - 1}",
        "da_dz": f"da^{l}/dz^{l} = sigma'(z^{l}) = a^{l}(1-a^{l})",
        "dC_dw": f"dC/dw^{l} = {product_formula(l, L, cost)}",
        "update_w": f"w^{l} <- w^{l} - eta * dC/dw^{l}",
    }
    if bias:
        labels["dC_db"] = f"dC/db^{l} = 1 * sigma'(z^{l}) * dC/da^{l}"
        labels["update_b"] = f"b^{l} <- b^{l} - eta * dC/db^{l}"
    mean = f" (/{n}: C is a mean)" if reduction == "mean" and n > 1 else ""
    if l == L and cost == "cross_entropy":
        labels["dC_da"] = f"dC/da^{l} = (a^{l} - y) / (a^{l}(1-a^{l})){mean}"
        labels["delta"] = f"delta^{l} = dC/da^{l} * da^{l}/dz^{l} = a^{l} - y{mean}"
        labels["quadratic_delta"] = f"quadratic: delta^{l} = (a^{l} - y) sigma'(z^{l}){mean}"
    elif l == L:
        labels["dC_da"] = f"dC/da^{l} = a^{l} - y{mean}"
    else:
        labels["dC_da_next"] = f"dC/da^{l + 1}"
        labels["da_next_da"] = f"da^{l + 1}/da^{l} = sigma'(z^{l + 1}) w^{l + 1}"
        labels["dC_da"] = f"dC/da^{l} = (2.3.1) x (2.3.2)"
    return labels


def cost_formula(L: int, cost: str = "quadratic") -> str:
    """The cost of one sample for a network of ``L`` layers, as the chapter writes it: the quadratic cost, or the
    cross-entropy (3.1)."""
    if cost == "cross_entropy":
        return f"C = -sum_j [y_j ln a^{L}_j + (1 - y_j) ln(1 - a^{L}_j)]"
    return f"C = 1/2 sum_j (y_j - a^{L}_j)^2"


def cost_title(cost: str) -> str:
    """The cost's name in prose: "quadratic cost" or "cross-entropy cost"."""
    return "cross-entropy cost" if cost == "cross_entropy" else "quadratic cost"
