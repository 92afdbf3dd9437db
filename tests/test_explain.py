"""bp_torch.explain: each chain-rule factor is what the chapter says it is, and the factors multiply to autograd's
gradient. The reference here is plain torch (F.linear + torch.sigmoid + the cost written out) differentiated by
torch autograd, which shares no code with bp_torch's backward."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bp_torch
from bp_torch import QuadraticCost, SigmoidLinear, SigmoidMLP

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVERY_LABEL = ["(1.1)", "(1.2)", "(1.3)", "(2.1)", "(2.2)", "(2.3.1)", "(2.3.2)", "(A)", "(B)"]


def make_net(sizes, seed=0, bias=True, dtype=torch.float64):
    torch.manual_seed(seed)
    return SigmoidMLP(sizes, bias=bias, dtype=dtype)


def sample(sizes, batch, seed=1, dtype=torch.float64):
    """x, y for the net; batch None means one sample, a 1-D x."""
    g = torch.Generator().manual_seed(seed)
    shape = () if batch is None else (batch,)
    return (
        torch.rand(*shape, sizes[0], generator=g, dtype=dtype),
        torch.rand(*shape, sizes[-1], generator=g, dtype=dtype),
    )


def plain_reference(layers, x, y, reduction="mean"):
    """Plain torch: activations a^0..a^L (each retaining its grad), z^1..z^L, C, and autograd's dC/dW, dC/db."""
    weights = [layer.weight.detach().clone().requires_grad_() for layer in layers]
    biases = [None if layer.bias is None else layer.bias.detach().clone().requires_grad_() for layer in layers]
    a = [x.reshape(-1, x.shape[-1]).clone().requires_grad_()]
    zs = []
    for w, b in zip(weights, biases):
        zs.append(F.linear(a[-1], w, b))
        a.append(torch.sigmoid(zs[-1]))
        a[-1].retain_grad()
    per_sample = 0.5 * (y.reshape(a[-1].shape) - a[-1]).square().sum(-1)
    cost = per_sample.mean() if reduction == "mean" else per_sample.sum()
    cost.backward()
    return {
        "a": [t.detach() for t in a],
        "z": [t.detach() for t in zs],
        "cost": cost.item(),
        "dC_da": [None] + [t.grad for t in a[1:]],
        "dC_dw": [w.grad for w in weights],
        "dC_db": [None if b is None else b.grad for b in biases],
    }


@pytest.mark.parametrize("batch", [None, 5], ids=["one-sample", "batch5"])
@pytest.mark.parametrize("sizes", [[3, 4, 2], [3, 5, 4, 2], [2, 3, 3, 3, 2]], ids=["2-layer", "3-layer", "4-layer"])
def test_factors_multiply_to_autograd_gradient(sizes, batch):
    net = make_net(sizes)
    x, y = sample(sizes, batch)
    report = bp_torch.explain(net, x, y)
    ref = plain_reference(list(net), x, y)
    assert len(report.layers) == len(sizes) - 1
    assert report.cost == pytest.approx(ref["cost"], abs=1e-15)
    for l, layer in enumerate(report.layers, 1):
        assert layer.index == l
        # the product of the three factors, multiplied out here, weight by weight and summed over the samples
        product = torch.einsum("nk,nj,nj->jk", layer.dz_dw, layer.da_dz, layer.dC_da)
        torch.testing.assert_close(product, ref["dC_dw"][l - 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.dC_dw, ref["dC_dw"][l - 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.dC_db, ref["dC_db"][l - 1], rtol=0, atol=1e-12)
        # the report's own autograd column agrees with the plain reference, and so does its difference
        torch.testing.assert_close(layer.autograd_dC_dw, ref["dC_dw"][l - 1], rtol=0, atol=1e-12)
        assert layer.max_abs_diff <= 1e-12 and layer.max_abs_diff_bias <= 1e-12
        assert layer.max_abs_diff == pytest.approx((layer.dC_dw - layer.autograd_dC_dw).abs().max().item(), abs=0)
    assert report.max_abs_diff <= 1e-12


@pytest.mark.parametrize("sizes", [[3, 4, 2], [2, 3, 3, 3, 2]], ids=["2-layer", "4-layer"])
def test_each_factor_is_its_definition(sizes):
    """(1.1) is a^(l-1), (1.2) is dsigma/dz, dC/da^l is autograd's, (2.3.2) is the Jacobian da^(l+1)/da^l, and
    (2.3) = (2.3.1) x (2.3.2)."""
    net = make_net(sizes, seed=4)
    x, y = sample(sizes, 3, seed=5)
    report = bp_torch.explain(net, x, y)
    ref = plain_reference(list(net), x, y)
    for l, layer in enumerate(report.layers, 1):
        torch.testing.assert_close(layer.dz_dw, ref["a"][l - 1], rtol=0, atol=1e-15)  # (1.1) / (2.1)
        torch.testing.assert_close(layer.a, ref["a"][l], rtol=0, atol=1e-15)
        torch.testing.assert_close(layer.z, ref["z"][l - 1], rtol=0, atol=1e-15)
        z = ref["z"][l - 1].clone().requires_grad_()
        (dsigma_dz,) = torch.autograd.grad(torch.sigmoid(z).sum(), z)  # elementwise
        torch.testing.assert_close(layer.da_dz, dsigma_dz, rtol=0, atol=1e-15)  # (1.2) / (2.2)
        torch.testing.assert_close(layer.dC_da, ref["dC_da"][l], rtol=0, atol=1e-14)  # (1.3) / (2.3)
        if l == len(sizes) - 1:
            assert layer.dC_da_next is None and layer.da_next_da is None
            assert layer.equations == {"dz_dw": "(1.1)", "da_dz": "(1.2)", "dC_da": "(1.3)", "dC_dw": "(A)"}
            continue
        assert layer.equations["dC_da_next"] == "(2.3.1)" and layer.equations["da_next_da"] == "(2.3.2)"
        torch.testing.assert_close(layer.dC_da_next, ref["dC_da"][l + 1], rtol=0, atol=1e-14)  # (2.3.1)
        upper = net[l]
        for n in range(x.shape[0]):
            jac = torch.autograd.functional.jacobian(
                lambda a: torch.sigmoid(F.linear(a, upper.weight.detach(), upper.bias.detach())), ref["a"][l][n]
            )
            torch.testing.assert_close(layer.da_next_da[n], jac, rtol=0, atol=1e-15)  # (2.3.2)
        torch.testing.assert_close(
            layer.dC_da, torch.einsum("nj,njk->nk", layer.dC_da_next, layer.da_next_da), rtol=0, atol=1e-15
        )  # (2.3)


def test_two_layer_products_are_equations_A_and_B():
    """(A) and (B) restated in numpy for one sample of a 2-3-2 net."""
    net = make_net([2, 3, 2], seed=7)
    x, y = sample([2, 3, 2], None, seed=8)
    report = bp_torch.explain(net, x, y)
    w1, b1, w2, b2 = (t.detach().numpy() for t in (net[0].weight, net[0].bias, net[1].weight, net[1].bias))
    a0, target = x.numpy(), y.numpy()
    a1 = 1 / (1 + np.exp(-(w1 @ a0 + b1)))
    a2 = 1 / (1 + np.exp(-(w2 @ a1 + b2)))
    A = np.outer(a2 * (1 - a2) * (a2 - target), a1)  # a^1 sigma'(z^2) (a^2 - y)
    B = np.outer(a1 * (1 - a1) * (((a2 - target) * a2 * (1 - a2)) @ w2), a0)  # a^0 sigma'(z^1) ... w^2
    np.testing.assert_allclose(report.layers[1].dC_dw.numpy(), A, rtol=0, atol=1e-15)
    np.testing.assert_allclose(report.layers[0].dC_dw.numpy(), B, rtol=0, atol=1e-15)
    assert report.layers[1].equations["dC_dw"] == "(A)" and report.layers[0].equations["dC_dw"] == "(B)"
    assert report.layers[1].formula == "a^1 * sigma'(z^2) * (a^2 - y)"
    assert report.layers[0].formula == "a^0 * sigma'(z^1) * (a^2 - y) * sigma'(z^2) * w^2"


def test_deeper_layers_are_B_generalised():
    report = bp_torch.explain(make_net([2, 3, 3, 2]), *sample([2, 3, 3, 2], None))
    assert [layer.equations["dC_dw"] for layer in report.layers] == ["(B) gen.", "(B)", "(A)"]
    assert report.layers[0].formula == "a^0 * sigma'(z^1) * (a^3 - y) * sigma'(z^3) * w^3 * sigma'(z^2) * w^2"


@pytest.mark.parametrize("kind", ["SigmoidLinear", "Sequential", "no-bias", "float32", "batch-dims"])
def test_model_kinds(kind):
    dtype, tol = torch.float64, 1e-12
    if kind == "SigmoidLinear":
        torch.manual_seed(0)
        model = SigmoidLinear(3, 2, dtype=dtype)
    elif kind == "Sequential":
        torch.manual_seed(0)
        model = nn.Sequential(SigmoidLinear(3, 4, dtype=dtype), SigmoidLinear(4, 2, dtype=dtype))
    elif kind == "no-bias":
        model = make_net([3, 4, 2], bias=False)
    elif kind == "float32":
        dtype, tol = torch.float32, 1e-6
        model = make_net([3, 4, 2], dtype=dtype)
    else:
        model = make_net([3, 4, 2])
    layers = [model] if isinstance(model, SigmoidLinear) else list(model)
    x, y = sample([3, 2], 6, dtype=dtype)
    if kind == "batch-dims":
        x, y = x.reshape(2, 3, 3), y.reshape(2, 3, 2)
    report = bp_torch.explain(model, x, y)
    ref = plain_reference(layers, x, y)
    assert report.n_samples == 6
    for layer, ref_w, ref_b in zip(report.layers, ref["dC_dw"], ref["dC_db"]):
        torch.testing.assert_close(layer.dC_dw, ref_w, rtol=0, atol=tol)
        if kind == "no-bias":
            assert layer.dC_db is None and layer.bias is None and layer.max_abs_diff_bias is None
        else:
            torch.testing.assert_close(layer.dC_db, ref_b, rtol=0, atol=tol)
    assert report.max_abs_diff <= tol


def test_cost_reductions():
    net = make_net([3, 4, 2])
    x, y = sample([3, 4, 2], 4)
    mean = bp_torch.explain(net, x, y)
    for cost in ("sum", QuadraticCost("sum")):
        summed = bp_torch.explain(net, x, y, cost=cost)
        ref = plain_reference(list(net), x, y, reduction="sum")
        assert summed.reduction == "sum" and summed.cost == pytest.approx(4 * mean.cost, rel=1e-14)
        for layer, mean_layer, ref_w in zip(summed.layers, mean.layers, ref["dC_dw"]):
            torch.testing.assert_close(layer.dC_dw, ref_w, rtol=0, atol=1e-12)
            torch.testing.assert_close(layer.dC_dw, 4 * mean_layer.dC_dw, rtol=0, atol=1e-14)
    assert bp_torch.explain(net, x, y, cost=QuadraticCost("mean")).cost == mean.cost


def test_model_is_left_untouched():
    net = make_net([3, 4, 2])
    net[1].weight.requires_grad_(False)  # a frozen layer still gets explained
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        report = bp_torch.explain(net, *sample([3, 4, 2], 2))
    assert report.max_abs_diff <= 1e-12
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]


def test_lists_are_accepted_for_x_and_y():
    net = make_net([2, 2, 2])
    from_lists = bp_torch.explain(net, [0.05, 0.10], [0.01, 0.99])
    from_tensors = bp_torch.explain(
        net, torch.tensor([0.05, 0.10], dtype=torch.float64), torch.tensor([0.01, 0.99], dtype=torch.float64)
    )
    assert from_lists.to_dict() == from_tensors.to_dict()


@pytest.mark.parametrize(
    "model, error, match",
    [
        (nn.Linear(3, 2), TypeError, "must be a bp_torch.SigmoidMLP"),
        (nn.Sequential(nn.Linear(3, 2), nn.Sigmoid()), TypeError, "layer 0 of the model is Linear"),
        (nn.Sequential(SigmoidLinear(3, 2), nn.Sigmoid()), TypeError, "layer 1 of the model is Sigmoid"),
        (nn.Sequential(), ValueError, "no layers"),
        (nn.Sequential(SigmoidLinear(3, 4), SigmoidLinear(5, 2)), ValueError, "layer 1 takes 5 inputs"),
        ("not a model", TypeError, "got str"),
    ],
)
def test_bad_models_raise_clearly(model, error, match):
    with pytest.raises(error, match=match):
        bp_torch.explain(model, torch.rand(3), torch.rand(2))


@pytest.mark.parametrize(
    "cost, error, match",
    [
        (nn.MSELoss(), TypeError, r"must be a bp_torch.QuadraticCost .*got MSELoss.*\(1.3\)"),
        (lambda a, y: (a - y).abs().sum(), TypeError, "got function"),
        (QuadraticCost("none"), ValueError, "reduce to one number.*'none'"),
        ("none", ValueError, "one of \\('mean', 'sum'\\), got 'none'"),
        ("cross-entropy", ValueError, "got 'cross-entropy'"),
    ],
)
def test_bad_costs_raise_clearly(cost, error, match):
    with pytest.raises(error, match=match):
        bp_torch.explain(
            make_net([3, 2]), torch.rand(3, dtype=torch.float64), torch.rand(2, dtype=torch.float64), cost=cost
        )


def test_bad_inputs_raise_clearly():
    net = make_net([3, 4, 2])
    x, y = sample([3, 4, 2], 2)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 3\)"):
        bp_torch.explain(net, torch.rand(2, 4, dtype=torch.float64), y)
    with pytest.raises(ValueError, match=r"y must have shape \[2, 2\]"):
        bp_torch.explain(net, x, torch.rand(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="0-d"):
        bp_torch.explain(net, torch.tensor(1.0, dtype=torch.float64), y)
    with pytest.raises(ValueError, match="no samples"):
        bp_torch.explain(net, x[:0], y[:0])
    with pytest.raises(TypeError, match="same dtype"):  # the library's own check, reached through the model
        bp_torch.explain(net, x.float(), y.float())


def test_to_dict_is_plain_json_data():
    net = make_net([3, 4, 2])
    x, y = sample([3, 4, 2], 2)
    report = bp_torch.explain(net, x, y)
    data = json.loads(json.dumps(report.to_dict()))  # raises if anything is not plain data
    assert data["sizes"] == [3, 4, 2] and data["n_samples"] == 2 and data["dtype"] == "float64"
    assert data["cost"] == {
        "name": "QuadraticCost",
        "reduction": "mean",
        "formula": "C = 1/2 sum_j (y_j - a^2_j)^2",
        "value": report.cost,
    }
    assert [d["layer"] for d in data["layers"]] == [1, 2]
    assert [d["role"] for d in data["layers"]] == ["hidden", "output"]
    for d, layer in zip(data["layers"], report.layers):
        for key in ("dz_dw", "da_dz", "dC_da", "dC_dw", "autograd_dC_dw", "dC_db", "weight", "bias"):
            assert torch.equal(torch.tensor(d[key], dtype=torch.float64), getattr(layer, key)), key
        assert d["max_abs_diff"] == layer.max_abs_diff
        assert d["equations"] == layer.equations and d["labels"] == layer.labels
    assert data["layers"][0]["labels"]["dz_dw"] == "dz^1/dw^1 = a^0"
    assert data["layers"][0]["labels"]["da_next_da"] == "da^2/da^1 = sigma'(z^2) w^2"
    assert data["layers"][1]["labels"]["dC_da"] == "dC/da^2 = a^2 - y (/2: C is a mean)"
    assert data["layers"][1]["dC_da_next"] is None
    assert np.array(data["layers"][0]["da_next_da"]).shape == (2, 2, 4)


def test_printed_report_is_a_labelled_table():
    report = bp_torch.explain(make_net([2, 3, 2]), *sample([2, 3, 2], None))
    text = str(report)
    for label in EVERY_LABEL:
        assert label in text, label
    assert "autograd" in text and "product" in text
    # one table row per weight of each layer: j, k, three factors, product, autograd, |diff|
    rows = [line.split() for line in text.splitlines() if re.match(r"^\s+\d+\s+\d+\s+-?\d", line)]
    assert len(rows) == 2 * 3 + 3 * 2
    for row in rows:
        factors, product, autograd = [float(v) for v in row[2:5]], float(row[5]), float(row[6])
        assert product == pytest.approx(factors[0] * factors[1] * factors[2], rel=1e-8)
        assert product == pytest.approx(autograd, rel=1e-9, abs=1e-18)
    batch_text = str(bp_torch.explain(make_net([2, 3, 2]), *sample([2, 3, 2], 4)))
    assert "4 samples" in batch_text and "(2.3.2)" in batch_text


def check_png(path):
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.01  # something is drawn


def test_plot_is_a_valid_png(tmp_path):
    report = bp_torch.explain(make_net([3, 5, 4, 2]), *sample([3, 5, 4, 2], 3))
    path = tmp_path / "net.png"
    assert report.plot(path) == path
    check_png(path)


def run_cli(*args, backend="python"):
    result = subprocess.run(
        [sys.executable, "-m", "bp_torch.explain", "--backend", backend, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result


_default_runs = {}


def test_cli_default_prints_every_equation_label(backend):
    if backend not in _default_runs:
        _default_runs[backend] = run_cli(backend=backend)
    result = _default_runs[backend]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # in particular, no runpy warning about the module being imported twice
    out = result.stdout
    for label in EVERY_LABEL:
        assert label in out, label
    for text in [
        "z^1 = w^1 a^0 + b^1",
        "a^2 = sigma(z^2)",
        "C = 1/2 sum_j (y_j - a^2_j)^2",
        "W <- W - eta * dC/dW",
        "w^1 <- w^1 - eta * dC/dw^1",
        "w^2 <- w^2 - eta * dC/dw^2",
        "Mazur",
        f"backend {backend}",
    ]:
        assert text in out, text


def parse_cost_step(out):
    before = float(re.search(r"C before the step\s+(\S+)", out).group(1))
    after = float(re.search(r"C after the step\s+(\S+)", out).group(1))
    return before, after


def test_cli_options_sizes_seed_lr_plot(backend, tmp_path):
    png = tmp_path / "deep.png"
    result = run_cli("--sizes", 3, 4, 4, 2, "--seed", 3, "--lr", 0.1, "--plot", png, backend=backend)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "network 3-4-4-2" in out and "eta = 0.1" in out and "seed 3" in out and "(B) gen." in out
    for label in EVERY_LABEL:
        assert label in out, label
    before, after = parse_cost_step(out)
    assert after < before  # one small gradient-descent step lowers the cost
    check_png(png)


def test_cli_loads_a_checkpoint(backend, tmp_path):
    net = make_net([3, 2, 2], seed=11)
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    x, y = [0.2, 0.4, 0.6], [1.0, 0.0]
    result = run_cli("--checkpoint", path, "--input", *x, "--target", *y, "--lr", 1.0, backend=backend)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        a2 = net(torch.tensor(x, dtype=torch.float64))
    printed = re.search(r"a\^2 = sigma\(z\^2\)\s+\[(.*)\]", result.stdout).group(1)
    np.testing.assert_allclose([float(v) for v in printed.split(",")], a2.numpy(), rtol=1e-9)
    assert f"weights from {path}" in result.stdout


def test_cli_reports_bad_options(backend):
    result = run_cli("--sizes", 3, backend=backend)
    assert result.returncode != 0 and "at least 2 entries" in result.stderr
