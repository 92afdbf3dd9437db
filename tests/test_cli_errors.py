"""The project's command lines as a newcomer meets them (issue 24): `python -m bp_torch.explain` takes the checkpoint
that `examples/train_digits.py --save` writes, every example answers --help, and each mistake (a missing file, a
file that is not a checkpoint, a shape that does not fit, no matplotlib for a picture) ends in one line,
`PROGRAM: error: ...`, with exit status 2 and no traceback.

The explain runs pass the backend of the fixture (tests/conftest.py); the examples' errors come before any backend
computes, so those run once, under "python".
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
examples_only_once = pytest.mark.backends("python")


def run(args, cwd=ROOT, hide_matplotlib=None):
    env = {k: v for k, v in os.environ.items() if k != "BP_TORCH_BACKEND"}
    path = [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    if hide_matplotlib is not None:
        # a package named matplotlib that fails to import, first on the path: Python as it is without matplotlib
        fake = hide_matplotlib / "matplotlib"
        fake.mkdir(parents=True, exist_ok=True)
        (fake / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
        path.insert(0, str(hide_matplotlib))
    env["PYTHONPATH"] = os.pathsep.join(path)
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def explain(*args, backend, **kw):
    return run(["-m", "bp_torch.explain", "--backend", backend, *args], **kw)


def assert_one_line_error(result, program, *parts):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: error: "), lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def train_digits_checkpoint(path, sizes=(64, 30, 10), seed=0):
    """What examples/train_digits.py --save writes (SigmoidMLP.to_sequential keys the state_dict), untrained."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_digits
    finally:
        sys.path.remove(str(EXAMPLES))
    net = train_digits.build_model(list(sizes), seed)
    torch.save(
        {
            "format": train_digits.outputs.CHECKPOINT_FORMAT,
            "sizes": list(sizes),
            "state_dict": net.to_sequential().state_dict(),
            "dataset": "digits",
            "image_shape": [8, 8],
            "pixel_max": 16.0,
            "test_accuracy": 0.1,
            "args": {"data_dir": None},
        },
        path,
    )
    return train_digits.outputs.plain_sequential(list(sizes)), net


# --------------------------------------------------------------------------------------------------------------------
# python -m bp_torch.explain --checkpoint
# --------------------------------------------------------------------------------------------------------------------


def printed_vector(out, label):
    return [float(v) for v in re.search(re.escape(label) + r"\s+\[(.*)\]", out).group(1).split(",")]


def test_explain_takes_the_checkpoint_train_digits_saves(tmp_path, backend):
    """The checkpoint of a real `train_digits.py --save` run: keys '0.weight', '2.weight' (nn.Sequential's)."""
    path = tmp_path / "digits.pt"
    train = run([EXAMPLES / "train_digits.py", "--epochs", 1, "--no-progress", "--backend", backend, "--save", path])
    assert train.returncode == 0, train.stderr
    saved = torch.load(path)
    plain = nn.Sequential(
        *[m for i, o in zip(saved["sizes"], saved["sizes"][1:]) for m in (nn.Linear(i, o).double(), nn.Sigmoid())]
    )
    plain.load_state_dict(saved["state_dict"])
    x = torch.linspace(0, 1, 64, dtype=torch.float64)
    result = explain("--checkpoint", path, "--input", *x.tolist(), backend=backend)
    assert result.returncode == 0, result.stderr
    assert "network 64-30-10" in result.stdout
    assert "train_digits.py --save, digits network [64, 30, 10]" in result.stdout
    with torch.no_grad():
        expected = plain(x)
    torch.testing.assert_close(
        torch.tensor(printed_vector(result.stdout, "a^2 = sigma(z^2)"), dtype=torch.float64),
        expected,
        rtol=1e-9,
        atol=0,
    )


def test_explain_takes_a_plain_sequential_state_dict(tmp_path, backend):
    torch.manual_seed(4)
    plain = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.Sigmoid()).double()
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    result = explain("--checkpoint", tmp_path / "plain.pt", "--input", 0.1, 0.2, 0.3, backend=backend)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = plain(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    torch.testing.assert_close(
        torch.tensor(printed_vector(result.stdout, "a^2 = sigma(z^2)"), dtype=torch.float64),
        expected,
        rtol=1e-9,
        atol=0,
    )


def bad_checkpoints(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "keys.pt")
    torch.save({"0.weight": torch.zeros(4, 3), "1.weight": torch.zeros(2, 5)}, tmp_path / "chain.pt")
    torch.save({"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(3)}, tmp_path / "bias.pt")
    torch.save({"format": "bp_torch.train_digits/1", "sizes": [3, 2], "state_dict": [0]}, tmp_path / "format.pt")
    (tmp_path / "digit.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (tmp_path / "folder").mkdir()


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.pt", "cannot read checkpoint {dir}/missing.pt: No such file or directory"),
        ("folder", "cannot read checkpoint {dir}/folder: Is a directory"),
        ("digit.png", "{dir}/digit.png is not a checkpoint that torch.load can read (UnpicklingError"),
        (
            "list.pt",
            "{dir}/list.pt holds a list; expected the checkpoint of examples/train_digits.py --save or a "
            "SigmoidMLP state_dict",
        ),
        ("keys.pt", "{dir}/keys.pt holds a dict with keys ['weight']; expected"),
        ("chain.pt", "{dir}/chain.pt: '1.weight' takes 5 inputs but '0.weight' gives 4 outputs"),
        ("bias.pt", "{dir}/bias.pt: '0.bias' must have shape [4] like '0.weight''s rows, got [3]"),
        ("format.pt", "{dir}/format.pt holds a list; expected"),
    ],
)
def test_explain_bad_checkpoint_is_one_line(tmp_path, backend, name, message):
    bad_checkpoints(tmp_path)
    result = explain("--checkpoint", tmp_path / name, backend=backend)
    assert_one_line_error(result, "python -m bp_torch.explain", message.format(dir=tmp_path))
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", 0.1, 0.2, 0.3], "--input has 3 values, but network [2, 2, 2] has 2 inputs"),
        (["--sizes", 3, 4, 2, "--target", 1], "--target has 1 value, but network [3, 4, 2] has 2 outputs"),
        (["--lr", "nan"], "--lr must be a finite number >= 0, got nan"),
        (["--lr", -1], "--lr must be a finite number >= 0, got -1.0"),
        (["--plot", "no/such/folder/net.png"], "--plot no/such/folder/net.png: there is no folder no/such/folder"),
        (["--html", "nowhere/page.html"], "--html nowhere/page.html: there is no folder nowhere"),
        (["--input", "nan", 0.1, "--html", "{dir}/page.html"], "page.html not written: the page needs finite numbers"),
        (["--sizes", 3, 0, 2], "--sizes: every layer needs at least one unit, got [3, 0, 2]"),
    ],
)
def test_explain_bad_arguments_are_one_line(tmp_path, backend, args, message):
    args = [str(a).format(dir=tmp_path) for a in args]
    result = explain(*args, backend=backend, cwd=tmp_path)
    assert_one_line_error(result, "python -m bp_torch.explain", message)
    assert not (tmp_path / "page.html").exists()


def test_explain_plot_without_matplotlib_names_the_extra(tmp_path, backend):
    result = explain("--plot", "net.png", backend=backend, cwd=tmp_path, hide_matplotlib=tmp_path / "fake")
    assert_one_line_error(
        result, "python -m bp_torch.explain", "plotting needs matplotlib", "pip install 'bp_torch[plot]'"
    )
    assert result.stdout == "" and not (tmp_path / "net.png").exists()
    # and without --plot, matplotlib is not needed
    result = explain(backend=backend, cwd=tmp_path, hide_matplotlib=tmp_path / "fake")
    assert result.returncode == 0, result.stderr


def test_report_plot_without_matplotlib_raises_import_error_naming_the_extra(tmp_path, backend):
    code = (
        "import bp_torch\nfrom bp_torch.explain import mazur_example\n"
        "r = bp_torch.explain(*mazur_example()[:3])\n"
        "try:\n    r.plot('net.png')\nexcept ImportError as e:\n    print(e)\n"
    )
    result = run(["-c", code], cwd=tmp_path, hide_matplotlib=tmp_path / "fake")
    assert result.returncode == 0, result.stderr
    assert "explain: plotting needs matplotlib" in result.stdout and "bp_torch[plot]" in result.stdout


# --------------------------------------------------------------------------------------------------------------------
# The examples
# --------------------------------------------------------------------------------------------------------------------


@examples_only_once
@pytest.mark.parametrize(
    "script, expected",
    [("train_digits.py", "--save PATH"), ("predict_digits.py", "checkpoint"), ("chapter_two_layer.py", "--eta")],
)
def test_every_example_answers_help(script, expected):
    result = run([EXAMPLES / script, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}") and expected in result.stdout
    assert not re.search(r"^(epoch +\d+/|step +\d+ |test image )", result.stdout, re.M)  # nothing ran


@examples_only_once
def test_chapter_two_layer_options(tmp_path):
    result = run([EXAMPLES / "chapter_two_layer.py", "--steps", 16, "--eta", 1.0])
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"^step\s+(\d+)\s+C = (\S+)", result.stdout, re.M)
    assert [int(s) for s, _ in steps] == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    costs = [float(c) for _, c in steps]
    assert costs == sorted(costs, reverse=True) and costs[-1] < costs[0]
    assert "eta = 1" in result.stdout
    result = run([EXAMPLES / "chapter_two_layer.py", "--eta", "inf"])
    assert result.returncode == 2 and "argument --eta: must be a finite number > 0, got inf" in result.stderr


@examples_only_once
@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.pt", "cannot read checkpoint {dir}/missing.pt: No such file or directory"),
        (
            "digit.png",
            "{dir}/digit.png is not a checkpoint written by train_digits.py --save (torch.load cannot read "
            "it: UnpicklingError)",
        ),
        ("list.pt", "{dir}/list.pt is not a checkpoint written by train_digits.py --save (it holds a list"),
        ("keys.pt", "{dir}/keys.pt is not a checkpoint written by train_digits.py --save (it holds a dict"),
        ("format.pt", "{dir}/format.pt: the checkpoint's network does not load"),
        ("folder", "cannot read checkpoint {dir}/folder: Is a directory"),
    ],
)
def test_predict_digits_bad_checkpoint_is_one_line(tmp_path, name, message):
    bad_checkpoints(tmp_path)
    result = run([EXAMPLES / "predict_digits.py", tmp_path / name])
    assert_one_line_error(result, "predict_digits.py", message.format(dir=tmp_path))
    assert result.stdout == ""


@examples_only_once
def test_predict_digits_bad_image_and_no_matplotlib(tmp_path):
    train_digits_checkpoint(tmp_path / "digits.pt")
    result = run([EXAMPLES / "predict_digits.py", tmp_path / "digits.pt", "--image", tmp_path / "none.png"])
    assert_one_line_error(result, "predict_digits.py", f"cannot read image {tmp_path}/none.png")
    (tmp_path / "text.png").write_text("not an image")
    result = run([EXAMPLES / "predict_digits.py", tmp_path / "digits.pt", "--image", tmp_path / "text.png"])
    assert_one_line_error(result, "predict_digits.py", f"cannot read image {tmp_path}/text.png")
    result = run(
        [EXAMPLES / "predict_digits.py", tmp_path / "digits.pt", "--image", tmp_path / "text.png"],
        hide_matplotlib=tmp_path / "fake",
    )
    assert_one_line_error(result, "predict_digits.py", "--image needs matplotlib", "pip install 'bp_torch[plot]'")
    # the checkpoint itself is good: test images are predicted
    result = run([EXAMPLES / "predict_digits.py", tmp_path / "digits.pt", "--count", 2])
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^test image \d+: true \d, (right|WRONG), predicted \d", result.stdout, re.M)) == 2


@examples_only_once
@pytest.mark.parametrize(
    "args, message",
    [
        (["--save", "no/such/folder/digits.pt"], "--save no/such/folder/digits.pt: there is no folder no/such/folder"),
        (["--metrics-json", "nowhere/m.json"], "--metrics-json nowhere/m.json: there is no folder nowhere"),
        (["--plot", "p.png", "HIDE"], "--plot needs matplotlib"),
        (["--epochs", 0], "train_digits.py: error: --epochs must be at least 1, got 0"),
    ],
)
def test_train_digits_errors_come_before_training_in_one_line(tmp_path, args, message):
    hide = tmp_path / "fake" if "HIDE" in args else None
    result = run(
        [EXAMPLES / "train_digits.py", *[a for a in args if a != "HIDE"], "--no-progress"],
        cwd=tmp_path,
        hide_matplotlib=hide,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr and not re.search(r"^epoch ", result.stdout, re.M)  # before the first epoch
    if "--epochs" not in args:  # argparse's own errors come after its usage line
        assert_one_line_error(result, "train_digits.py", message)
        if hide:
            assert "pip install 'bp_torch[plot]'" in result.stderr
