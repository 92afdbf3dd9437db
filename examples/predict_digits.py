r"""Try a network trained by ``examples/train_digits.py --save CHECKPOINT``: predict digits with plain torch layers.

    python examples/train_digits.py --save digits.pt
    python examples/predict_digits.py digits.pt                     # the first 5 test images of the same split
    python examples/predict_digits.py digits.pt --count 10 --start 100
    python examples/predict_digits.py digits.pt --image my_digit.png

The model is a plain ``nn.Sequential(nn.Linear, nn.Sigmoid, ...)`` loaded from the checkpoint's ``"state_dict"``:
bp_torch is not used to predict (the test images come from the example's own loader, ``digits.data``, so the split
is the one the network was tested on). For MNIST checkpoints, pass ``--data-dir ROOT`` (the training run's one is the
default).

For each image it prints the true digit (when known), the predicted one, and the class probabilities. The network
has sigmoid outputs trained with the quadratic cost, not a softmax: the "probabilities" are its 10 output activations
divided by their sum (the raw activations are printed too with ``--raw``).

``--image PATH`` reads any image file matplotlib can read (PNG; JPEG and others through Pillow), converts it to grey,
resizes it to the network's input (8x8 or 28x28, by averaging), and scales it to [0, 1] with the ink bright, as in the
training data: an image whose border is bright (dark ink on white paper) is inverted first.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits import data, outputs  # noqa: E402  (the data loaders and the plain-torch model, beside this file)
from digits.errors import USAGE_ERROR, UserError, need_matplotlib  # noqa: E402


def load_model(path):
    not_ours = f"{path} is not a checkpoint written by train_digits.py --save"
    try:
        ckpt = torch.load(path, map_location="cpu")  # weights_only=True: tensors, lists, strings
    except OSError as err:
        raise UserError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except Exception as err:  # torch.load's errors for a file that is not one it wrote are of many kinds
        raise UserError(f"{not_ours} (torch.load cannot read it: {type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != outputs.CHECKPOINT_FORMAT:
        raise UserError(f'{not_ours} (it holds a {type(ckpt).__name__} without its "format")')
    try:
        net = outputs.plain_sequential(ckpt["sizes"])
        net.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = " ".join(str(err).split())  # load_state_dict's message spans lines: one line here
        raise UserError(f"{path}: the checkpoint's network does not load ({detail[:300]})") from None
    return net.eval(), ckpt


def read_image(path, image_shape):
    """An image file as a flat float32 tensor in [0, 1], ink bright, resized to ``image_shape`` by area averaging."""
    need_matplotlib("--image")
    import matplotlib.image

    try:
        img = np.asarray(matplotlib.image.imread(path), dtype=np.float64)
    except (OSError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read image {path}: {err}") from None
    if img.max() > 1.0:  # 8-bit data (JPEG through Pillow)
        img = img / 255.0
    if img.ndim == 3:
        if img.shape[2] == 4:  # composite over white
            img = img[..., :3] * img[..., 3:] + (1.0 - img[..., 3:])
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    if border.mean() > 0.5:
        img = 1.0 - img
    t = torch.from_numpy(img).to(torch.float32)[None, None]
    t = torch.nn.functional.interpolate(t, size=tuple(image_shape), mode="area")[0, 0]
    if t.max() > 0:
        t = t / t.max()
    return t.reshape(1, -1)


def ascii_image(x, image_shape):
    shades = " .:-=+*#%@"
    rows = x.reshape(image_shape)
    return "\n".join(
        "    " + "".join(shades[min(int(v * len(shades)), len(shades) - 1)] * 2 for v in row) for row in rows.tolist()
    )


def main(argv=None):
    p = argparse.ArgumentParser(description="Predict digits with a checkpoint of examples/train_digits.py.")
    p.add_argument("checkpoint", help="the file that train_digits.py --save wrote")
    p.add_argument(
        "--image",
        metavar="PATH",
        help="an image file to classify instead of test images (needs matplotlib: pip install 'bp_torch[plot]')",
    )
    p.add_argument("--count", type=int, default=5, help="how many test images; default: 5")
    p.add_argument("--start", type=int, default=0, help="index of the first test image; default: 0")
    p.add_argument("--data-dir", metavar="ROOT", help="MNIST's root (MNIST checkpoints); default: the training one")
    p.add_argument("--show", action="store_true", help="draw each image in ASCII")
    p.add_argument("--raw", action="store_true", help="print the raw sigmoid outputs too")
    args = p.parse_args(argv)

    try:
        net, ckpt = load_model(args.checkpoint)
        image_shape = ckpt["image_shape"]
        if args.image:
            x, labels, names = read_image(args.image, image_shape), [None], [args.image]
        else:
            data_dir = args.data_dir or ckpt["args"].get("data_dir")
            dataset = data.load_dataset(ckpt["dataset"], data_dir)
            n = len(dataset["x_test"])
            if not 0 <= args.start < n:
                raise UserError(f"--start must be in [0, {n}), got {args.start}")
            stop = min(args.start + max(args.count, 1), n)
            x, labels = dataset["x_test"][args.start : stop], dataset["y_test"][args.start : stop].tolist()
            names = [f"test image {i}" for i in range(args.start, stop)]
    except (UserError, OSError, RuntimeError) as err:
        detail = " ".join(str(err).split())  # one line, whatever the error
        print(f"predict_digits.py: error: {detail}", file=sys.stderr)
        return USAGE_ERROR

    with torch.no_grad():
        out = net(x)
    probs = out / out.sum(dim=1, keepdim=True)
    print(
        f"{args.checkpoint}: {ckpt['dataset']} network {ckpt['sizes']}, test accuracy at save "
        f"{100 * ckpt['test_accuracy']:.2f}%"
    )
    for name, label, xi, o, pr in zip(names, labels, x, out, probs):
        pred = int(pr.argmax())
        truth = "" if label is None else f"true {label}, " + ("right" if label == pred else "WRONG") + ", "
        print(f"{name}: {truth}predicted {pred} (p={pr[pred]:.3f})")
        if args.show:
            print(ascii_image(xi, image_shape))
        print("    p: " + "  ".join(f"{d}:{v:.3f}" for d, v in enumerate(pr.tolist())))
        if args.raw:
            print("  raw: " + "  ".join(f"{d}:{v:.3f}" for d, v in enumerate(o.tolist())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
