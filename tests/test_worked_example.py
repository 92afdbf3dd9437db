"""Matt Mazur's published 2-2-2 worked example ("A Step by Step Backpropagation Example", 2015).

Mazur rounds his intermediate values, so each published number is checked to one unit in its last digit.
His network shares one bias per layer and does not update the biases; one gradient-descent step uses eta = 0.5.
"""

import torch

import bp_torch
from bp_torch.functional import two_layer_quadratic_cost

X = torch.tensor([0.05, 0.10], dtype=torch.float64)
Y = torch.tensor([0.01, 0.99], dtype=torch.float64)
W1 = torch.tensor([[0.15, 0.20], [0.25, 0.30]], dtype=torch.float64)  # w1 w2 / w3 w4
B1 = torch.tensor([0.35, 0.35], dtype=torch.float64)
W2 = torch.tensor([[0.40, 0.45], [0.50, 0.55]], dtype=torch.float64)  # w5 w6 / w7 w8
B2 = torch.tensor([0.60, 0.60], dtype=torch.float64)
ETA = 0.5


def assert_published(value, published: str):
    """value equals the published decimal to one unit in its last digit."""
    unit = 10.0 ** -len(published.split(".")[1])
    value = float(torch.as_tensor(value).detach())
    assert abs(value - float(published)) <= unit, (value, published)


def mazur_network():
    net = bp_torch.SigmoidMLP([2, 2, 2], dtype=torch.float64)
    with torch.no_grad():
        for layer, w, b in zip(net, (W1, W2), (B1, B2)):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    return net


def test_forward_pass_and_total_error():
    net = mazur_network()
    hidden = net[0](X)
    out = net[1](hidden)
    assert_published(hidden[0], "0.593269992")
    assert_published(hidden[1], "0.596884378")
    assert_published(out[0], "0.75136507")
    assert_published(out[1], "0.772928465")
    assert_published(bp_torch.QuadraticCost()(out, Y), "0.298371109")


def test_equations_a_and_b_give_the_published_gradients_and_updates():
    w1, w2 = W1.clone().requires_grad_(), W2.clone().requires_grad_()
    cost = two_layer_quadratic_cost(X, w1, B1, w2, B2, Y)
    assert_published(cost, "0.298371109")
    grad_w1, grad_w2 = torch.autograd.grad(cost, (w1, w2))
    assert_published(grad_w2[0, 0], "0.082167041")  # dE/dw5, by (A)
    new_w2, new_w1 = W2 - ETA * grad_w2, W1 - ETA * grad_w1  # W <- W - eta dC/dW
    for value, published in zip(new_w2.flatten(), ["0.35891648", "0.408666186", "0.511301270", "0.561370121"]):
        assert_published(value, published)
    for value, published in zip(new_w1.flatten(), ["0.149780716", "0.19956143", "0.24975114", "0.29950229"]):
        assert_published(value, published)  # by (B)


def test_one_sgd_step_of_the_module_gives_the_published_weights():
    net = mazur_network()
    net[0].bias.requires_grad_(False)
    net[1].bias.requires_grad_(False)
    opt = torch.optim.SGD([net[0].weight, net[1].weight], lr=ETA)
    bp_torch.QuadraticCost()(net(X), Y).backward()
    opt.step()
    assert_published(net[1].weight[0, 0], "0.35891648")
    assert_published(net[0].weight[0, 0], "0.149780716")
    assert_published(net[0].weight[1, 1], "0.29950229")
