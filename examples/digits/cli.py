"""The command line of train_digits.py: its flags, the processes of a --ddp run, and one-line errors."""

import argparse
import os
import sys

import bp_torch

from .errors import USAGE_ERROR, UserError


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Train a sigmoid MLP on handwritten digits with bp_torch (Nielsen's "
        "chapter-1 network: quadratic cost, mini-batch SGD)."
    )
    p.add_argument(
        "--dataset",
        choices=["digits", "mnist"],
        default="digits",
        help="digits: scikit-learn's 8x8 digits, offline (default); mnist: torchvision's MNIST",
    )
    p.add_argument("--data-dir", metavar="ROOT", help="MNIST's root folder (MNIST/raw/ under it)")
    p.add_argument("--download", action="store_true", help="download MNIST into --data-dir if it is not there")
    p.add_argument("--epochs", type=int, default=30, help="default: 30")
    p.add_argument("--batch-size", type=int, default=10, help="mini-batch size (global, under --ddp); default: 10")
    p.add_argument("--lr", type=float, default=3.0, help="eta, the learning rate; default: 3.0")
    p.add_argument("--hidden", type=int, nargs="+", default=[30], metavar="N", help="hidden-layer sizes; default: 30")
    p.add_argument("--seed", type=int, default=0, help="seeds the initialisation and the shuffles; default: 0")
    p.add_argument(
        "--init",
        choices=["torch", "nielsen", "large", "normal"],
        default="torch",
        help="torch: nn.Linear's init (default); nielsen: N(0, 1/n_in) weights, N(0, 1) biases "
        "(network2.py); large: N(0, 1) for both (network.py; 'normal' is another name for it)",
    )
    p.add_argument(
        "--cost",
        choices=["quadratic", "cross-entropy"],
        default="quadratic",
        help="quadratic: C = 1/2n sum ||y - a||^2 (default); cross-entropy: Nielsen's chapter-3 cost",
    )
    p.add_argument(
        "--lmbda",
        type=float,
        default=0.0,
        help="Nielsen's L2 regularisation lambda; the weights decay by eta * lambda / n_train per "
        "step (weight_decay = lambda / n_train), the biases do not; default: 0",
    )
    p.add_argument(
        "--input-scale",
        type=float,
        default=1.0,
        help="multiply the pixels (in [0, 1]) by this, e.g. 20 for a saturated start; default: 1",
    )
    p.add_argument("--backend", choices=["python", "cpp"], help="bp_torch's backend; default: bp_torch's default")
    p.add_argument(
        "--fused", action="store_true", help="train each epoch with one SigmoidMLP.sgd_epoch call (no autograd)"
    )
    p.add_argument("--ddp", action="store_true", help="DistributedDataParallel on gloo; run under torchrun")
    p.add_argument("--metrics-json", metavar="PATH", help="write the metrics and per-epoch history as JSON")
    p.add_argument(
        "--plot",
        metavar="PATH.png",
        help="save the curves, confusion matrix and weights as a PNG (needs matplotlib: pip install 'bp_torch[plot]')",
    )
    p.add_argument("--save", metavar="PATH", help="save a checkpoint that loads into plain nn.Sequential")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (the per-epoch lines remain)")
    args = p.parse_args(argv)
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            p.error(f"{flag} must be at least 1, got {value}")
    if args.lr <= 0:
        p.error(f"--lr must be positive, got {args.lr}")
    if not (args.lmbda >= 0 and args.lmbda < float("inf")):
        p.error(f"--lmbda must be a finite number >= 0, got {args.lmbda}")
    if not (args.input_scale > 0 and args.input_scale < float("inf")):
        p.error(f"--input-scale must be a finite number > 0, got {args.input_scale}")
    if args.init == "normal":
        args.init = "large"
    if any(n < 1 for n in args.hidden):
        p.error(f"--hidden sizes must be positive, got {args.hidden}")
    if args.ddp and args.fused:
        p.error("--fused updates in place without autograd, which DDP cannot synchronise: use one or the other")
    return args


def start_processes(args):
    """Selects bp_torch's backend, and under --ddp joins torchrun's process group (gloo): returns (rank, world_size),
    (0, 1) for a single process."""
    if args.backend:
        try:
            bp_torch.set_backend(args.backend)
        except ValueError as err:
            raise UserError(str(err)) from None
    if not args.ddp:
        return 0, 1
    import torch.distributed as dist

    if "RANK" not in os.environ:
        raise UserError(
            "--ddp runs under torchrun, e.g. bash scripts/env.sh torchrun --nproc_per_node=2 "
            "examples/train_digits.py --ddp"
        )
    if args.batch_size % int(os.environ["WORLD_SIZE"]):
        raise UserError(
            f"--batch-size {args.batch_size} must be a multiple of the number of processes "
            f"({os.environ['WORLD_SIZE']}) under --ddp"
        )
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def run(program, work, args):
    """``work(args)``, with a user's mistake as one ``PROGRAM: error: ...`` line and exit status 2."""
    try:
        work(args)
    except UserError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except OSError as err:  # an output that cannot be written (a full disk, a read-only folder)
        print(f"{program}: error: cannot write {err.filename or 'an output'}: {err.strerror or err}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
