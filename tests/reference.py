"""Independent references: plain torch autograd (nn.functional.linear + torch.sigmoid) and numpy."""

import numpy as np
import torch
import torch.nn.functional as F


def sigmoid_linear(x, weight, bias=None):
    return torch.sigmoid(F.linear(x, weight, bias))


def quadratic_cost(a, y, reduction="mean"):
    per_sample = 0.5 * ((y - a) ** 2).sum(-1)
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]


def grads(fn, inputs, grad_output=None):
    """Output and gradients of fn(*inputs) w.r.t. the inputs that require grad (None for the others)."""
    out = fn(*inputs)
    needed = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    if grad_output is None:
        grad_output = torch.ones_like(out)
    got = iter(torch.autograd.grad(out, needed, grad_output)) if needed else iter(())
    return out, [next(got) if isinstance(t, torch.Tensor) and t.requires_grad else None for t in inputs]


def assert_compiled_matches_eager(model, cost, x, y):
    """torch.compile(fullgraph=True) of cost(model(x), y): the same cost and parameter gradients as eager."""

    def step(x, y):
        return cost(model(x), y)

    params = list(model.parameters())
    eager = step(x, y)
    eager_grads = torch.autograd.grad(eager, params)
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)(x, y)
    compiled_grads = torch.autograd.grad(compiled, params)
    torch.testing.assert_close(compiled, eager)
    for c, e in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(c, e)


def assert_per_sample_grads_match_loop(model, cost, x, y):
    """torch.func.vmap(grad(...)) per-sample gradients equal a loop of backward() calls, one sample at a time."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def sample_cost(p, xi, yi):
        return cost(functional_call(model, p, (xi,)), yi)

    per_sample = vmap(grad(sample_cost), in_dims=(None, 0, 0))(params, x, y)
    for i in range(len(x)):
        model.zero_grad()
        cost(model(x[i]), y[i]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_sample[name][i], p.grad)


def cross_entropy_cost(a, y, reduction="mean"):
    """The cross-entropy cost per sample in plain torch: BCE summed over the outputs, BCE's ln 0 = -100 floor."""
    per_sample = F.binary_cross_entropy(a, y, reduction="none").sum(-1)
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]


def numpy_network2_sgd(weights, biases, xs, ys, eta, batch_size, cost, lmbda, n):
    """Nielsen's network2.py ``update_mini_batch``, re-stated in numpy from the book's formulas, over the samples
    in order.

    Per sample: forward ``a^l = sigma(w^l a^(l-1) + b^l)``; output error ``delta^L = (a - y) sigma'(z^L)``
    (``cost="quadratic"``) or ``delta^L = a - y`` (``"cross_entropy"``); ``delta^l = (w^(l+1))^T delta^(l+1) *
    sigma'(z^l)``; ``dC_x/dw^l = delta^l (a^(l-1))^T``, ``dC_x/db^l = delta^l``. Per mini-batch of m samples:
    ``w <- (1 - eta lmbda / n) w - (eta / m) sum_x dC_x/dw``, ``b <- b - (eta / m) sum_x dC_x/db``.
    Returns the weights and biases after each mini-batch (a list of (weights, biases) pairs), and each mini-batch's
    cost before its update, ``1/m sum_x C_x`` (the quadratic ``C_x = 1/2 ||y(x) - a^L(x)||^2`` or the
    cross-entropy, :func:`numpy_cross_entropy`; without the L2 term).
    """
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    weights = [w.copy() for w in weights]
    biases = [b.copy() for b in biases]
    trajectory, costs = [], []
    for start in range(0, len(xs), batch_size):
        batch = list(zip(xs[start : start + batch_size], ys[start : start + batch_size]))
        nabla_w = [np.zeros_like(w) for w in weights]
        nabla_b = [np.zeros_like(b) for b in biases]
        batch_cost = 0.0
        for x, y in batch:
            activation, activations, zs = x, [x], []
            for w, b in zip(weights, biases):
                z = w @ activation + b
                zs.append(z)
                activation = sigmoid(z)
                activations.append(activation)
            if cost == "cross_entropy":
                batch_cost += numpy_cross_entropy(activations[-1], y) / len(batch)
                delta = activations[-1] - y
            else:
                batch_cost += 0.5 * np.sum((y - activations[-1]) ** 2) / len(batch)
                delta = (activations[-1] - y) * sigmoid(zs[-1]) * (1 - sigmoid(zs[-1]))
            nabla_w[-1] += np.outer(delta, activations[-2])
            nabla_b[-1] += delta
            for layer in range(2, len(weights) + 1):
                sp = sigmoid(zs[-layer]) * (1 - sigmoid(zs[-layer]))
                delta = (weights[-layer + 1].T @ delta) * sp
                nabla_w[-layer] += np.outer(delta, activations[-layer - 1])
                nabla_b[-layer] += delta
        m = len(batch)
        weights = [(1 - eta * (lmbda / n)) * w - (eta / m) * nw for w, nw in zip(weights, nabla_w)]
        biases = [b - (eta / m) * nb for b, nb in zip(biases, nabla_b)]
        trajectory.append(([w.copy() for w in weights], [b.copy() for b in biases]))
        costs.append(batch_cost)
    return trajectory, costs


def numpy_nielsen_sgd(weights, biases, xs, ys, lr, batch_size):
    """Nielsen's network.py ``update_mini_batch``: network2.py's (:func:`numpy_network2_sgd`) on the quadratic cost,
    without L2. Returns the weights and biases after the last mini-batch, and each mini-batch's cost
    ``1/2m sum_x ||y(x) - a^L(x)||^2`` before its update."""
    trajectory, costs = numpy_network2_sgd(weights, biases, xs, ys, lr, batch_size, "quadratic", 0.0, 1)
    final_weights, final_biases = trajectory[-1] if trajectory else (weights, biases)
    return final_weights, final_biases, costs


def numpy_cross_entropy(a, y):
    """Nielsen's ``CrossEntropyCost.fn`` per sample: ``sum(nan_to_num(-y ln a - (1 - y) ln(1 - a)))``, rows of a."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)), axis=-1)


COSTS = {"quadratic": quadratic_cost, "cross_entropy": cross_entropy_cost}


def chain(weights, biases, layer=sigmoid_linear):
    """The forward of a chain of sigmoid layers, ``a^l = layer(a^(l-1), w^l, b^l)``; a bias may be None."""

    def forward(x):
        for w, b in zip(weights, biases):
            x = layer(x, w, b)
        return x

    return forward


def optim_sgd_steps(forward, weights, biases, batches, lr, weight_decay, cost):
    """The steps sgd_step and sgd_epoch must take, (3.4): for each mini-batch (x, y) in turn, ``cost(forward(x), y)``
    by autograd, then one torch.optim.SGD step with ``weight_decay`` on the weights' group and none on the biases'
    (None biases and an empty group left out). ``forward`` computes with these tensors. Returns each mini-batch's
    cost before its update, as a list."""
    groups = [
        {"params": list(weights), "weight_decay": weight_decay},
        {"params": [b for b in biases if b is not None], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.SGD([group for group in groups if group["params"]], lr=lr)
    costs = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = cost(forward(x), y)
        loss.backward()
        optimizer.step()
        costs.append(loss.detach())
    return costs
