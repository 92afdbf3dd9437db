"""The picture of ``report.plot(path)`` and ``python -m bp_torch.explain --plot``: the network, its nodes shaded by
their activations ``a^l``, its edges coloured and sized by ``|dC/dw|``, so that the connections that "contributed
more to the cost and are adjusted more" stand out.

matplotlib is optional for the library (``pip install 'bp_torch[plot]'``): it is imported here only when a picture
is drawn, and :func:`need_matplotlib` says which extra installs it when it is missing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: _report imports this module
    from ._report import ExplainReport

__all__ = ["need_matplotlib", "plot", "writes_edge_labels"]


def need_matplotlib() -> None:
    """Raise ImportError, naming the extra that installs it, unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"explain: plotting needs matplotlib, which is not installed ({err}); "
            f"pip install 'bp_torch[plot]' (or pip install matplotlib) adds it"
        ) from None


def writes_edge_labels(sizes: list[int]) -> bool:
    """Whether the picture writes each gradient on its edge: small networks only, where the labels stay legible."""
    return sum(n_in * n_out for n_in, n_out in zip(sizes, sizes[1:])) <= 24


def plot(report: ExplainReport, path: str | os.PathLike[str], title: str | None = None) -> None:
    """Draw ``report``'s network to ``path`` as a PNG (see ExplainReport.plot)."""
    need_matplotlib()  # optional for the library itself: bp_torch[plot]
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
    ax.add_collection(
        LineCollection(
            [segments[i] for i in order],
            linewidths=[widths[i] for i in order],
            colors=[edge_colours[i] for i in order],
            zorder=1,
        )
    )
    labels_drawn = writes_edge_labels(sizes)
    if labels_drawn:  # small networks: write each gradient on its edge
        for l, j, k, value in labels:
            t = 0.3 if (j + k) % 2 == 0 else 0.7  # stagger the labels of crossing edges
            px, py = l - 1 + t, ys[l - 1][k] + t * (ys[l][j] - ys[l - 1][k])
            ax.text(
                px,
                py,
                f"{value:.3g}",
                fontsize=7,
                ha="center",
                va="center",
                zorder=3,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
            )

    activations = [report.x.mean(0)] + [layer.a.mean(0) for layer in report.layers]
    node_size = 1400 if tallest <= 12 else max(20, 20000 // tallest)
    for l, (act, col) in enumerate(zip(activations, ys)):
        values = act.double().tolist()
        ax.scatter(
            [l] * len(col),
            col,
            s=node_size,
            c=values,
            cmap="Greys",
            vmin=0.0,
            vmax=1.0,
            edgecolors="black",
            linewidths=1.0,
            zorder=2,
        )
        if tallest <= 12:
            for v, py in zip(values, col):
                ax.text(
                    l,
                    py,
                    f"{v:.4g}",
                    fontsize=8,
                    ha="center",
                    va="center",
                    zorder=4,
                    color="white" if v > 0.55 else "black",
                )
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
    ax.set_title((title or f"network {'-'.join(map(str, sizes))}, C = {report.cost:.6g}{batch}") + signed, fontsize=10)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
