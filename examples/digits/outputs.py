"""What a run reports: the cost and accuracy of the network, the confusion matrix, the plot, and the checkpoint that
loads into plain torch."""

import numpy as np
import torch

import bp_torch

CHECKPOINT_FORMAT = "bp_torch.train_digits/1"


@torch.no_grad()
def evaluate(net, x, y, chunk=10000, cost_fn=None):
    """(cost averaged over the samples, accuracy, predictions) of the network on ``(x, y)``; ``cost_fn``: a cost
    module with ``reduction="sum"`` (default: the quadratic cost)."""
    cost_fn = cost_fn or bp_torch.QuadraticCost(reduction="sum")
    cost, correct, preds = 0.0, 0, []
    for i in range(0, len(x), chunk):
        a = net(x[i : i + chunk])
        target = torch.nn.functional.one_hot(y[i : i + chunk], a.shape[-1]).to(a.dtype)
        cost += cost_fn(a, target).item()
        pred = a.argmax(dim=1)
        correct += (pred == y[i : i + chunk]).sum().item()
        preds.append(pred)
    return cost / len(x), correct / len(x), torch.cat(preds)


def confusion_matrix(y_true, y_pred, n_classes=10):
    m = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    m.index_put_((y_true, y_pred), torch.ones_like(y_true), accumulate=True)
    return m


def save_plot(path, history, confusion, first_weights, image_shape, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 8.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1])
    ax_cost, ax_acc, ax_conf = top.subplots(1, 3, width_ratios=[1, 1, 1.1])
    epochs = [h["epoch"] for h in history]

    ax_cost.plot(epochs, [h["cost"] for h in history], "o-", ms=3)
    ax_cost.set(title="quadratic cost (training set)", xlabel="epoch", ylabel="C")
    ax_cost.set_yscale("log")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", ms=3, label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], "o-", ms=3, label="test")
    ax_acc.set(title="accuracy", xlabel="epoch", ylabel="%")
    ax_acc.legend()
    for ax in (ax_cost, ax_acc):
        ax.grid(alpha=0.3)

    conf = confusion.numpy()
    ax_conf.imshow(conf, cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            if conf[i, j]:
                ax_conf.text(
                    j,
                    i,
                    str(conf[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if conf[i, j] > conf.max() / 2 else "black",
                )
    ax_conf.set(
        title=f"test confusion matrix ({conf.trace()}/{conf.sum()} right)",
        xlabel="predicted",
        ylabel="true",
        xticks=range(10),
        yticks=range(10),
    )

    n_units = min(len(first_weights), 16)
    cols = 8
    rows = (n_units + cols - 1) // cols
    axes = np.atleast_1d(bottom.subplots(rows, cols)).ravel()
    bottom.suptitle(f"incoming weights of the first {n_units} hidden units (red positive, blue negative)")
    for k, ax in enumerate(axes):
        ax.set_axis_off()
        if k < n_units:
            w = first_weights[k].reshape(image_shape).numpy()
            lim = float(np.abs(w).max()) or 1.0
            ax.imshow(w, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"unit {k}", fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_checkpoint(path, net, sizes, data, test_accuracy, args):
    """Plain tensors, lists and strings (``torch.load``'s default ``weights_only=True`` reads it), the state_dict
    keyed for ``nn.Sequential(nn.Linear, nn.Sigmoid, ...)`` (:meth:`bp_torch.SigmoidMLP.to_sequential`)."""
    state_dict = {key: value.contiguous() for key, value in net.to_sequential().state_dict().items()}
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "sizes": sizes,
            "state_dict": state_dict,
            "dataset": args.dataset,
            "image_shape": data["image_shape"],
            "pixel_max": data["pixel_max"],
            "test_accuracy": test_accuracy,
            "args": {k: v for k, v in vars(args).items() if k not in ("metrics_json", "plot", "save")},
        },
        path,
    )


def plain_sequential(sizes):
    """The plain-torch twin of ``SigmoidMLP(sizes)``, which loads a checkpoint's ``"state_dict"``."""
    from torch import nn

    return nn.Sequential(*[m for n_in, n_out in zip(sizes, sizes[1:]) for m in (nn.Linear(n_in, n_out), nn.Sigmoid())])
