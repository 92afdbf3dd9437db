"""The data: scikit-learn's 8x8 digits (bundled, offline) or torchvision's MNIST, and each epoch's shuffle."""

import os

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from .errors import UserError

DIGITS_SPLIT = {"test_size": 0.25, "random_state": 0}  # fixed, whatever --seed is


def load_digits_split():
    """scikit-learn's 8x8 digits, split 75/25 (stratified, fixed), as float32 tensors in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy((digits.data / 16.0).astype(np.float32))
    y = torch.from_numpy(digits.target.astype(np.int64))
    x_train, x_test, y_train, y_test = train_test_split(x, y, stratify=y, shuffle=True, **DIGITS_SPLIT)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "image_shape": [8, 8],
        "pixel_max": 16.0,
    }


def mnist_missing_files(root):
    """The uncompressed IDX files torchvision.datasets.MNIST needs that are not under ``root/MNIST/raw/``."""
    from torchvision.datasets import MNIST

    raw = os.path.join(root, "MNIST", "raw")
    names = [os.path.splitext(os.path.basename(url))[0] for url, _ in MNIST.resources]
    return raw, [name for name in names if not os.path.isfile(os.path.join(raw, name))]


def load_mnist_split(root, download=False):
    """MNIST's 60,000 training and 10,000 test images through torchvision, flattened to 784 floats in [0, 1]."""
    from torchvision.datasets import MNIST

    if root is None:
        raise UserError("--dataset mnist needs --data-dir ROOT (the folder that holds, or will hold, MNIST/raw/)")
    raw, missing = mnist_missing_files(root)
    if missing and not download:
        raise UserError(
            f"MNIST not found: {raw} lacks {', '.join(missing)}. Rerun with --download to fetch them "
            f"(from {MNIST.mirrors[0]}), or put MNIST's uncompressed IDX files there."
        )
    try:
        train = MNIST(root, train=True, download=download)
        test = MNIST(root, train=False)
    except (RuntimeError, OSError, ValueError, AssertionError) as err:
        detail = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"could not {'download or ' if download else ''}read MNIST under {raw}: {detail}") from None

    def flat(ds):
        return ds.data.reshape(len(ds.data), -1).to(torch.float32).div_(255.0), ds.targets.to(torch.int64)

    (x_train, y_train), (x_test, y_test) = flat(train), flat(test)
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "image_shape": [28, 28],
        "pixel_max": 255.0,
    }


def load_dataset(name, data_dir=None, download=False):
    if name == "digits":
        return load_digits_split()
    return load_mnist_split(data_dir, download)


def epoch_batches(n, batch_size, seed, epoch, rank=0, world_size=1):
    """This rank's mini-batches (index tensors) for one epoch.

    The shuffle is ``DistributedSampler``'s (``randperm`` seeded with ``seed + epoch``), for one process too, so a
    single process and ``world_size`` processes see the same global order: rank ``r`` takes every ``world_size``-th
    index from ``r`` on, in mini-batches of ``batch_size // world_size``, and the k-th mini-batches of all the ranks
    together are the k-th global mini-batch of ``batch_size``. With several ranks the sampler pads the epoch to a
    multiple of ``world_size`` by repeating its first indices.
    """
    if batch_size % world_size:
        raise ValueError(f"--batch-size {batch_size} is not a multiple of the number of processes {world_size}")
    sampler = DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.int64).split(batch_size // world_size)
