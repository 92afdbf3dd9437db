r"""Train a handwritten-digit classifier with bp_torch's layers, the way the chapter (and Nielsen's book) does.

    python examples/train_digits.py                  # scikit-learn's 1,797 real 8x8 digits: offline, seconds
    python examples/train_digits.py --dataset mnist --data-dir ~/data --download     # Nielsen's MNIST run
    torchrun --nproc_per_node=2 examples/train_digits.py --ddp                         # DistributedDataParallel

(From a checkout, each through ``bash scripts/env.sh``: ``bash scripts/env.sh torchrun --nproc_per_node=2 ...``.)

The default run trains on ``sklearn.datasets.load_digits`` (1,797 real handwritten digits, 8x8 pixels, bundled with
scikit-learn, so nothing is downloaded) with a fixed, stratified 75/25 train/test split (1,347 / 450 images,
``random_state=0`` whatever ``--seed`` is) and pixels scaled to [0, 1]. The network is a ``[64, 30, 10]``
:class:`bp_torch.SigmoidMLP`, the cost :class:`bp_torch.QuadraticCost` (Nielsen's ``C = 1/2n sum ||y - a||^2``,
``y`` one-hot), trained by mini-batch SGD with the chapter's defaults: batch 10, eta 3.0, 30 epochs. Each epoch
reshuffles the training set. It reaches about 97-98% test accuracy in a few seconds on 2 cores.

``--dataset mnist --data-dir ROOT`` reads MNIST through ``torchvision.datasets.MNIST(ROOT)`` (the uncompressed IDX
files under ``ROOT/MNIST/raw/``; ``--download`` fetches them) and trains Nielsen's ``[784, 30, 10]``, eta 3.0, batch
10, 30 epochs, on the 60,000 training images (Nielsen trains on 50,000 and keeps 10,000 for validation), testing on
the 10,000 test images. Nielsen reports about 95% (95.42% at the best epoch); ``--hidden 100`` about 96.6%.

Initialisation (``--init``, the library's ``SigmoidMLP(init=...)``). The default, ``torch``, is ``nn.Linear``'s own:
``U(-1/sqrt(n_in), 1/sqrt(n_in))`` for weights and biases. ``large`` is Nielsen's chapter-1 N(0, 1) for every weight
and bias (``normal`` is another name for it), which on the 8x8 digits with batch 10 and eta 3.0 saturates units
early, so that some runs stall (see BENCHMARKS.md); ``nielsen`` is his chapter-3 ``default_weight_initializer``,
N(0, 1/n_in) weights and N(0, 1) biases.

The next chapter (Nielsen's ``network2.py``): ``--cost cross-entropy`` trains on the cross-entropy cost, whose output
error ``delta^L = a^L - y`` has no ``sigma'(z^L)`` factor to slow a saturated unit down; ``--lmbda L`` adds L2
regularisation, ``w <- (1 - eta L / n) w - eta dC/dw`` for ``n`` training images (``torch.optim.SGD``'s
``weight_decay = L / n`` on the weights, none on the biases, or ``sgd_epoch(weight_decay=...)`` under ``--fused``);
``--input-scale S`` multiplies the pixels by ``S``, a way to start saturated. ``benchmarks/compare_costs.py`` runs
the comparison of README.md and BENCHMARKS.md with these flags.

Other flags: ``--epochs``, ``--batch-size``, ``--lr``, ``--hidden`` (one or more hidden-layer sizes, e.g. ``--hidden 100
30``), ``--seed`` (the initialisation and the shuffles; runs with the same seed, backend and thread count give the
same numbers), ``--backend python|cpp`` (bp_torch's backend; default: bp_torch's own default), ``--fused`` (each
epoch is one :meth:`bp_torch.SigmoidMLP.sgd_epoch`, a single C++ op call that runs every update of the epoch with
no autograd, instead of cost, ``backward()`` and ``torch.optim.SGD`` per mini-batch; it takes the mini-batches in
the same shuffled order, so it gives the same network up to rounding).

Outputs:

* a tqdm progress bar and one line per epoch: the cost (``--cost``'s, without the L2 term) on the whole training
  set, train and test accuracy;
* ``--metrics-json PATH``: ``{"dataset", "test_accuracy", "train_seconds", "epochs", "history": [...], ...}``, where
  ``train_seconds`` is the wall time of the whole epoch loop (updates and per-epoch evaluation) and each history
  entry is ``{"epoch", "cost", "train_accuracy", "test_accuracy", "seconds"}``, ``seconds`` being that epoch's
  updates alone; accuracies are fractions in [0, 1];
* ``--plot PATH.png``: cost and accuracy per epoch, the test confusion matrix, and the incoming weights of the first
  hidden units drawn as images;
* ``--save PATH``: a checkpoint of plain tensors, lists and strings (it loads with ``torch.load``'s default
  ``weights_only=True``) whose ``"state_dict"`` is already keyed for a plain ``nn.Sequential`` of ``nn.Linear`` and
  ``nn.Sigmoid``, so using the model needs no bp_torch::

      import torch
      from torch import nn

      ckpt = torch.load("digits.pt")
      sizes = ckpt["sizes"]                            # [64, 30, 10]
      net = nn.Sequential(*[m for n_in, n_out in zip(sizes, sizes[1:]) for m in (nn.Linear(n_in, n_out), nn.Sigmoid())])
      net.load_state_dict(ckpt["state_dict"])          # the one-liner: keys "0.weight", "0.bias", "2.weight", ...
      digit = net(torch.rand(1, 64)).argmax(1)

  The checkpoint also holds ``"dataset"``, ``"image_shape"`` (``[8, 8]`` or ``[28, 28]``), ``"pixel_max"`` (the
  raw pixel value that maps to 1.0: 16 for the digits, 255 for MNIST), ``"test_accuracy"`` and ``"args"``.
  ``examples/predict_digits.py CHECKPOINT`` uses it.

Several processes: ``--ddp`` (under ``torchrun``) wraps the network in ``DistributedDataParallel`` on the gloo backend
(CPU). Every epoch, each rank takes its shard of the same global shuffle (``DistributedSampler``, seeded with
``--seed``, ``set_epoch`` each epoch) in mini-batches of ``batch_size / world_size``; DDP averages the gradients, so
each update is the single-process update on the same 10 images (the sampler interleaves ranks, so the k-th
mini-batches of all ranks together are the k-th mini-batch of the single-process run). Rank 0 evaluates, prints and
writes the outputs. ``--fused`` updates in place without autograd, which DDP cannot synchronise, so the two don't
combine.
"""

import json
import os
import sys
import time

import torch

import bp_torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits import cli, data, outputs  # noqa: E402  (the example's helpers, beside this file)
from digits.errors import check_output_paths, need_matplotlib  # noqa: E402


def build_model(sizes, seed, init="torch", dtype=torch.float32):
    """A seeded :class:`bp_torch.SigmoidMLP` with the library's ``init``: ``"torch"`` (nn.Linear's), ``"nielsen"``
    or ``"large"``."""
    torch.manual_seed(seed)
    return bp_torch.SigmoidMLP(sizes, dtype=dtype, init=init)


def train(args):
    from tqdm import tqdm

    check_output_paths(args)
    if args.plot:
        need_matplotlib("--plot")
    rank, world_size = cli.start_processes(args)
    if args.ddp and args.download and rank != 0:
        torch.distributed.barrier()  # rank 0 downloads first; the others then read its files
    dataset = data.load_dataset(args.dataset, args.data_dir, args.download)
    if args.ddp and args.download and rank == 0:
        torch.distributed.barrier()
    x_train, y_train, x_test, y_test = (dataset[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    x_train, x_test = args.input_scale * x_train, args.input_scale * x_test

    # The network and cost: a^l = sigma(w^l a^(l-1) + b^l); C = 1/2n sum_x ||y(x) - a^L(x)||^2 (quadratic) or
    # C = -1/n sum_x sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)] (cross-entropy), y one-hot
    sizes = [x_train.shape[1], *args.hidden, 10]
    net = build_model(sizes, args.seed, args.init)
    y_train_hot = torch.nn.functional.one_hot(y_train, 10).to(torch.float32)
    model = torch.nn.parallel.DistributedDataParallel(net) if args.ddp else net
    cost = args.cost.replace("-", "_")  # the library's name, "cross_entropy"
    cost_fn = bp_torch.CrossEntropyCost() if cost == "cross_entropy" else bp_torch.QuadraticCost()
    # L2: w <- (1 - eta lambda/n) w - eta dC/dw, torch.optim.SGD's weight_decay = lambda/n on the weights only
    weight_decay = args.lmbda / len(x_train)
    optimizer = torch.optim.SGD(
        [
            {"params": [layer.weight for layer in net], "weight_decay": weight_decay},
            {"params": [layer.bias for layer in net], "weight_decay": 0.0},
        ],
        lr=args.lr,
    )

    def log(line):
        if rank == 0:
            tqdm.write(line)

    mode = f"{world_size} processes (DDP, gloo)" if args.ddp else "1 process"
    log(
        f"{args.dataset}: {len(x_train)} training / {len(x_test)} test images; network {sizes}, {args.cost} cost, "
        f"init {args.init}, lambda {args.lmbda:g}, SGD batch {args.batch_size}, eta {args.lr}, {args.epochs} epochs; "
        f"backend {bp_torch.backend()}"
        f"{', fused sgd_epoch' if args.fused else ''}; {mode}; seed {args.seed}"
    )
    n_batches = len(data.epoch_batches(len(x_train), args.batch_size, args.seed, 0, rank, world_size))
    bar = tqdm(
        total=args.epochs * n_batches,
        unit="batch",
        desc="training",
        leave=False,
        disable=rank != 0 or args.no_progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    history = []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        if args.fused:
            # The same shuffle as epoch_batches' (DistributedSampler's randperm seeded with seed + epoch), and the
            # whole epoch of updates in one call, without autograd
            shuffle = torch.Generator().manual_seed(args.seed + epoch)
            net.sgd_epoch(
                x_train, y_train_hot, args.lr, args.batch_size, generator=shuffle, cost=cost, weight_decay=weight_decay
            )
            bar.update(n_batches)
        else:
            # Stochastic gradient descent: for each mini-batch, the cost, back-propagation, the update
            for idx in data.epoch_batches(len(x_train), args.batch_size, args.seed, epoch, rank, world_size):
                optimizer.zero_grad(set_to_none=True)
                cost_fn(model(x_train[idx]), y_train_hot[idx]).backward()
                optimizer.step()
                bar.update()
        seconds = time.perf_counter() - t0
        if rank == 0:
            train_cost, train_acc, _ = outputs.evaluate(net, x_train, y_train, cost_fn=type(cost_fn)("sum"))
            _, test_acc, _ = outputs.evaluate(net, x_test, y_test)
            history.append(
                {
                    "epoch": epoch + 1,
                    "cost": train_cost,
                    "train_accuracy": train_acc,
                    "test_accuracy": test_acc,
                    "seconds": seconds,
                }
            )
            log(
                f"epoch {epoch + 1:{len(str(args.epochs))}d}/{args.epochs}  cost {train_cost:.5f}  "
                f"train {100 * train_acc:6.2f}%  test {100 * test_acc:6.2f}%  ({seconds:.2f} s)"
            )
    train_seconds = time.perf_counter() - start
    bar.close()
    if args.ddp:
        # No rank tears the group down while another may still be talking to it: gloo can abort a process whose
        # peer vanished mid-exchange
        del model
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank != 0:
        return None

    _, test_acc, test_pred = outputs.evaluate(net, x_test, y_test)
    print(
        f"test accuracy {100 * test_acc:.2f}% ({round(test_acc * len(x_test))}/{len(x_test)}) after "
        f"{args.epochs} epochs, {train_seconds:.1f} s of training"
    )
    metrics = {
        "dataset": args.dataset,
        "test_accuracy": test_acc,
        "train_seconds": train_seconds,
        "epochs": args.epochs,
        "history": history,
        "sizes": sizes,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "init": args.init,
        "cost": args.cost,
        "lmbda": args.lmbda,
        "weight_decay": weight_decay,
        "input_scale": args.input_scale,
        "backend": bp_torch.backend(),
        "fused": args.fused,
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
    }
    if args.metrics_json:
        with open(args.metrics_json, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")
    if args.plot:
        outputs.save_plot(
            args.plot,
            history,
            outputs.confusion_matrix(y_test, test_pred),
            net[0].weight.detach(),
            dataset["image_shape"],
            f"bp_torch {sizes} on {args.dataset}: {100 * test_acc:.2f}% test accuracy after "
            f"{args.epochs} epochs (batch {args.batch_size}, eta {args.lr})",
        )
    if args.save:
        outputs.save_checkpoint(args.save, net, sizes, dataset, test_acc, args)
    return metrics


def main(argv=None):
    return cli.run("train_digits.py", train, cli.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
