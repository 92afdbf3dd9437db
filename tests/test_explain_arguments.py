"""What explain() and ExplainReport.to_html() accept (issue 23): the learning rate of the page's SGD steps, checked
as the library's sgd_step checks it, and zero-width layers, refused with one message on both backends.

Every test runs once per backend (tests/conftest.py).
"""

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import bp_torch
from bp_torch import SigmoidLinear
from bp_torch.explain import mazur_example


def page_data(page):
    return json.loads(re.search(r'<script id="bp-data" type="application/json">(.*?)</script>', page, re.S).group(1))


@pytest.fixture
def report():
    model, x, y, _ = mazur_example()
    return bp_torch.explain(model, x, y)


@pytest.mark.parametrize(
    "lr",
    [
        0.5,
        1,
        np.float64(0.5),
        np.float32(0.5),
        np.int64(1),
        torch.tensor(0.5),
        torch.tensor(0.5, dtype=torch.float32),
        torch.tensor(1),
        torch.tensor([0.5]),
        0.0,
    ],
)
def test_lr_given_as_any_real_number_is_that_number(report, lr, backend):
    data = page_data(report.to_html(steps=2, lr=lr))
    value = float(lr.item() if isinstance(lr, torch.Tensor) else lr)
    assert data["lr"] == value and type(data["lr"]) is float
    # the recorded steps are W <- W - lr dC/dW with that number, as sgd_step takes it
    w = report.layers[1].weight
    expected = w - value * report.layers[1].dC_dw
    torch.testing.assert_close(
        torch.tensor(data["steps"][1]["layers"][1]["weight"], dtype=torch.float64), expected, rtol=0, atol=1e-15
    )
    assert data["backend"] == backend


@pytest.mark.parametrize(
    "lr, got",
    [
        (None, "got NoneType"),
        ("0.5", "got str"),
        (True, "got bool"),
        (np.bool_(True), "got bool"),
        (1 + 2j, "got complex"),
        ([0.5], "got list"),
        ((0.5,), "got tuple"),
        (torch.tensor(True), "got a torch.bool tensor"),
        (torch.tensor(0.5 + 0j), "got a torch.complex64 tensor"),
    ],
)
def test_lr_that_is_not_a_real_number_is_a_type_error(report, lr, got):
    with pytest.raises(TypeError, match=f"^explain: lr must be a real number, {re.escape(got)}"):
        report.to_html(steps=1, lr=lr)


@pytest.mark.parametrize(
    "lr, got",
    [
        (float("nan"), "got nan"),
        (float("inf"), "got inf"),
        (-float("inf"), "got -inf"),
        (-0.5, "got -0.5"),
        (np.float64("nan"), "got nan"),
        (torch.tensor(float("inf")), "got inf"),
        (torch.tensor(-1.0), "got -1.0"),
    ],
)
def test_lr_that_is_not_finite_and_non_negative_is_a_value_error(report, lr, got):
    with pytest.raises(ValueError, match=f"^explain: lr must be a finite number >= 0, {re.escape(got)}$"):
        report.to_html(steps=1, lr=lr)


def test_lr_tensor_of_several_numbers_is_a_value_error(report):
    with pytest.raises(ValueError, match=r"^explain: lr must be a single number, got a tensor of shape \[2\]$"):
        report.to_html(steps=1, lr=torch.tensor([0.5, 0.5]))


def test_lr_is_checked_even_with_no_steps(report):
    """steps=0 records no step, but the page shows eta: a bad one is refused there too, not written as 'nan'."""
    with pytest.raises(ValueError, match="lr must be a finite number"):
        report.to_html(steps=0, lr=float("nan"))


@pytest.mark.parametrize(
    "sizes, single, message",
    [
        ([(3, 0), (0, 2)], False, "layer 0 of the model (w^1) has 3 inputs and 0 outputs"),
        ([(3, 4), (4, 0)], False, "layer 1 of the model (w^2) has 4 inputs and 0 outputs"),
        ([(3, 4), (0, 2)], False, "layer 1 of the model (w^2) has 0 inputs and 2 outputs"),
        ([(0, 2)], True, "layer 0 of the model (w^1) has 0 inputs and 2 outputs"),
        ([(3, 0)], True, "layer 0 of the model (w^1) has 3 inputs and 0 outputs"),
    ],
)
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_zero_width_layer_is_refused_by_name_on_both_backends(sizes, single, message, backend):
    """A bare SigmoidLinear or an nn.Sequential of them; the check comes before the shapes of x and y are compared."""
    layers = [SigmoidLinear(n_in, n_out) for n_in, n_out in sizes]
    model = layers[0] if single else nn.Sequential(*layers)
    x, y = torch.rand(2, layers[0].in_features), torch.rand(2, layers[-1].out_features)
    with pytest.raises(ValueError, match=f"^explain: {re.escape(message)}; every layer needs at least one of each"):
        bp_torch.explain(model, x, y)
    assert bp_torch.backend() == backend
