"""The command line, ``python -m bp_torch.explain``: a network (Mazur's worked example, random weights of given
sizes, or a checkpoint), its report printed, one step of gradient descent, and the picture and the page if asked for.

A mistake on the command line ends in one line, ``python -m bp_torch.explain: error: ...``, and exit status 2, as
argparse ends its own: the mistakes found after the parsing are raised as :class:`UsageError` and turned into that
line by :func:`main`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import _backend
from ..modules import COST_MODULES, SigmoidMLP
from . import _page
from ._explain import explain, layers_of, learning_rate
from ._plot import need_matplotlib, writes_edge_labels
from ._text import LABEL_WIDTH, format_number, value_lines
from ._worked_examples import mazur_example

__all__ = ["TRAIN_DIGITS_FORMAT", "UsageError", "main"]

TRAIN_DIGITS_FORMAT = "bp_torch.train_digits/1"  # the "format" of a checkpoint from examples/train_digits.py --save


class UsageError(ValueError):
    """A mistake on the command line (a missing file, a file that is not a checkpoint, a bad shape): one line."""


def _load_checkpoint(path: str, dtype: torch.dtype) -> tuple[SigmoidMLP, str]:
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
        raise UsageError(
            f"{path} is not a checkpoint that torch.load can read ({type(err).__name__}: {first_line[:120]})"
        ) from None
    expected = (
        "expected the checkpoint of examples/train_digits.py --save or a SigmoidMLP state_dict "
        "(keys '0.weight', '0.bias', '1.weight', ...)"
    )
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
    indices = sorted(
        int(key.split(".")[0])
        for key in state
        if isinstance(key, str) and key.endswith(".weight") and key.split(".")[0].isdigit()
    )
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
        raise UsageError(
            f"{path}: some layers have a bias and some have none; a SigmoidMLP has one on every layer or on none"
        )
    for (i, below), (j, above) in zip(zip(indices, weights), zip(indices[1:], weights[1:])):
        if above.shape[1] != below.shape[0]:
            raise UsageError(
                f"{path}: '{j}.weight' takes {above.shape[1]} inputs but '{i}.weight' gives {below.shape[0]} outputs"
            )
    sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    model = SigmoidMLP(sizes, bias=biases[0] is not None, dtype=dtype)
    with torch.no_grad():
        for layer, w, b in zip(layers_of(model), weights, biases):
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(b)
    return model, description


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bp_torch.explain",
        description="Back-propagation term by term: each factor of the chapter's chain rule, labelled with its "
        "equation, checked against torch autograd, then one step of gradient descent. With no options: "
        "the 2-2-2 worked example of Mazur, 'A Step by Step Backpropagation Example' (2015).",
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="a random SigmoidMLP with these layer sizes, input first (e.g. --sizes 3 4 2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the random weights, input and target (default 0)")
    p.add_argument(
        "--lr",
        "--eta",
        type=float,
        default=None,
        dest="lr",
        help="learning rate eta of the gradient-descent step (default 0.5)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="load the weights from the checkpoint of examples/train_digits.py --save, or from a "
        "SigmoidMLP state_dict saved with torch.save",
    )
    p.add_argument("--input", type=float, nargs="+", metavar="X", help="the input x (default: random, or Mazur's)")
    p.add_argument("--target", type=float, nargs="+", metavar="Y", help="the target y (default: random, or Mazur's)")
    p.add_argument(
        "--cost",
        choices=[name.replace("_", "-") for name in COST_MODULES],
        default="quadratic",
        help="the cost: the chapter's quadratic cost (default), or the cross-entropy, whose report shows "
        "delta^L = a^L - y beside the quadratic cost's (a^L - y) sigma'(z^L)",
    )
    p.add_argument("--backend", choices=_backend.available_backends(), help="bp_torch backend (default: active)")
    p.add_argument(
        "--plot",
        metavar="PATH.png",
        help="draw the network, edges coloured and sized by |dC/dw| (needs matplotlib: pip install 'bp_torch[plot]')",
    )
    p.add_argument(
        "--html",
        metavar="PATH.html",
        help="write an interactive page: click an edge for its chain rule, step through the forward and "
        f"backward passes, slide through SGD steps (networks up to {_page.MAX_UNITS} units per layer "
        f"and {_page.MAX_LAYERS} layers)",
    )
    p.add_argument(
        "--steps",
        type=_steps,
        help=f"SGD steps the page records, 0 to {_page.MAX_STEPS} (default {_page.DEFAULT_STEPS})",
    )
    return p


def _write(method: Callable[..., object], path: str, **kwargs: Any) -> None:
    """``method(path, **kwargs)``, its failure to write ``path`` a UsageError."""
    try:
        method(path, **kwargs)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    except ValueError as err:  # the page refuses what it cannot show, such as an inf or NaN from --input
        raise UsageError(f"{path} not written: {str(err).removeprefix('explain: ')}") from None


def _steps(text: str) -> int:
    """``--steps``: a whole number of SGD steps that the page records."""
    try:
        steps = int(text)
        _page.check_steps(steps)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {_page.MAX_STEPS}, got {text!r}") from None
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bp_torch.explain``. A mistake on the command line (a missing file, a file that is not a
    checkpoint, a shape that does not fit the network, no matplotlib for --plot) ends in one line,
    ``python -m bp_torch.explain: error: ...``, and exit status 2, as argparse ends its own."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except (UsageError, ImportError) as err:
        parser.exit(2, f"{parser.prog}: error: {str(err).removeprefix('explain: ')}\n")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """main() after the parsing: check the options, build the network, print the report and one step, write the
    --plot and --html files."""
    if args.steps is not None and not args.html:
        parser.error("--steps sets the SGD steps of the --html page; give --html PATH.html too")
    steps = _page.DEFAULT_STEPS if args.steps is None else args.steps
    if args.lr is not None:
        try:
            learning_rate(args.lr)
        except ValueError:
            raise UsageError(f"--lr must be a finite number >= 0, got {args.lr}") from None
    for option, path in (("--plot", args.plot), ("--html", args.html)):
        # before anything is printed: an output that cannot be written is known now
        folder = os.path.dirname(path) if path else ""
        if folder and not os.path.isdir(folder):
            raise UsageError(f"{option} {path}: there is no folder {folder}")
    if args.plot:
        need_matplotlib()
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
            raise UsageError(
                f"--sizes {' '.join(map(str, args.sizes))} disagrees with the checkpoint's sizes {model.sizes}"
            )
    else:
        if any(n < 1 for n in args.sizes):  # a zero-width layer has no weight whose chain rule to show
            raise UsageError(f"--sizes: every layer needs at least one unit, got {args.sizes}")
        try:
            model = SigmoidMLP(args.sizes, dtype=dtype)
        except ValueError as err:
            raise UsageError(f"--sizes: {err}") from None
        source = f"random weights (nn.Linear's initialisation), seed {args.seed}"
    if not mazur:
        x = torch.rand(model.sizes[0], dtype=dtype)
        y = torch.rand(model.sizes[-1], dtype=dtype)
        lr = 0.5
    for option, values, n, what in (
        ("--input", args.input, model.sizes[0], "inputs"),
        ("--target", args.target, model.sizes[-1], "outputs"),
    ):
        if values is not None and len(values) != n:
            raise UsageError(
                f"{option} has {len(values)} value{'s' * (len(values) != 1)}, but network {model.sizes} has {n} {what}"
            )
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
    cost = COST_MODULES[args.cost.replace("-", "_")]()
    try:
        report = explain(model, x, y, cost=cost)
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None

    print("bp_torch.explain: back-propagation term by term, each factor labelled with its equation")
    print(f"{source}; one sample, {args.cost} cost, eta = {lr:g}")
    if mazur:
        print("Mazur's names: i1, i2 = a^0; out_h1, out_h2 = a^1; out_o1, out_o2 = a^2; E_total = C;")
        print("               w^1 = [[w1, w2], [w3, w4]], w^2 = [[w5, w6], [w7, w8]]; b^1 = b1, b^2 = b2")
    print(report)

    # One step of gradient descent with the library's own update (bp_torch.functional.sgd_step): W <- W - eta dC/dW
    cost_before = model.sgd_step(report.x, report.y, lr, cost=report.cost_name).item()
    with torch.no_grad():
        cost_after = cost(model(report.x), report.y).item()
    print("")
    print(f"gradient descent      W <- W - eta * dC/dW,  b <- b - eta * dC/db,  eta = {lr:g}")
    for l, layer in enumerate(layers_of(model), 1):
        for line in value_lines(f"w^{l} <- w^{l} - eta * dC/dw^{l}", layer.weight.detach()):
            print(line)
    for l, layer in enumerate(layers_of(model), 1):
        if layer.bias is not None:
            for line in value_lines(f"b^{l} <- b^{l} - eta * dC/db^{l}", layer.bias.detach()):
                print(line)
    print(f"  {'':8}{'C before the step':<{LABEL_WIDTH - 10}}  {format_number(cost_before)}")
    print(f"  {'':8}{'C after the step':<{LABEL_WIDTH - 10}}  {format_number(cost_after)}")
    if mazur:
        print("  (Mazur updates the weights only and keeps the biases; the weights above are the same either way.)")
    if args.plot:
        _write(report.plot, args.plot)
        print(
            f"\nwrote {args.plot}: nodes show a^l, edges are coloured and sized by |dC/dw| (before the step)"
            + ("; the numbers on the edges are dC/dw, with their signs" if writes_edge_labels(report.sizes) else "")
        )
    if args.html:
        # From the report's own copies of the parameters, as they were before the step above
        _write(report.to_html, args.html, steps=steps, lr=lr, title=source)
        print(
            f"\nwrote {args.html}: click an edge or a node; step through the forward and backward passes; "
            f"slide through {steps} SGD steps (open it in a browser)"
        )
    return 0
