"""The chapter's two-layer network, run as the chapter writes it: equations (A) and (B), then gradient descent.

    bash scripts/env.sh python examples/chapter_two_layer.py

1. ``bp_torch.functional.two_layer_quadratic_cost(x, w1, b1, w2, b2, y)`` computes
   ``a^1 = sigma(w^1 x + b^1)``, ``a^2 = sigma(w^2 a^1 + b^2)`` and ``C = 1/2 sum_j (y_j - a^2_j)^2`` (averaged over
   the samples). Its backward is the chapter's two equations, literally
   (``bp_torch/autograd.py``, ``TwoLayerQuadraticCostFunction.backward``):

       (A)  dC/dw^2 = a^1 * sigma'(z^2) * (a^2 - y)
       (B)  dC/dw^1 = a^0 * sigma'(z^1) * (a^2 - y) * sigma'(z^2) * w^2

2. The same network written with plain torch ops (no bp_torch code at all) and differentiated by torch autograd
   gives the same gradients, to float64 rounding.
3. Gradient descent, ``W <- W - eta * dC/dW`` with (A) and (B) as the gradients, drives the cost down.
"""

import argparse
import math

import torch

from bp_torch.functional import two_layer_quadratic_cost


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def learning_rate(text):
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


parser = argparse.ArgumentParser(
    description="The chapter's two-layer network: equations (A) and (B) by two_layer_quadratic_cost's backward, "
    "checked against torch autograd on the same network in plain torch ops, then gradient descent "
    "with them."
)
parser.add_argument("--eta", type=learning_rate, default=2.0, help="the learning rate; default: 2.0")
parser.add_argument("--steps", type=positive_int, default=400, help="gradient-descent steps; default: 400")
parser.add_argument("--seed", type=int, default=0, help="seeds the data and the weights; default: 0")
args = parser.parse_args()

torch.manual_seed(args.seed)
dtype = torch.float64
n_samples, n0, n1, n2 = 16, 3, 4, 2
eta, steps, print_every = args.eta, args.steps, max(1, args.steps // 8)

# A small task: output 1 says whether the inputs average above 1/2, output 2 whether x_1 > x_3.
x = torch.rand(n_samples, n0, dtype=dtype)
y = torch.stack([(x.mean(1) > 0.5), (x[:, 0] > x[:, 2])], dim=1).to(dtype)

w1 = (0.5 * torch.randn(n1, n0, dtype=dtype)).requires_grad_()
b1 = torch.zeros(n1, dtype=dtype, requires_grad=True)
w2 = (0.5 * torch.randn(n2, n1, dtype=dtype)).requires_grad_()
b2 = torch.zeros(n2, dtype=dtype, requires_grad=True)
params = [w1, b1, w2, b2]

# 1. (A) and (B), by the backward of two_layer_quadratic_cost
cost = two_layer_quadratic_cost(x, w1, b1, w2, b2, y)
dC_dw1_B, dC_dw2_A = torch.autograd.grad(cost, [w1, w2])

# 2. The independent reference: the same network in plain torch ops, differentiated by torch autograd
a1 = torch.sigmoid(x @ w1.T + b1)
a2 = torch.sigmoid(a1 @ w2.T + b2)
reference_cost = (0.5 * (y - a2).square().sum(1)).mean()
dC_dw1_ref, dC_dw2_ref = torch.autograd.grad(reference_cost, [w1, w2])

print(f"network {n0}-{n1}-{n2}, {n_samples} samples, float64, C = 1/2n sum_x sum_j (y_j - a^2_j)^2")
print(f"C by two_layer_quadratic_cost = {cost.item():.12g}, by plain torch = {reference_cost.item():.12g}")
print("(A) dC/dw^2 = a^1 * sigma'(z^2) * (a^2 - y), summed over the samples / n:")
print(dC_dw2_A)
print(f"max |(A) - autograd| = {(dC_dw2_A - dC_dw2_ref).abs().max().item():.1e}")
print("(B) dC/dw^1 = a^0 * sigma'(z^1) * (a^2 - y) * sigma'(z^2) * w^2, summed over the samples / n:")
print(dC_dw1_B)
print(f"max |(B) - autograd| = {(dC_dw1_B - dC_dw1_ref).abs().max().item():.1e}")

# 3. Gradient descent with (A) and (B): W <- W - eta * dC/dW (and the same for the biases)
print(f"\ngradient descent, W <- W - eta * dC/dW, eta = {eta:g}")
for step in range(steps + 1):
    cost = two_layer_quadratic_cost(x, w1, b1, w2, b2, y)
    if step % print_every == 0:
        print(f"step {step:4d}   C = {cost.item():.10f}")
    if step == steps:
        break
    grads = torch.autograd.grad(cost, params)
    with torch.no_grad():
        for param, grad in zip(params, grads):
            param -= eta * grad
