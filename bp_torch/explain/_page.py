"""The interactive page of bp_torch.explain: ``ExplainReport.to_html()`` and ``python -m bp_torch.explain --html``.

The page is one self-contained HTML file: the template ``page.html`` (layout, an inline SVG drawing and plain
JavaScript; nothing fetched from the network) with the numbers embedded as JSON. Every number on the page, each
factor, product, difference, cost, and the weights after each SGD step, is computed here in Python, by
:func:`bp_torch.explain.explain` and the library's own ``sgd_step``; the JavaScript only formats, places and
highlights them, so no formula of the chapter is written a second time, in another language, where no test of the
library would see it.

The page draws every unit and every weight, which stays readable up to :data:`MAX_UNITS` units per layer and
:data:`MAX_LAYERS` layers of weights (Mazur's 2-2-2, a 4-6-5-3); larger networks are refused with a message that
says so, rather than drawn as a hairball. ``print(report)`` and ``report.plot(path)`` take any size.
"""

import html
import json
from importlib import resources

import torch

from . import _notation

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_STEPS",
    "MAX_LAYERS",
    "MAX_SAMPLES",
    "MAX_STEPS",
    "MAX_UNITS",
    "check_drawable",
    "check_steps",
    "notebook_frame",
    "render",
]

MAX_UNITS = 8  # units in any one layer, input and output included: 8 x 8 = 64 edges between two layers
MAX_LAYERS = 5  # layers of weights (a 6-entry sizes list)
MAX_SAMPLES = 8  # the page's tables have one row per sample
MAX_STEPS = 200  # recorded SGD steps: each is a whole report in the page (about 10 KB for a 4-6-5-3)
DEFAULT_STEPS = 20
DEFAULT_LR = 0.5  # the CLI's eta, and Mazur's

DATA_PLACEHOLDER = "__BP_TORCH_PAGE_DATA__"


def check_drawable(sizes, n_samples, elsewhere="print(report) and report.plot(path) show"):
    """Raise ``ValueError`` unless the page can draw this network and show its samples; the message ends with
    where else to look (``elsewhere`` ... networks of any size)."""
    sizes = list(sizes)
    too_large = []
    if max(sizes) > MAX_UNITS:
        too_large.append(f"a layer of {max(sizes)} units (at most {MAX_UNITS})")
    if len(sizes) - 1 > MAX_LAYERS:
        too_large.append(f"{len(sizes) - 1} layers of weights (at most {MAX_LAYERS})")
    if too_large:
        raise ValueError(
            f"explain: the page draws every unit and every weight, so it takes networks of at most {MAX_UNITS} units "
            f"per layer and {MAX_LAYERS} layers of weights (e.g. [4, 6, 5, 3]); network {sizes} has "
            f"{' and '.join(too_large)}; {elsewhere} networks of any size"
        )
    if n_samples > MAX_SAMPLES:
        raise ValueError(
            f"explain: the page shows one row per sample, so it takes at most {MAX_SAMPLES} samples; "
            f"got {n_samples}; {elsewhere} any number"
        )


def check_steps(steps):
    """Raise ``ValueError`` unless ``steps`` is a number of SGD steps the page records (0 to MAX_STEPS)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
        raise ValueError(f"explain: steps must be a whole number of SGD steps from 0 to {MAX_STEPS}, got {steps!r}")


def render(reports, lr, title=None):
    """The page for ``reports``: the report at SGD step 0, then after each step (see ExplainReport.to_html)."""
    data = _page_data(reports, lr, title)
    # Inside <script>, "</script>" (or "<!--") would end the block early: escape <, > and & as JSON allows.
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    return template.replace(DATA_PLACEHOLDER, text)


def notebook_frame(page):
    """The page inside an iframe (``srcdoc``), for Jupyter: its script, styles and element ids stay apart from the
    notebook's and from other reports' on the same notebook page."""
    return (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" '
        f'style="width: 100%; height: 860px; border: 1px solid #ddd" title="bp_torch.explain"></iframe>'
    )


# --------------------------------------------------------------------------------------------------------------------
# The page's data
# --------------------------------------------------------------------------------------------------------------------


def _page_data(reports, lr, title):
    first = reports[0]
    steps = [_step_data(report) for report in reports]
    for step in steps:
        if not _all_finite(step):
            raise ValueError(
                "explain: the page needs finite numbers, and a value of this report (or of an SGD step "
                "after it) is inf or NaN; print(report) shows them"
            )
    sizes = first.sizes
    # One colour scale for every step, so that the edges fade as the gradients shrink during training
    gradient_scale = max(layer.dC_dw.abs().max().item() for report in reports for layer in report.layers)
    return {
        "title": title or f"network {'-'.join(map(str, sizes))}",
        "sizes": list(sizes),
        "n_samples": first.n_samples,
        "dtype": str(first.dtype).replace("torch.", ""),
        "backend": first.backend,
        "reduction": first.reduction,
        "lr": lr,
        "cost_title": _notation.cost_title(first.cost_name),
        "gradient_scale": gradient_scale or 1.0,
        "walk": _walk(steps[0], lr),
        "steps": steps,
    }


def _step_data(report):
    """``report.to_dict()`` and what the page shows beside it, also computed here: each sample's product of the
    three factors (a batch's table has a row per sample; ``dC_dw`` is their sum), the terms of (2.3)'s sum, the
    differences from autograd, and the activations averaged over the samples (the drawing's node values)."""
    data = report.to_dict()
    for layer, plain in zip(report.layers, data["layers"]):
        plain["dC_dw_per_sample"] = _plain(torch.einsum("nk,nj,nj->njk", layer.dz_dw, layer.da_dz, layer.dC_da))
        plain["abs_diff"] = _plain((layer.dC_dw - layer.autograd_dC_dw).abs())
        plain["abs_diff_bias"] = None if layer.dC_db is None else _plain((layer.dC_db - layer.autograd_dC_db).abs())
        # (2.3) dC/da^l_k = sum_j dC/da^(l+1)_j (2.3.1) * da^(l+1)_j/da^l_k (2.3.2): the terms, before the sum
        plain["dC_da_terms"] = None if layer.is_output else _plain(layer.dC_da_next.unsqueeze(-1) * layer.da_next_da)
        plain["a_mean"] = _plain(layer.a.mean(0))
    data["x_mean"] = _plain(report.x.mean(0))
    data["y_mean"] = _plain(report.y.mean(0))
    return data


def _plain(t):
    return t.detach().cpu().double().tolist()


def _all_finite(value):
    if isinstance(value, float):
        return value == value and abs(value) != float("inf")
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


def _ref(key, layer=None, per_sample=False, eq="", label="", next_step=False):
    """One value the walk shows: ``steps[k].layers[layer - 1][key]`` (or ``steps[k][key]``), from step ``k + 1``
    when ``next_step``; ``per_sample`` values have a leading sample dimension."""
    return {"key": key, "layer": layer, "per_sample": per_sample, "eq": eq, "label": label, "next_step": next_step}


def _walk(step, lr):
    """The step buttons' walk: forward layer by layer, the cost, backward layer by layer, the update.

    Each entry says what is known after it (``a_known``: a^0..a^a_known are computed; ``grad_known``: dC/dw^l is
    computed for l >= grad_known), which nodes and edges (by layer) it computes and which it uses, and the values it
    computes, with their equation labels and wording from the report.
    """
    layers = step["layers"]
    L = len(layers)
    none_known = L + 1
    walk = [
        {
            "title": "input",
            "text": "a^0 = x",
            "a_known": 0,
            "grad_known": none_known,
            "computed": {"nodes": [0], "edges": []},
            "used": {"nodes": [], "edges": []},
            "values": [_ref("x", per_sample=True, label="a^0 = x")],
        }
    ]
    for layer in layers:
        l, label = layer["layer"], layer["labels"]
        walk.append(
            {
                "title": f"forward, layer {l} of {L}",
                "text": f"{label['z']},  {label['a']}",
                "a_known": l,
                "grad_known": none_known,
                "computed": {"nodes": [l], "edges": []},
                "used": {"nodes": [l - 1], "edges": [l]},
                "values": [_ref("z", l, True, label=label["z"]), _ref("a", l, True, label=label["a"])],
            }
        )
    walk.append(
        {
            "title": "cost",
            "text": step["cost"]["formula"],
            "a_known": L,
            "grad_known": none_known,
            "computed": {"nodes": [], "edges": []},
            "used": {"nodes": [L], "edges": []},
            "values": [_ref("y", per_sample=True, label="y"), _ref("cost", label=step["cost"]["formula"])],
        }
    )
    for layer in reversed(layers):
        l, label, eq = layer["layer"], layer["labels"], layer["equations"]
        factors = (
            ["dz_dw", "da_dz", "dC_da"]
            if layer["role"] == "output"
            else ["dz_dw", "da_dz", "dC_da_next", "da_next_da", "dC_da"]
        )
        if "delta" in label:  # cross-entropy: (3.3), delta^L = a^L - y, beside the quadratic cost's
            factors += ["delta", "quadratic_delta"]
        # in the order they are computed: dC/da^l first, the factors local to the layer next, the product last
        order = [
            k
            for k in ("dC_da_next", "da_next_da", "dC_da", "da_dz", "delta", "quadratic_delta", "dz_dw")
            if k in factors
        ]
        values = [_ref(k, l, True, eq[k], label[k]) for k in order]
        values.append(_ref("dC_dw", l, eq=eq["dC_dw"], label=label["dC_dw"]))
        if "dC_db" in label:
            values.append(_ref("dC_db", l, label=label["dC_db"]))
        role = "output layer" if layer["role"] == "output" else "hidden layer"
        above = [] if layer["role"] == "output" else [l + 1]
        walk.append(
            {
                "title": f"backward, layer {l} of {L} ({role}): {eq['dC_dw']}",
                "text": label["dC_dw"],
                "a_known": L,
                "grad_known": l,
                "computed": {"nodes": [l], "edges": [l]},
                "used": {"nodes": [l - 1] + above, "edges": above},
                "values": values,
            }
        )
    updates = []
    for layer in layers:
        l, label = layer["layer"], layer["labels"]
        updates.append(_ref("weight", l, label=label["update_w"], next_step=True))
        if "update_b" in label:
            updates.append(_ref("bias", l, label=label["update_b"], next_step=True))
    walk.append(
        {
            "title": "gradient descent",
            "text": f"W <- W - eta * dC/dW,  b <- b - eta * dC/db,  eta = {lr:g}: the next SGD step's weights",
            "a_known": L,
            "grad_known": 1,
            "computed": {"nodes": [], "edges": list(range(1, L + 1))},
            "used": {"nodes": [], "edges": []},
            "values": updates + [_ref("cost", label="C after the step", next_step=True)],
        }
    )
    return walk
