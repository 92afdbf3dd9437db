"""bp_torch.explain with the cross-entropy cost: (3.2) as the output layer's dC/da^L, and delta^L = a^L - y (3.3)
beside the quadratic cost's (a^L - y) sigma'(z^L), in the report, its table, its data, the page and the CLI."""

import contextlib
import io
import json
import re

import pytest
import torch
from torch import nn

import bp_torch
from bp_torch import CrossEntropyCost, QuadraticCost
from bp_torch.explain import main, mazur_example


def batch():
    torch.manual_seed(0)
    model = bp_torch.SigmoidMLP([3, 4, 2]).double()
    x = torch.rand(3, 3, dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7]], dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_output_layer_shows_delta_a_minus_y_beside_the_quadratic_delta(reduction):
    model, x, y = batch()
    report = bp_torch.explain(model, x, y, cost=CrossEntropyCost(reduction))
    out = report.layers[-1]
    a = model(x).detach()
    scale = 1 / 3 if reduction == "mean" else 1.0
    torch.testing.assert_close(out.dC_da, (a - y) / (a * (1 - a)) * scale)  # (3.2)
    torch.testing.assert_close(out.delta, (a - y) * scale, rtol=1e-14, atol=1e-15)  # (3.3): sigma' cancels
    torch.testing.assert_close(out.quadratic_delta, (a - y) * a * (1 - a) * scale)  # (1.3) x (1.2)
    assert report.max_abs_diff < 1e-14
    expected = bp_torch.functional.cross_entropy_cost(model(x), y, reduction).item()
    assert report.cost == pytest.approx(expected, rel=1e-15)
    assert out.equations["dC_da"] == "(3.2)" and out.equations["delta"] == "(3.3)"
    assert out.formula == "a^1 * (a^2 - y)"
    assert report.layers[0].formula == "a^0 * sigma'(z^1) * (a^2 - y) * w^2"
    assert report.layers[0].delta is None and report.layers[0].quadratic_delta is None


def test_table_and_data_name_the_cost_and_show_the_cancellation():
    model, x, y, _ = mazur_example()
    report = bp_torch.explain(model, x, y, cost=CrossEntropyCost())
    text = str(report)
    assert "C = -sum_j [y_j ln a^2_j + (1 - y_j) ln(1 - a^2_j)]" in text
    assert re.search(
        r"\(3\.3\)\s+delta\^2 = dC/da\^2 \* da\^2/dz\^2 = a\^2 - y\s+\[0\.7413650696, -0\.2170715347\]", text
    )
    # the quadratic cost's output error for Mazur's network: (a - y) sigma'(z), 0.7413650696 * 0.1868156018
    assert re.search(r"quadratic: delta\^2 = \(a\^2 - y\) sigma'\(z\^2\)\s+\[0\.1384985616, -0\.03809823652\]", text)
    data = report.to_dict()
    assert data["cost"]["name"] == "CrossEntropyCost"
    assert data["layers"][1]["delta"][0] == pytest.approx([0.7413650696, -0.2170715347], abs=1e-10)
    quadratic = bp_torch.explain(model, x, y).to_dict()
    assert quadratic["layers"][1]["delta"] is None and quadratic["cost"]["name"] == "QuadraticCost"


def test_page_data_walks_through_the_cancellation_and_steps_on_the_cross_entropy():
    model, x, y, lr = mazur_example()
    report = bp_torch.explain(model, x, y, cost=CrossEntropyCost())
    page = report.to_html(steps=3, lr=lr)
    assert "cross-entropy cost" in page
    data = json.loads(re.search(r'<script id="bp-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["cost_title"] == "cross-entropy cost"
    output_step = next(w for w in data["walk"] if w["title"].startswith("backward, layer 2"))
    assert [v["key"] for v in output_step["values"]][:4] == ["dC_da", "da_dz", "delta", "quadratic_delta"]
    # the slider's steps are the library's cross-entropy update, on copies of the parameters
    weights = [layer.weight.detach().clone() for layer in model]
    biases = [layer.bias.detach().clone() for layer in model]
    for step in data["steps"][1:]:
        bp_torch.functional.sgd_step(x.reshape(1, -1), y.reshape(1, -1), weights, biases, lr, cost="cross_entropy")
        for layer, w in zip(step["layers"], weights):
            torch.testing.assert_close(torch.tensor(layer["weight"], dtype=torch.float64), w, rtol=0, atol=1e-15)
    costs = [step["cost"]["value"] for step in data["steps"]]
    assert all(after < before for before, after in zip(costs, costs[1:]))


def test_other_costs_are_refused_naming_both():
    model, x, y = batch()
    with pytest.raises(TypeError, match=r"QuadraticCost .* or a bp_torch.CrossEntropyCost, got BCELoss.*\(3\.2\)"):
        bp_torch.explain(model, x, y, cost=nn.BCELoss())
    with pytest.raises(ValueError, match="reduce to one number.*'none'"):
        bp_torch.explain(model, x, y, cost=CrossEntropyCost("none"))
    assert bp_torch.explain(model, x, y, cost=QuadraticCost()).layers[-1].delta is None


def test_cli_cost_option():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--cost", "cross-entropy", "--backend", bp_torch.backend()]) == 0
    text = out.getvalue()
    assert "cross-entropy cost" in text and "(3.3)" in text and "quadratic: delta^2" in text
    before = float(re.search(r"C before the step\s+(\S+)", text).group(1))
    after = float(re.search(r"C after the step\s+(\S+)", text).group(1))
    assert before == pytest.approx(1.650528532, abs=1e-9) and after < before
