"""The modules are drop-ins: nn.Linear's parameters, initialisation and state_dict; nn.Module's habits."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import bp_torch
from bp_torch import QuadraticCost, SigmoidLinear, SigmoidMLP


def test_same_parameters_and_initialisation_as_nn_linear():
    torch.manual_seed(0)
    ours = SigmoidLinear(20, 30)
    torch.manual_seed(0)
    plain = nn.Linear(20, 30)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in plain.named_parameters()]
    torch.testing.assert_close(ours.weight, plain.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, plain.bias, rtol=0, atol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_moves_both_ways_and_outputs_agree(bias):
    torch.manual_seed(1)
    ours = SigmoidLinear(6, 4, bias=bias)
    plain = nn.Sequential(nn.Linear(6, 4, bias=bias), nn.Sigmoid())
    plain[0].load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 6)
    torch.testing.assert_close(ours(x), plain(x))
    other = nn.Linear(6, 4, bias=bias)
    fresh = SigmoidLinear(6, 4, bias=bias)
    fresh.load_state_dict(other.state_dict())
    torch.testing.assert_close(fresh(x), torch.sigmoid(other(x)))


def test_drops_into_an_existing_model_and_trains_like_it():
    torch.manual_seed(2)
    plain = nn.Sequential(nn.Linear(8, 16), nn.Sigmoid(), nn.Linear(16, 3))
    ours = nn.Sequential(SigmoidLinear(8, 16), nn.Linear(16, 3))
    ours[0].load_state_dict(plain[0].state_dict())
    ours[1].load_state_dict(plain[2].state_dict())
    x, target = torch.randn(10, 8, dtype=torch.float32), torch.randint(0, 3, (10,))
    for model in (plain, ours):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), target).backward()
            opt.step()
    torch.testing.assert_close(ours[0].weight, plain[0].weight)
    torch.testing.assert_close(ours[1].weight, plain[2].weight)


def test_repr_and_no_bias():
    assert repr(SigmoidLinear(3, 2)) == "SigmoidLinear(in_features=3, out_features=2, bias=True)"
    layer = SigmoidLinear(3, 2, bias=False)
    assert layer.bias is None and "bias" not in dict(layer.named_parameters())
    assert list(layer.state_dict()) == ["weight"]


def test_factory_kwargs_and_meta_device():
    layer = SigmoidLinear(3, 2, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.bias.dtype == torch.float64
    meta = SigmoidMLP([5, 4, 2], device="meta")
    assert all(p.is_meta for p in meta.parameters())
    out = meta(torch.empty(7, 5, device="meta"))
    assert out.shape == (7, 2) and out.is_meta


def test_pickle_deepcopy_and_torch_save_roundtrip():
    torch.manual_seed(3)
    net = SigmoidMLP([4, 3, 2])
    x = torch.rand(5, 4)
    for restored in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        torch.testing.assert_close(restored(x), net(x))
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = SigmoidMLP([4, 3, 2])
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh(x), net(x))


def test_train_and_eval_give_the_same_output():
    net = SigmoidMLP([4, 3, 2])
    x = torch.rand(5, 4)
    out_train = net.train()(x)
    torch.testing.assert_close(net.eval()(x), out_train)


def test_sigmoid_mlp_is_a_chain_of_sigmoid_linear_layers():
    torch.manual_seed(4)
    net = SigmoidMLP([784, 30, 10])
    assert list(net.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert [type(layer) for layer in net] == [SigmoidLinear, SigmoidLinear]
    assert (net[0].in_features, net[0].out_features, net[1].out_features) == (784, 30, 10)
    x = torch.rand(3, 784)
    torch.testing.assert_close(
        net(x),
        torch.sigmoid(
            net[1].weight @ torch.sigmoid(net[0].weight @ x.T + net[0].bias[:, None]) + net[1].bias[:, None]
        ).T,
    )
    plain = nn.Sequential(nn.Linear(784, 30), nn.Sigmoid(), nn.Linear(30, 10), nn.Sigmoid())
    plain.load_state_dict(
        {k.replace("1.", "2.", 1) if k.startswith("1.") else k: v for k, v in net.state_dict().items()}
    )
    torch.testing.assert_close(plain(x), net(x))


def test_quadratic_cost_module_matches_functional():
    a, y = torch.rand(4, 3), torch.rand(4, 3)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(QuadraticCost(reduction)(a, y), bp_torch.functional.quadratic_cost(a, y, reduction))


def test_to_sequential_is_the_same_network_in_plain_torch():
    """A checkpoint export: plain nn.Linear + nn.Sigmoid with copies of the parameters, the same outputs."""
    torch.manual_seed(0)
    net = bp_torch.SigmoidMLP([5, 4, 3], dtype=torch.float64)
    net[1] = bp_torch.SigmoidLinear(4, 3, bias=False, dtype=torch.float64)
    plain = net.to_sequential()
    assert [type(m) for m in plain] == [torch.nn.Linear, torch.nn.Sigmoid, torch.nn.Linear, torch.nn.Sigmoid]
    assert list(plain.state_dict()) == ["0.weight", "0.bias", "2.weight"]
    x = torch.rand(7, 5, dtype=torch.float64)
    expected = torch.sigmoid(torch.sigmoid(x @ net[0].weight.T + net[0].bias) @ net[1].weight.T)
    torch.testing.assert_close(plain(x), expected, rtol=0, atol=1e-15)
    with torch.no_grad():
        plain[0].weight.add_(1.0)  # copies: the SigmoidMLP is untouched
    assert not torch.equal(plain[0].weight, net[0].weight)
    net.append(torch.nn.Identity())
    with pytest.raises(ValueError, match=r"to_sequential: layer 2 \(Identity\) is not a SigmoidLinear"):
        net.to_sequential()
