"""The chapter's equations as ``torch.autograd.Function`` s: bp_torch's Python backend.

Notation, per sample (a batch adds leading dimensions ``*``)::

    z^l = w^l a^(l-1) + b^l        a^l = sigma(z^l)        a^0 = x
    C   = 1/2 sum_j (y_j - a^L_j)^2

and the chain rule ``dC/dw^l = dz^l/dw^l * da^l/dz^l * dC/da^l``, with

    (1.1) dz/dw    = a^(l-1)                 (2.1 in the hidden layer)
    (1.2) da/dz    = sigma'(z) = a (1 - a)   (2.2 in the hidden layer), computed from the saved output a
    (1.3) dC/da^L  = a^L - y
    (2.3.2) da^2/da^1 = sigma'(z^2) w^2      the error flowing back one layer

The next chapter (Nielsen, "Neural Networks and Deep Learning", chapter 3, ``network2.py``) changes the cost, the
update and the initial weights; bp_torch tags its formulas (3.1) to (3.5)::

    (3.1) C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]      the cross-entropy cost of one sample
    (3.2) dC/da^L = (a^L - y) / (a^L (1 - a^L))                  its derivative
    (3.3) delta^L = dC/dz^L = (3.2) x (1.2) = a^L - y             sigma'(z^L) cancels: no learning slowdown
    (3.4) w <- (1 - eta lambda/n) w - eta dC/dw,  b <- b - eta dC/db      L2 regularisation (weight decay)
    (3.5) w ~ N(0, 1/n_in), b ~ N(0, 1)                          Nielsen's initial weights (bp_torch.modules)

Every backward here is built from differentiable torch ops, so double backward (``gradgradcheck``) works, and
``generate_vmap_rule = True`` gives ``torch.func.vmap`` support for free.
"""
import math

import torch
import torch.nn.functional as F


def rows(t):
    """``t: (*, n) -> (samples, n)``, one row per sample: ``reshape(-1, n)`` cannot infer the -1 of a tensor with
    no elements (a zero-width layer)."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


def n_samples(t):
    """The number of samples in ``t: (*, n)``, at least 1: the divisor of a mean over samples."""
    return max(math.prod(t.shape[:-1]), 1)


def sigmoid_prime_from_output(a):
    """(1.2) / (2.2): sigma'(z) = sigma(z) (1 - sigma(z)) = a (1 - a). Needs the output a only, never z."""
    return a * (1 - a)


def sigmoid_linear_backward(grad_a, x, weight, a, needs_input_grad):
    """Back-propagate dC/da through ``a = sigma(x W^T + b)``.

    Shapes: ``grad_a, a: (*, out)``, ``x: (*, in)``, ``weight: (out, in)``.
    Returns ``(dC/dx: (*, in), dC/dW: (out, in), dC/db: (out,))``, each ``None`` where ``needs_input_grad`` says
    nobody asked for it.
    """
    delta = grad_a * sigmoid_prime_from_output(a)                      # delta = dC/da * da/dz        (1.2, 2.2)
    return linear_backward(delta, x, weight, needs_input_grad)


def linear_backward(delta, x, weight, needs_input_grad):
    """Back-propagate ``delta = dC/dz`` through ``z = x W^T + b``: ``(dC/dx, dC/dW, dC/db)``, as
    :func:`sigmoid_linear_backward` returns them. Shapes: ``delta: (*, out)``, ``x: (*, in)``, ``weight: (out, in)``.
    """
    need_x, need_w, need_b = needs_input_grad
    delta_2d = rows(delta)                                             # one row per sample
    grad_x = delta @ weight if need_x else None                        # dC/da_prev = delta W        (2.3.2)
    grad_w = delta_2d.T @ rows(x) if need_w else None                  # dC/dW = delta^T a_prev  (1.1, 2.1) -> (A)
    grad_b = delta_2d.sum(0) if need_b else None                       # dC/db = sum of delta (dz/db = 1)
    return grad_x, grad_w, grad_b


class SigmoidLinearFunction(torch.autograd.Function):
    """``a = sigma(x W^T + b)``, one layer of the chapter, with its backward written out.

    Shapes: ``x: (*, in)``, ``weight: (out, in)``, ``bias: (out,)`` or ``None``; returns ``a: (*, out)``.
    Saves x, W and a (never z: sigma'(z) is computed from a, equation 1.2).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias):
        return torch.sigmoid(F.linear(x, weight, bias))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight, output)

    @staticmethod
    def backward(ctx, grad_a):
        x, weight, a = ctx.saved_tensors
        return sigmoid_linear_backward(grad_a, x, weight, a, ctx.needs_input_grad)


def quadratic_cost_per_sample(a, y):
    """C = 1/2 sum_j (y_j - a_j)^2, over the last dimension: ``(*, n) -> (*)``."""
    return 0.5 * (y - a).square().sum(-1)


def reduce_cost(per_sample, reduction):
    """'none' keeps one cost per sample; 'sum' adds them; 'mean' is Nielsen's C = 1/2n sum_x ||y(x) - a(x)||^2."""
    if reduction == "none":
        return per_sample
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


def per_sample_grad(grad_cost, a, reduction):
    """The backward of :func:`reduce_cost`: the gradient reaching each sample's cost, shaped to broadcast over the
    sample's outputs ``(*, 1)`` for 'none', a scalar otherwise."""
    if reduction == "none":
        return grad_cost.unsqueeze(-1)                         # one incoming gradient per sample
    if reduction == "mean":
        return grad_cost / n_samples(a)                        # d(mean)/d(cost of one sample) = 1/n
    return grad_cost


def quadratic_cost_backward(grad_cost, a, y, reduction, needs_input_grad):
    """dC/da = (a - y) (1.3), scaled by the incoming gradient (and by 1/n for 'mean'). Returns (dC/da, dC/dy)."""
    need_a, need_y = needs_input_grad
    grad_cost = per_sample_grad(grad_cost, a, reduction)
    grad_a = (a - y) * grad_cost                               # (1.3)  dC/da^L = a^L - y
    return (grad_a if need_a else None), (-grad_a if need_y else None)


class QuadraticCostFunction(torch.autograd.Function):
    """The chapter's quadratic cost ``C = 1/2 sum_j (y_j - a_j)^2`` per sample, then reduced.

    Shapes: ``a, y: (*, n)``; returns ``(*)`` for ``reduction='none'``, a scalar otherwise.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, y, reduction):
        return reduce_cost(quadratic_cost_per_sample(a, y), reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, y, reduction = inputs
        ctx.save_for_backward(a, y)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, grad_cost):
        a, y = ctx.saved_tensors
        grad_a, grad_y = quadratic_cost_backward(grad_cost, a, y, ctx.reduction, ctx.needs_input_grad[:2])
        return grad_a, grad_y, None


# ln 0 counts as LOG_FLOOR, as in torch.nn.BCELoss: then 0 ln 0 is 0, as Nielsen's np.nan_to_num makes it, and an
# output saturated on the wrong side costs -LOG_FLOOR per unit rather than inf, so sums of costs stay finite.
LOG_FLOOR = -100.0
# The floor of a^L (1 - a^L) in (3.2), as in BCELoss's backward: a saturated output (a = 0 or 1, where the product is
# exactly 0) gets a finite gradient, 0 where a = y.
SIGMOID_PRIME_FLOOR = 1e-12


def floored_logs(a):
    """``(ln a, ln(1 - a))``, each at least ``LOG_FLOOR``; ``log1p(-a)`` keeps ``ln(1 - a)`` exact for small a."""
    return torch.log(a).clamp(min=LOG_FLOOR), torch.log1p(-a).clamp(min=LOG_FLOOR)


def cross_entropy_cost_per_sample(a, y):
    """(3.1) C_x = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)], over the last dimension: ``(*, n) -> (*)``."""
    log_a, log_1ma = floored_logs(a)
    return -(y * log_a + (1 - y) * log_1ma).sum(-1)


def cross_entropy_cost_backward(grad_cost, a, y, reduction, needs_input_grad):
    """dC/da = (a - y) / (a (1 - a)) (3.2), scaled by the incoming gradient (and by 1/n for 'mean'); dC/dy =
    ln(1 - a) - ln a, with the floored logs of (3.1). Returns (dC/da, dC/dy)."""
    need_a, need_y = needs_input_grad
    grad_cost = per_sample_grad(grad_cost, a, reduction)
    grad_a = grad_y = None
    if need_a:
        grad_a = (a - y) / (a * (1 - a)).clamp(min=SIGMOID_PRIME_FLOOR) * grad_cost      # (3.2)
    if need_y:
        log_a, log_1ma = floored_logs(a)
        grad_y = (log_1ma - log_a) * grad_cost                 # d(3.1)/dy_j
    return grad_a, grad_y


class CrossEntropyCostFunction(torch.autograd.Function):
    """The cross-entropy cost ``C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]`` per sample (3.1), then reduced.

    Shapes: ``a, y: (*, n)``, ``a`` and ``y`` in [0, 1]; returns ``(*)`` for ``reduction='none'``, a scalar
    otherwise. Its backward is (3.2), ``dC/da = (a - y) / (a (1 - a))``; after a sigmoid layer that makes
    ``delta^L = a - y`` (3.3).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a, y, reduction):
        return reduce_cost(cross_entropy_cost_per_sample(a, y), reduction)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, y, reduction = inputs
        ctx.save_for_backward(a, y)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx, grad_cost):
        a, y = ctx.saved_tensors
        grad_a, grad_y = cross_entropy_cost_backward(grad_cost, a, y, ctx.reduction, ctx.needs_input_grad[:2])
        return grad_a, grad_y, None


COSTS = {"quadratic": quadratic_cost_per_sample, "cross_entropy": cross_entropy_cost_per_sample}


class TwoLayerQuadraticCostFunction(torch.autograd.Function):
    """The chapter's two-layer network and its cost, with equations (A) and (B) written out literally.

    ``a^1 = sigma(w^1 x + b^1)``, ``a^2 = sigma(w^2 a^1 + b^2)``, ``C = 1/2 sum_j (y_j - a^2_j)^2``, averaged over
    the samples of a batch. Shapes: ``x: (*, n0)``, ``w1: (n1, n0)``, ``b1: (n1,)``, ``w2: (n2, n1)``,
    ``b2: (n2,)``, ``y: (*, n2)``; returns a scalar.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w1, b1, w2, b2, y):
        a1 = torch.sigmoid(F.linear(x, w1, b1))
        a2 = torch.sigmoid(F.linear(a1, w2, b2))
        return quadratic_cost_per_sample(a2, y).mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_cost):
        x, w1, b1, w2, b2, y = ctx.saved_tensors
        # Back-propagation needs the activations again. Recomputing them from the inputs (rather than saving
        # intermediates) keeps the backward differentiable, so double backward stays exact.
        a0 = x
        a1 = torch.sigmoid(F.linear(a0, w1, b1))
        a2 = torch.sigmoid(F.linear(a1, w2, b2))
        n = n_samples(a2)
        a0, a1, a2, y_rows = (rows(t) for t in (a0, a1, a2, y))   # one row per sample

        dC_da2 = (a2 - y_rows) * (grad_cost / n)         # (1.3)   dC/da^2 = a^2 - y
        delta2 = sigmoid_prime_from_output(a2) * dC_da2  # (1.2)   da^2/dz^2 = sigma'(z^2)
        dC_dw2 = delta2.T @ a1                           # (A)     a^1 * sigma'(z^2) * (a^2 - y)
        dC_da1 = delta2 @ w2                             # (2.3.2) da^2/da^1 = sigma'(z^2) w^2
        delta1 = sigmoid_prime_from_output(a1) * dC_da1  # (2.2)   da^1/dz^1 = sigma'(z^1)
        dC_dw1 = delta1.T @ a0                           # (B)     a^0 * sigma'(z^1) * (a^2 - y) * sigma'(z^2) * w^2

        needs = ctx.needs_input_grad
        return (
            (delta1 @ w1).reshape(x.shape) if needs[0] else None,  # dC/dx = delta^1 w^1
            dC_dw1 if needs[1] else None,
            delta1.sum(0) if needs[2] else None,                   # dC/db^l = sum of delta^l
            dC_dw2 if needs[3] else None,
            delta2.sum(0) if needs[4] else None,
            (-dC_da2).reshape(y.shape) if needs[5] else None,
        )


def sigmoid_mlp_forward(x, weights, biases):
    """The forward pass of a whole network: ``a^l = sigma(w^l a^(l-1) + b^l)``, ``a^0 = x``.

    Returns every activation ``[a^0, a^1, ..., a^L]``: back-propagation needs them all.
    """
    activations = [x]
    for weight, bias in zip(weights, biases):
        activations.append(torch.sigmoid(F.linear(activations[-1], weight, bias)))
    return activations


def sigmoid_mlp_backward(grad_output, activations, weights):
    """Back-propagation through a whole network, from ``dC/da^L`` to every layer's gradients.

    ``delta^L = dC/da^L * sigma'(z^L)`` (1.2); then, layer by layer downwards, :func:`backpropagate`.
    Shapes: ``grad_output: (*, n_L)``, ``activations[l]: (*, n_l)``, ``weights[l-1]: (n_l, n_(l-1))``.
    Returns ``(dC/dx, [dC/dW^1 .. dC/dW^L], [dC/db^1 .. dC/db^L])``.
    """
    return backpropagate(grad_output * sigmoid_prime_from_output(activations[-1]), activations, weights)


def backpropagate(delta, activations, weights):
    """Back-propagation from the output layer's error ``delta^L = dC/dz^L`` down:
    ``dC/dW^l = delta^l (a^(l-1))^T`` (1.1, as in A), ``dC/db^l = delta^l`` and
    ``delta^(l-1) = (W^l)^T delta^l * sigma'(z^(l-1))`` (2.3.2 and 2.2, as in B).

    Shapes: ``delta: (*, n_L)``, ``activations[l]: (*, n_l)``, ``weights[l-1]: (n_l, n_(l-1))``.
    Returns ``(dC/dx, [dC/dW^1 .. dC/dW^L], [dC/db^1 .. dC/db^L])``.
    """
    grad_weights, grad_biases = [], []
    for l in range(len(weights), 0, -1):
        grad_a, grad_weight, grad_bias = linear_backward(delta, activations[l - 1], weights[l - 1], (True,) * 3)
        grad_weights.append(grad_weight)
        grad_biases.append(grad_bias)
        if l > 1:
            delta = grad_a * sigmoid_prime_from_output(activations[l - 1])   # (2.2)
    return grad_a, grad_weights[::-1], grad_biases[::-1]


def output_error(output, y, cost):
    """``delta^L = dC/dz^L`` for the cost averaged over the ``n`` samples of a mini-batch, ``(n, n_L)``.

    Quadratic: ``(a - y) sigma'(z^L)``, (1.3) x (1.2). Cross-entropy: ``a - y`` (3.3), with no division by
    ``sigma'(z^L)`` and no multiplication by it, so a saturated output still learns at the rate of its error.
    """
    if cost == "cross_entropy":
        return (output - y) / n_samples(output)                                        # (3.3), averaged
    return ((output - y) / n_samples(output)) * sigmoid_prime_from_output(output)      # (1.3) x (1.2), averaged


def sigmoid_mlp_sgd_step(x, y, weights, biases, lr, cost="quadratic", weight_decay=0.0):
    """One step of Nielsen's ``update_mini_batch``, in place: forward, back-propagation, then the update (3.4)
    ``W <- (1 - lr weight_decay) W - lr dC/dW``, ``b <- b - lr dC/db`` (biases are not decayed).

    The cost is averaged over the mini-batch: the quadratic ``C = 1/2n sum_x ||y(x) - a^L(x)||^2`` or the
    cross-entropy (3.1), ``cost`` naming it (a key of ``COSTS``), so the step is ``W <- W - (lr/n) sum_x dC_x/dW``
    as in the book, and ``weight_decay`` is Nielsen's ``lambda / n_train``. A tensor used by several layers (tied
    weights) decays once and takes the sum of its uses' gradients, as in ``torch.optim.SGD``.
    Returns ``C`` before the update, without the L2 term.
    Shapes: ``x: (n, n_0)``, ``y: (n, n_L)``; ``weights[l-1]: (n_l, n_(l-1))``, ``biases[l-1]: (n_l,)`` or ``None``.
    """
    activations = sigmoid_mlp_forward(x, weights, biases)
    output = activations[-1]
    cost_value = COSTS[cost](output, y).mean()
    _, grad_weights, grad_biases = backpropagate(output_error(output, y, cost), activations, weights)
    if weight_decay:
        decayed = {id(w): w for w in weights}                              # each tensor once
        for weight in decayed.values():
            weight.mul_(1 - lr * weight_decay)                             # (3.4) (1 - eta lambda/n) w
    for param, grad in zip([*weights, *biases], [*grad_weights, *grad_biases]):
        if param is not None:
            param.sub_(lr * grad)                                          # W <- W - eta dC/dW       (3.4)
    return cost_value


def sigmoid_mlp_sgd_epoch(x, y, weights, biases, lr, batch_size, perm, cost="quadratic", weight_decay=0.0):
    """One epoch of Nielsen's SGD: :func:`sigmoid_mlp_sgd_step` on each mini-batch of ``batch_size`` samples in
    ``perm``'s order (``None``: in order), the last one smaller when ``batch_size`` does not divide ``n``.
    Returns each mini-batch's cost before its update, shape ``[ceil(n / batch_size)]``."""
    # Rows gathered by index, in order too: a mini-batch is then a new tensor, as x[index] is in a loop of
    # sgd_step, where a slice x[i:j] would be a view at an offset, which BLAS can round differently.
    n = x.shape[0]
    order = torch.arange(n, device=x.device) if perm is None else perm
    costs = [sigmoid_mlp_sgd_step(x[index], y[index], weights, biases, lr, cost, weight_decay)
             for index in (order[start:start + batch_size] for start in range(0, n, batch_size))]
    return torch.stack(costs) if costs else x.new_empty(0)
