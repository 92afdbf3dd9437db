"""The chapter's examples: the published 2-2-2 worked example, and examples/chapter_two_layer.py.

Matt Mazur, "A Step by Step Backpropagation Example" (2015): a 2-2-2 sigmoid network with the quadratic cost
E = 1/2 sum (target - out)^2, hand-computed. The values below are typed in from that article, as strings so that
the number of published digits is kept. Mazur rounds his intermediates and updates the weights only (not the
biases), so each value is checked to the digits published with a tolerance of one unit in the last published
digit. The network is also built here from the article's numbers, not taken from bp_torch.
"""

import pathlib
import re
import subprocess
import sys

import pytest
import torch

import bp_torch

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Mazur's network: net_h1 = w1 i1 + w2 i2 + b1, net_o1 = w5 out_h1 + w6 out_h2 + b2, so w^1 = [[w1, w2], [w3, w4]].
INPUTS, TARGETS = [0.05, 0.10], [0.01, 0.99]
W1, B1 = [[0.15, 0.20], [0.25, 0.30]], 0.35
W2, B2 = [[0.40, 0.45], [0.50, 0.55]], 0.60
ETA = 0.5

PUBLISHED = {
    "out_h1": "0.593269992",
    "out_h2": "0.596884378",
    "out_o1": "0.75136507",
    "out_o2": "0.772928465",
    "E_total": "0.298371109",
    "dE/dw5": "0.082167041",
    "w5+": "0.35891648",
    "w6+": "0.408666186",
    "w7+": "0.511301270",
    "w8+": "0.561370121",
    "w1+": "0.149780716",
    "w2+": "0.19956143",
    "w3+": "0.24975114",
    "w4+": "0.29950229",
}


def assert_published(values):
    """Each value equals Mazur's to the digits he published: within one unit in his last digit."""
    for name, published in PUBLISHED.items():
        unit = 10.0 ** -len(published.split(".")[1])
        assert abs(values[name] - float(published)) <= unit, (name, values[name], published)


def mazur_net():
    net = bp_torch.SigmoidMLP([2, 2, 2], dtype=torch.float64)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(W1, dtype=torch.float64))
        net[0].bias.fill_(B1)
        net[1].weight.copy_(torch.tensor(W2, dtype=torch.float64))
        net[1].bias.fill_(B2)
    return net


def test_worked_example_through_the_api():
    net = mazur_net()
    x, y = torch.tensor(INPUTS, dtype=torch.float64), torch.tensor(TARGETS, dtype=torch.float64)
    report = bp_torch.explain(net, x, y)
    hidden, output = report.layers
    weights_before = [layer.weight.detach().clone() for layer in net]
    # one gradient-descent step on the weights, with the explainer's products of factors as dC/dW
    w1_new = weights_before[0] - ETA * hidden.dC_dw
    w2_new = weights_before[1] - ETA * output.dC_dw
    values = {
        "out_h1": hidden.a[0, 0].item(),
        "out_h2": hidden.a[0, 1].item(),
        "out_o1": output.a[0, 0].item(),
        "out_o2": output.a[0, 1].item(),
        "E_total": report.cost,
        "dE/dw5": output.dC_dw[0, 0].item(),
        **{f"w{i + 5}+": v for i, v in enumerate(w2_new.flatten().tolist())},
        **{f"w{i + 1}+": v for i, v in enumerate(w1_new.flatten().tolist())},
    }
    assert_published(values)
    assert report.max_abs_diff <= 1e-12
    # The library's own step (which also updates the biases) moves the weights the same way.
    net.sgd_step(x.unsqueeze(0), y.unsqueeze(0), ETA)
    torch.testing.assert_close(net[0].weight.detach(), w1_new, rtol=0, atol=1e-15)
    torch.testing.assert_close(net[1].weight.detach(), w2_new, rtol=0, atol=1e-15)


def test_built_in_example_is_mazurs_network():
    from bp_torch.explain import mazur_example  # the module (bp_torch.explain itself is the function)

    model, x, y, lr = mazur_example()
    reference = mazur_net()
    for got, want in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(got, want)
    assert x.tolist() == INPUTS and y.tolist() == TARGETS and lr == ETA


def numbers_after(label, text):
    """The numbers printed after ``label`` on its line, following a matrix onto the lines until its ']]'."""
    start = text.index(label) + len(label)
    end = text.index("]]", start) if text[start:].lstrip().startswith("[[") else text.index("\n", start)
    return [float(v) for v in re.findall(r"-?\d+\.?\d*(?:e[-+]?\d+)?", text[start:end])]


def test_worked_example_printed_by_the_cli(backend):
    result = subprocess.run(
        [sys.executable, "-m", "bp_torch.explain", "--backend", backend],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    out_h = numbers_after("a^1 = sigma(z^1)", out)
    out_o = numbers_after("a^2 = sigma(z^2)", out)
    (e_total,) = numbers_after("\n          C ", out)
    # the first row of the (A) table: j=1, k=1, the three factors, their product, autograd, |diff|
    table = out[out.index("(A)     dC/dw^2") :]
    row = re.search(r"\n\s+1\s+1\s+(.*)", table).group(1).split()
    w1_new = numbers_after("w^1 <- w^1 - eta * dC/dw^1", out)
    w2_new = numbers_after("w^2 <- w^2 - eta * dC/dw^2", out)
    values = {
        "out_h1": out_h[0],
        "out_h2": out_h[1],
        "out_o1": out_o[0],
        "out_o2": out_o[1],
        "E_total": e_total,
        "dE/dw5": float(row[3]),
        **{f"w{i + 5}+": v for i, v in enumerate(w2_new)},
        **{f"w{i + 1}+": v for i, v in enumerate(w1_new)},
    }
    assert len(w1_new) == len(w2_new) == 4
    assert float(row[3]) == pytest.approx(float(row[0]) * float(row[1]) * float(row[2]), rel=1e-8)
    assert float(row[4]) == pytest.approx(float(row[3]), rel=1e-9)
    assert_published(values)


_example_run = []


def test_chapter_two_layer_example_runs_and_its_cost_falls():
    # two_layer_quadratic_cost always runs in Python, whatever the backend: run the script once, check it per backend
    if not _example_run:
        _example_run.append(
            subprocess.run(
                [sys.executable, str(ROOT / "examples" / "chapter_two_layer.py")],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
        )
    result = _example_run[0]
    assert result.returncode == 0, result.stderr
    out = result.stdout
    diffs = [float(v) for v in re.findall(r"max \|\([AB]\) - autograd\| = (\S+)", out)]
    assert len(diffs) == 2 and max(diffs) <= 1e-12
    costs = [float(v) for v in re.findall(r"^step\s+\d+\s+C = (\S+)$", out, flags=re.M)]
    assert len(costs) >= 5
    assert all(later < earlier for earlier, later in zip(costs, costs[1:]))
    assert costs[-1] < 0.5 * costs[0]
