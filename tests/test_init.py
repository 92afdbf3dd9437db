"""SigmoidLinear(init=...) and SigmoidMLP(init=...): "torch" (nn.Linear's), "nielsen" (3.5) and "large"."""

import math
import re

import pytest
import torch
from scipy import stats
from torch import nn

from bp_torch import SigmoidLinear, SigmoidMLP


@pytest.mark.parametrize("init", ["torch", "nielsen", "large"])
def test_seeded_draws_are_reproducible(init):
    torch.manual_seed(0)
    first = SigmoidMLP([20, 10, 5], init=init).state_dict()
    torch.manual_seed(0)
    second = SigmoidMLP([20, 10, 5], init=init).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(1)
    third = SigmoidMLP([20, 10, 5], init=init).state_dict()
    assert not torch.equal(first["0.weight"], third["0.weight"])


@pytest.mark.parametrize("bias", [True, False])
def test_torch_init_is_nn_linear_for_the_same_seed(bias):
    torch.manual_seed(2)
    ours = SigmoidLinear(30, 7, bias=bias, init="torch")
    torch.manual_seed(2)
    plain = nn.Linear(30, 7, bias=bias)
    assert torch.equal(ours.weight, plain.weight)
    assert bias is False or torch.equal(ours.bias, plain.bias)
    torch.manual_seed(2)
    assert torch.equal(SigmoidLinear(30, 7, bias=bias).weight, ours.weight)  # the default


@pytest.mark.parametrize("init, weight_std", [("nielsen", 1 / math.sqrt(400)), ("large", 1.0)])
def test_distributions(init, weight_std):
    """Kolmogorov-Smirnov against N(0, std^2) for 40,000 weights and 2,000 biases (fixed seed, generous bounds), and
    the moments, for each layer of a network."""
    torch.manual_seed(3)
    net = SigmoidMLP([400, 100, 20], init=init, dtype=torch.float64)
    for layer, n_in in zip(net, [400, 100]):
        std = weight_std if init == "large" else 1 / math.sqrt(n_in)
        weights = layer.weight.detach().flatten().numpy()
        assert stats.kstest(weights, "norm", args=(0, std)).pvalue > 1e-3
        assert abs(weights.mean()) < 5 * std / math.sqrt(weights.size)
        assert abs(weights.std() / std - 1) < 0.05
    biases = torch.cat(
        [SigmoidLinear(10, 1000, init=init, dtype=torch.float64).bias.detach(), net[0].bias.detach()]
    ).numpy()
    assert stats.kstest(biases, "norm", args=(0, 1)).pvalue > 1e-3
    # and not another of the three: nn.Linear's uniform weights fail the same test
    uniform = SigmoidLinear(400, 100, init="torch", dtype=torch.float64).weight.detach().flatten().numpy()
    assert stats.kstest(uniform, "norm", args=(0, 1 / math.sqrt(400))).pvalue < 1e-6


def test_nielsen_init_keeps_hidden_units_unsaturated():
    """The point of (3.5): with [0, 1] inputs, z = w x + b has a spread near 1 rather than sqrt(n_in)."""
    torch.manual_seed(4)
    x = torch.rand(1000, 784)
    layers = {init: SigmoidLinear(784, 30, init=init) for init in ("nielsen", "large")}
    spread = {init: nn.functional.linear(x, layer.weight, layer.bias).std().item() for init, layer in layers.items()}
    assert spread["nielsen"] < 2 < 10 < spread["large"]


def test_reset_parameters_draws_by_the_layers_init():
    layer = SigmoidLinear(50, 40, init="large")
    torch.manual_seed(5)
    layer.reset_parameters()
    torch.manual_seed(5)
    expected = torch.randn(40, 50)
    assert torch.equal(layer.weight, expected)
    assert torch.equal(layer.bias, torch.randn(40))


def test_repr_and_meta_device_and_zero_width():
    assert (
        repr(SigmoidLinear(3, 2, init="nielsen")) == "SigmoidLinear(in_features=3, out_features=2, bias=True, "
        "init='nielsen')"
    )
    assert repr(SigmoidLinear(3, 2)) == "SigmoidLinear(in_features=3, out_features=2, bias=True)"
    assert SigmoidMLP([3, 2], init="nielsen", device="meta")[0].weight.is_meta
    assert SigmoidLinear(0, 2, init="nielsen").bias.isfinite().all()


@pytest.mark.parametrize("init", ["normal", "Nielsen", "", None, 1])
def test_unknown_init_is_refused(init):
    with pytest.raises(
        ValueError, match=re.escape(f"SigmoidLinear: init must be one of ('torch', 'nielsen', 'large'), got {init!r}")
    ):
        SigmoidLinear(3, 2, init=init)
    with pytest.raises(
        ValueError, match=re.escape(f"SigmoidMLP: init must be one of ('torch', 'nielsen', 'large'), got {init!r}")
    ):
        SigmoidMLP([3, 2], init=init)


def test_a_layer_pickled_before_init_existed_loads_as_init_torch():
    import pickle

    layer = SigmoidLinear(3, 2)
    del layer.__dict__["init"]  # the state an object pickled by a version without `init` restores
    restored = pickle.loads(pickle.dumps(layer))
    assert repr(restored) == "SigmoidLinear(in_features=3, out_features=2, bias=True)"
    torch.manual_seed(2)
    restored.reset_parameters()
    torch.manual_seed(2)
    assert torch.equal(restored.weight, nn.Linear(3, 2).weight)
