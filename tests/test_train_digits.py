"""examples/train_digits.py and examples/predict_digits.py, end to end (issue 5).

Each test runs once per backend (tests/conftest.py); the subprocess runs pass ``--backend`` from the fixture.
"""

import importlib.util
import json
import os
import queue as queue_module
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bp_torch

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "train_digits.py"
PREDICT = ROOT / "examples" / "predict_digits.py"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # predict_digits imports train_digits by name
    spec.loader.exec_module(module)
    return module


def run_example(script, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "BP_TORCH_BACKEND"}
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def digits_test_split():
    """The split the example documents: stratified 75/25, random_state=0, pixels / 16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    _, x_test, _, y_test = train_test_split(d.data / 16.0, d.target, test_size=0.25, stratify=d.target, random_state=0)
    return torch.tensor(x_test, dtype=torch.float32), torch.tensor(y_test)


def plain_net(sizes):
    return nn.Sequential(*[m for n_in, n_out in zip(sizes, sizes[1:]) for m in (nn.Linear(n_in, n_out), nn.Sigmoid())])


def test_digits_end_to_end(tmp_path, backend, capsys):
    metrics_path, plot_path, ckpt_path = tmp_path / "m.json", tmp_path / "plot.png", tmp_path / "digits.pt"
    r = run_example(
        TRAIN,
        "--epochs",
        3,
        "--seed",
        1,
        "--backend",
        backend,
        "--no-progress",
        "--metrics-json",
        metrics_path,
        "--plot",
        plot_path,
        "--save",
        ckpt_path,
    )
    assert r.returncode == 0, r.stderr
    assert f"backend {backend}" in r.stdout
    epoch_lines = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"]

    # the metrics file
    m = json.loads(metrics_path.read_text())
    assert {"dataset", "test_accuracy", "train_seconds", "epochs", "history"} <= m.keys()
    assert m["dataset"] == "digits" and m["epochs"] == 3 and m["backend"] == backend
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert m["train_seconds"] > 0
    for h in m["history"]:
        assert 0 <= h["train_accuracy"] <= 1 and 0 <= h["test_accuracy"] <= 1 and h["cost"] > 0
    assert m["test_accuracy"] == m["history"][-1]["test_accuracy"]
    assert m["history"][-1]["cost"] < m["history"][0]["cost"]
    assert m["test_accuracy"] > 0.85  # three epochs of the chapter's SGD already classify most digits
    assert f"{100 * m['test_accuracy']:.2f}%" in epoch_lines[-1]

    # the plot is a real PNG
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(plot_path)
    assert img.ndim == 3 and img.shape[0] >= 400 and img.shape[1] >= 600
    assert img[..., :3].std() > 0.05  # not a blank canvas

    # the checkpoint loads into plain torch layers, with weights_only=True, and predicts what bp_torch predicts
    ckpt = torch.load(ckpt_path)
    assert ckpt["sizes"] == [64, 30, 10]
    plain = plain_net(ckpt["sizes"])
    plain.load_state_dict(ckpt["state_dict"])
    ours = bp_torch.SigmoidMLP(ckpt["sizes"])
    ours.load_state_dict({f"{int(k.split('.')[0]) // 2}.{k.split('.')[1]}": v for k, v in ckpt["state_dict"].items()})
    x_test, y_test = digits_test_split()
    with torch.no_grad():
        a_plain, a_ours = plain(x_test), ours(x_test)
    torch.testing.assert_close(a_plain, a_ours, rtol=1e-5, atol=1e-6)
    assert torch.equal(a_plain.argmax(1), a_ours.argmax(1))
    # ... and it is the network whose accuracy the run reported
    assert (a_plain.argmax(1) == y_test).sum().item() == round(m["test_accuracy"] * len(y_test))

    # predict_digits.py prints the same predictions, with probabilities that sum to 1
    predict = load_example("predict_digits")
    assert predict.main([str(ckpt_path), "--count", "4", "--start", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    heads = [line for line in out if line.startswith("test image ")]
    probs = [line for line in out if line.strip().startswith("p:")]
    assert [h.split(":")[0] for h in heads] == [f"test image {i}" for i in range(10, 14)]
    for i, (head, prob) in enumerate(zip(heads, probs)):
        assert f"true {y_test[10 + i].item()}," in head
        assert f"predicted {a_plain[10 + i].argmax().item()} " in head
        values = [float(item.split(":")[1]) for item in prob.split()[1:]]
        assert len(values) == 10 and abs(sum(values) - 1) < 0.01

    # ... and for an image file: a test digit drawn dark on white, 8 times larger, reads back as that digit
    import matplotlib.pyplot as plt

    digit = x_test[20].reshape(8, 8)
    png = tmp_path / "digit.png"
    plt.imsave(png, np.kron(1 - digit.numpy(), np.ones((8, 8))), cmap="gray", vmin=0, vmax=1)
    assert predict.main([str(ckpt_path), "--image", str(png)]) == 0
    with torch.no_grad():
        expected = plain((digit / digit.max()).reshape(1, 64)).argmax().item()
    assert f"{png}: predicted {expected} " in capsys.readouterr().out


def write_idx(path, array):
    """An uncompressed IDX file as MNIST's: big-endian header, magic 0x0800 | ndim (unsigned bytes)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def fake_mnist(n, rng):
    """28x28 uint8 images whose class is where a bright 7x7 square sits (a 4x3 grid of places), plus noise."""
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for img, label in zip(images, labels):
        r, c = divmod(int(label), 3)
        img[r * 7 : r * 7 + 7, c * 9 + 1 : c * 9 + 8] = 255
    return images, labels


def test_mnist_path_on_idx_files(tmp_path, backend):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 300), ("t10k", 100)):
        images, labels = fake_mnist(n, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    metrics_path, ckpt_path = tmp_path / "m.json", tmp_path / "mnist.pt"
    r = run_example(
        TRAIN,
        "--dataset",
        "mnist",
        "--data-dir",
        tmp_path,
        "--epochs",
        3,
        "--fused",
        "--backend",
        backend,
        "--no-progress",
        "--metrics-json",
        metrics_path,
        "--save",
        ckpt_path,
    )
    assert r.returncode == 0, r.stderr
    assert "mnist: 300 training / 100 test images" in r.stdout
    m = json.loads(metrics_path.read_text())
    assert m["dataset"] == "mnist" and m["epochs"] == 3 and m["fused"] is True
    # the labels line up with the images only if the files were read right: chance would be ~10%
    assert m["test_accuracy"] >= 0.9
    ckpt = torch.load(ckpt_path)
    assert ckpt["sizes"] == [784, 30, 10] and ckpt["image_shape"] == [28, 28]


def test_mnist_missing_files_is_one_line_error(tmp_path, backend):
    r = run_example(TRAIN, "--dataset", "mnist", "--data-dir", tmp_path, "--backend", backend)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert str(tmp_path / "MNIST" / "raw") in lines[0]
    assert all(name in lines[0] for name in MNIST_FILES)
    assert "--download" in lines[0]


def test_mnist_partly_missing_names_what_is_missing(tmp_path, backend, capsys):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = fake_mnist(5, np.random.default_rng(1))
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    train_digits = load_example("train_digits")
    assert train_digits.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "t10k-images-idx3-ubyte" in err and "t10k-labels-idx1-ubyte" in err
    assert "train-images-idx3-ubyte" not in err and "train-labels-idx1-ubyte" not in err


def test_seed_makes_runs_reproducible(tmp_path, backend):
    train_digits = load_example("train_digits")
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        path = tmp_path / f"{name}.json"
        assert (
            train_digits.main(
                [
                    "--epochs",
                    "2",
                    "--seed",
                    str(seed),
                    "--backend",
                    backend,
                    "--no-progress",
                    "--metrics-json",
                    str(path),
                ]
            )
            == 0
        )
        runs[name] = [
            (h["cost"], h["train_accuracy"], h["test_accuracy"]) for h in json.loads(path.read_text())["history"]
        ]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_fused_epochs_train_as_the_autograd_loop(tmp_path, backend):
    """--fused (one sgd_epoch call per epoch) takes the same shuffled mini-batches as the autograd loop, so the two
    runs learn the same network: their per-epoch costs and accuracies agree up to float32 rounding."""
    train_digits = load_example("train_digits")
    runs = {}
    for fused in (False, True):
        path = tmp_path / f"fused-{fused}.json"
        assert (
            train_digits.main(
                ["--epochs", "3", "--seed", "3", "--backend", backend, "--no-progress", "--metrics-json", str(path)]
                + ["--fused"] * fused
            )
            == 0
        )
        runs[fused] = json.loads(path.read_text())
    assert runs[True]["fused"] is True and runs[False]["fused"] is False
    for plain, fused in zip(runs[False]["history"], runs[True]["history"]):
        assert fused["cost"] == pytest.approx(plain["cost"], rel=1e-3)
        assert abs(fused["test_accuracy"] - plain["test_accuracy"]) <= 2 / 450  # at most 2 of 450 images
    assert runs[True]["test_accuracy"] > 0.85  # it learned: chance is 10%


def _ddp_worker(rank, world_size, init_file, backend, seed, queue):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import bp_torch

    bp_torch.set_backend(backend)
    train_digits = load_example("train_digits")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        data = train_digits.data.load_digits_split()
        x, y = data["x_train"].double(), data["y_train"]
        net = train_digits.build_model([64, 30, 10], seed, dtype=torch.float64)
        model = DistributedDataParallel(net)
        idx = train_digits.data.epoch_batches(len(x), 10, seed, 0, rank, world_size)[0]
        target = torch.nn.functional.one_hot(y[idx], 10).double()
        bp_torch.QuadraticCost()(model(x[idx]), target).backward()
        queue.put((rank, idx.tolist(), [p.grad.flatten().tolist() for p in net.parameters()]))
        # DDP's reducer refers to the group: it goes first, and neither rank tears the group down while the other
        # may still be talking to it (gloo can abort a process whose peer vanished mid-exchange).
        del model
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_single_process(tmp_path, backend):
    import torch.multiprocessing as mp

    train_digits = load_example("train_digits")
    seed, world_size = 3, 2
    queue = mp.get_context("spawn").Queue()
    procs = mp.spawn(
        _ddp_worker, args=(world_size, tmp_path / "init", backend, seed, queue), nprocs=world_size, join=False
    )
    results, deadline = [], time.monotonic() + 120
    while len(results) < world_size:
        try:
            results.append(queue.get(timeout=0.5))
        except queue_module.Empty:
            procs.join(timeout=0)  # re-raises a worker's exception, rather than waiting for its result forever
            assert time.monotonic() < deadline, "the DDP workers gave no result in 120 s"
    while not procs.join(timeout=1):
        assert time.monotonic() < deadline, "the DDP workers did not exit in 120 s"
    results.sort()

    # one process, the same network, the whole first mini-batch of the epoch
    data = train_digits.data.load_digits_split()
    x, y = data["x_train"].double(), data["y_train"]
    net = train_digits.build_model([64, 30, 10], seed, dtype=torch.float64)
    idx = train_digits.data.epoch_batches(len(x), 10, seed, 0)[0]
    bp_torch.QuadraticCost()(net(x[idx]), torch.nn.functional.one_hot(y[idx], 10).double()).backward()
    expected = [p.grad.flatten() for p in net.parameters()]

    # the ranks' shards are disjoint halves of that mini-batch
    shards = [set(r[1]) for r in results]
    assert len(shards[0]) == len(shards[1]) == 5 and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(idx.tolist())
    # every rank ends with the single-process gradient (the mean over the 10 samples), not its half's
    for _, _, grads in results:
        assert len(grads) == len(expected)
        for got, want in zip(grads, expected):
            assert want.abs().max() > 0
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, rtol=1e-10, atol=1e-13)


def test_cross_entropy_l2_and_init_flags(tmp_path, backend):
    """--cost cross-entropy --lmbda L --init nielsen: the fused epochs (sgd_epoch(cost=..., weight_decay=L/n)) and the
    autograd loop (CrossEntropyCost, torch.optim.SGD with weight_decay on the weights only) learn the same network,
    the metrics record the flags, and the model starts from the library's init."""
    train_digits = load_example("train_digits")
    runs = {}
    for fused in (False, True):
        path = tmp_path / f"ce-{fused}.json"
        assert (
            train_digits.main(
                [
                    "--epochs",
                    "3",
                    "--seed",
                    "4",
                    "--backend",
                    backend,
                    "--no-progress",
                    "--cost",
                    "cross-entropy",
                    "--lmbda",
                    "5",
                    "--init",
                    "nielsen",
                    "--lr",
                    "0.5",
                    "--metrics-json",
                    str(path),
                ]
                + ["--fused"] * fused
            )
            == 0
        )
        runs[fused] = json.loads(path.read_text())
    plain = runs[False]
    assert (plain["cost"], plain["lmbda"], plain["init"]) == ("cross-entropy", 5.0, "nielsen")
    assert plain["weight_decay"] == pytest.approx(5.0 / 1347)
    for a, b in zip(runs[False]["history"], runs[True]["history"]):
        assert b["cost"] == pytest.approx(a["cost"], rel=1e-3)
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 2 / 450
    assert plain["test_accuracy"] > 0.85
    # the reported cost is the cross-entropy (sum over 10 outputs, so well above the quadratic's 1/2 sum ...)
    assert plain["history"][0]["cost"] > 0.1
    torch.manual_seed(4)
    expected = bp_torch.SigmoidMLP([64, 30, 10], init="nielsen")
    net = train_digits.build_model([64, 30, 10], 4, "nielsen")
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), expected.parameters()))


def test_lmbda_decays_the_weights_and_normal_is_large(tmp_path, backend):
    train_digits = load_example("train_digits")
    norms = {}
    for lmbda in ("0", "50"):
        ckpt = tmp_path / f"l{lmbda}.pt"
        assert (
            train_digits.main(
                [
                    "--epochs",
                    "2",
                    "--seed",
                    "1",
                    "--backend",
                    backend,
                    "--no-progress",
                    "--fused",
                    "--lmbda",
                    lmbda,
                    "--save",
                    str(ckpt),
                ]
            )
            == 0
        )
        state = torch.load(ckpt)["state_dict"]
        norms[lmbda] = (state["0.weight"].norm().item(), state["0.bias"].norm().item())
    assert norms["50"][0] < 0.5 * norms["0"][0]  # (1 - 3.0 * 50/1347) per step shrinks the weights
    args = train_digits.cli.parse_args(["--init", "normal"])
    assert args.init == "large"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cost", "mse"], "argument --cost: invalid choice: 'mse'"),
        (["--init", "xavier"], "argument --init: invalid choice: 'xavier'"),
        (["--lmbda", "-1"], "--lmbda must be a finite number >= 0, got -1.0"),
        (["--lmbda", "nan"], "--lmbda must be a finite number >= 0, got nan"),
        (["--input-scale", "0"], "--input-scale must be a finite number > 0, got 0.0"),
    ],
)
def test_new_flags_refuse_bad_values(argv, message, backend):
    result = run_example(TRAIN, *argv, "--backend", backend)
    assert result.returncode == 2 and message in result.stderr, result.stderr
