"""torch.func: per-sample gradients with vmap(grad(...)) equal a loop over the samples."""

import torch
from torch.func import grad, vmap

from bp_torch import QuadraticCost, SigmoidLinear, SigmoidMLP
from bp_torch.functional import two_layer_quadratic_cost

import reference


def test_per_sample_gradients_of_a_model_equal_a_loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(SigmoidLinear(5, 4), SigmoidMLP([4, 3, 2]))
    reference.assert_per_sample_grads_match_loop(model, QuadraticCost(), torch.rand(6, 5), torch.rand(6, 2))


def test_per_sample_gradients_of_the_two_layer_function_equal_a_loop():
    torch.manual_seed(1)
    w1, b1, w2, b2 = torch.randn(4, 3), torch.randn(4), torch.randn(2, 4), torch.randn(2)
    x, y = torch.randn(5, 3), torch.rand(5, 2)
    per_sample = vmap(grad(two_layer_quadratic_cost, argnums=(1, 3)), in_dims=(0, None, None, None, None, 0))(
        x, w1, b1, w2, b2, y
    )
    for i in range(len(x)):
        expected = grad(two_layer_quadratic_cost, argnums=(1, 3))(x[i], w1, b1, w2, b2, y[i])
        for got, want in zip(per_sample, expected):
            torch.testing.assert_close(got[i], want)
