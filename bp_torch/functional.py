"""bp_torch's functional API: check the inputs, then dispatch to the active backend (see :mod:`bp_torch._backend`):
the Python Functions of :mod:`bp_torch.autograd` or the C++ ops of :mod:`bp_torch._ops`. This is the one place
that chooses between them.

What kind of thing each argument is gets checked here, for both backends (:mod:`bp_torch._checks`). Shapes, dtypes
and devices are checked in C++ (``TORCH_CHECK``) on the C++ backend, so a call costs one dispatch, and here on the
Python backend; both raise the same exceptions with the same messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _backend, _checks, _ops
from .autograd import (
    CrossEntropyCostFunction,
    QuadraticCostFunction,
    SigmoidLinearFunction,
    TwoLayerQuadraticCostFunction,
    sigmoid_mlp_sgd_epoch,
    sigmoid_mlp_sgd_step,
)


def _autocast_device_type(input):
    """The device type of ``input`` if torch.autocast is on for it, else None."""
    device_type = input.device.type
    enabled = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    return device_type if enabled else None


def _to_float32(device_type, *tensors) -> list:
    """Under autocast the ops compute in float32, as the C++ ops declare with ``register_autocast`` (see
    :mod:`bp_torch._ops`): floating-point tensors on the autocast device, other than float64, become float32."""
    return [
        t.to(torch.float32)
        if isinstance(t, torch.Tensor)
        and t.is_floating_point()
        and t.device.type == device_type
        and t.dtype != torch.float64
        else t
        for t in tensors
    ]


def sigmoid_linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""``a = sigmoid(input @ weight.T + bias)``: one layer of the chapter, ``a^l = sigma(w^l a^(l-1) + b^l)``.

    Its backward is the chapter's: ``delta = dC/da * a (1 - a)`` (1.2), ``dC/dW = delta^T input`` (1.1),
    ``dC/db = sum(delta)``, ``dC/dinput = delta W`` (2.3.2).

    Shapes: ``input: (*, in_features)``, ``weight: (out_features, in_features)``, ``bias: (out_features,)`` or
    ``None``; returns ``(*, out_features)``. float32 or float64.

    Examples::

        >>> weight = torch.zeros(3, 2)                   # z = 0 W + b = b
        >>> bp_torch.functional.sigmoid_linear(torch.ones(1, 2), weight, torch.tensor([0.0, 2.0, -2.0]))
        tensor([[0.5000, 0.8808, 0.1192]])
    """
    _checks.tensor("sigmoid_linear", "input", input)
    _checks.tensor("sigmoid_linear", "weight", weight)
    _checks.tensor("sigmoid_linear", "bias", bias, optional=True)
    if _backend.use_cpp(input):
        return _ops.sigmoid_linear(input, weight, bias)
    device_type = _autocast_device_type(input)
    if device_type is not None:  # autocast off inside, or F.linear would drop back to bfloat16/float16
        with torch.autocast(device_type, enabled=False):
            return sigmoid_linear(*_to_float32(device_type, input, weight, bias))
    _checks.sigmoid_linear(input, weight, bias)
    return SigmoidLinearFunction.apply(input, weight, bias)


def quadratic_cost(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""The chapter's quadratic cost ``C = 1/2 sum_j (y_j - a_j)^2`` per sample (over the last dimension).

    ``reduction``: ``"mean"`` averages over samples (Nielsen's ``C = 1/2n sum_x ||y(x) - a(x)||^2``), ``"sum"``
    adds them, ``"none"`` returns one cost per sample. Its backward is ``dC/da = a - y`` (1.3).

    Shapes: ``input, target: (*, n)``; returns ``(*)`` for ``"none"``, a scalar otherwise.

    Examples::

        >>> a, y = torch.tensor([[0.2, 0.9], [0.5, 0.5]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> bp_torch.functional.quadratic_cost(a, y, reduction="none")   # 1/2 (0.2^2 + 0.1^2), 1/2 (0.5^2 + 0.5^2)
        tensor([0.0250, 0.2500])
        >>> bp_torch.functional.quadratic_cost(a, y)
        tensor(0.1375)
    """
    _checks.tensor("quadratic_cost", "input", input)
    _checks.tensor("quadratic_cost", "target", target)
    # A reduction that is not a str (None, say) would fail the op's schema with a RuntimeError: let the Python
    # checks raise their ValueError instead, as on the Python backend.
    if _backend.use_cpp(input) and isinstance(reduction, str):
        return _ops.quadratic_cost(input, target, reduction)
    device_type = _autocast_device_type(input)
    if device_type is not None:
        with torch.autocast(device_type, enabled=False):
            input, target = _to_float32(device_type, input, target)
            return quadratic_cost(input, target, reduction)
    _checks.quadratic_cost(input, target, reduction)
    return QuadraticCostFunction.apply(input, target, reduction)


def cross_entropy_cost(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""The cross-entropy cost ``C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]`` per sample (3.1), over the last
    dimension: Nielsen's ``CrossEntropyCost``.

    ``reduction``: ``"mean"`` averages over samples (Nielsen's ``C = -1/n sum_x sum_j [...]``), ``"sum"`` adds
    them, ``"none"`` returns one cost per sample. Its backward is written out: ``dC/da = (a - y) / (a (1 - a))``
    (3.2), and ``dC/dy = ln(1 - a) - ln a``. After a sigmoid layer the product with ``sigma'(z) = a (1 - a)`` is
    ``a - y`` (3.3): the fused :func:`sgd_step` and :func:`sgd_epoch` (``cost="cross_entropy"``) use ``a - y``
    directly, without the division.

    A saturated output stays finite, as Nielsen's ``np.nan_to_num`` keeps it: ``ln 0`` counts as ``-100`` (as in
    ``torch.nn.BCELoss``), so ``0 ln 0 = 0`` and a unit saturated on the wrong side costs 100; the ``a (1 - a)`` of
    (3.2) is at least ``1e-12``. The cost per sample equals ``nn.functional.binary_cross_entropy(input, target,
    reduction="none").sum(-1)``.

    Shapes: ``input, target: (*, n)``, every value in [0, 1] (``ValueError`` otherwise; NaN propagates); returns
    ``(*)`` for ``"none"``, a scalar otherwise. float32 or float64.

    Examples::

        >>> a, y = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]])
        >>> bp_torch.functional.cross_entropy_cost(a, y)                  # -(ln 0.5 + ln 0.5) = 2 ln 2
        tensor(1.3863)
        >>> bp_torch.functional.cross_entropy_cost(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 1.0]]))
        tensor(0.)
    """
    _checks.tensor("cross_entropy_cost", "input", input)
    _checks.tensor("cross_entropy_cost", "target", target)
    if _backend.use_cpp(input) and isinstance(reduction, str):
        # The op checks the arguments as _checks.quadratic_cost does; their values, in [0, 1], are checked here, in
        # the same words and order as on the Python backend.
        cost = _ops.cross_entropy_cost(input, target, reduction)
        _checks.probabilities("cross_entropy_cost", "input", input)
        _checks.probabilities("cross_entropy_cost", "target", target)
        return cost
    device_type = _autocast_device_type(input)
    if device_type is not None:
        with torch.autocast(device_type, enabled=False):
            input, target = _to_float32(device_type, input, target)
            return cross_entropy_cost(input, target, reduction)
    _checks.cross_entropy_cost(input, target, reduction)
    return CrossEntropyCostFunction.apply(input, target, reduction)


def two_layer_quadratic_cost(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, y: Tensor) -> Tensor:
    r"""The chapter's two-layer network and its cost, as one Function whose backward is equations (A) and (B).

    ``a^1 = sigma(w^1 x + b^1)``, ``a^2 = sigma(w^2 a^1 + b^2)``, ``C = 1/2 sum_j (y_j - a^2_j)^2``, averaged over
    the samples. The backward returns ``dC/dw^2`` by (A) and ``dC/dw^1`` by (B): see
    :class:`bp_torch.autograd.TwoLayerQuadraticCostFunction`. A teaching tool: it always runs in Python.

    Shapes: ``x: (*, n0)``, ``w1: (n1, n0)``, ``b1: (n1,)``, ``w2: (n2, n1)``, ``b2: (n2,)``, ``y: (*, n2)``;
    returns a scalar.

    Examples::

        >>> x, y = torch.ones(1, 2), torch.ones(1, 1)
        >>> w1, b1, w2, b2 = torch.zeros(3, 2), torch.zeros(3), torch.zeros(1, 3), torch.zeros(1)
        >>> bp_torch.functional.two_layer_quadratic_cost(x, w1, b1, w2, b2, y)   # a^2 = sigma(0): 1/2 (1 - 0.5)^2
        tensor(0.1250)
    """
    _checks.two_layer_quadratic_cost(x, w1, b1, w2, b2, y)
    return TwoLayerQuadraticCostFunction.apply(x, w1, b1, w2, b2, y)


def sigmoid_mlp(input: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor | None] = ()) -> Tensor:
    r"""A whole network of sigmoid layers, ``a^l = sigma(w^l a^(l-1) + b^l)`` for ``l = 1 .. L``, ``a^0 = input``:
    returns ``a^L``.

    On the C++ backend this is one op and one autograd node for the whole network, whose backward is the
    back-propagation loop: ``delta^L = dC/da^L * sigma'(z^L)`` (1.2), ``dC/dW^l = delta^l (a^(l-1))^T`` (1.1, as in
    A), ``delta^(l-1) = (W^l)^T delta^l * sigma'(z^(l-1))`` (2.3.2 and 2.2, as in B). On the Python backend (and
    under torch.func transforms) it is the chain of :func:`sigmoid_linear` s, with the same values and gradients.

    Shapes: ``input: (*, n_0)``, ``weights[l]: (n_(l+1), n_l)``, ``biases``: empty (no bias) or one entry per layer,
    ``biases[l]: (n_(l+1),)`` or ``None`` for a layer without a bias; returns ``(*, n_L)``. float32 or float64.

    Examples::

        >>> weights = [torch.zeros(3, 2), torch.zeros(1, 3)]
        >>> bp_torch.functional.sigmoid_mlp(torch.ones(1, 2), weights)      # sigma(0) in every layer
        tensor([[0.5000]])
    """
    _checks.tensor("sigmoid_mlp", "input", input)
    _checks.tensor_list("sigmoid_mlp", "weights", weights)
    _checks.tensor_list("sigmoid_mlp", "biases", biases, optional=True)
    if _backend.use_cpp(input):
        return _ops.sigmoid_mlp(input, weights, _op_biases(weights, biases))[-1]  # a^1 .. a^L; the node saves all
    device_type = _autocast_device_type(input)
    if device_type is not None:  # as sigmoid_linear: float32 inside, autocast off
        with torch.autocast(device_type, enabled=False):
            (input,) = _to_float32(device_type, input)
            return sigmoid_mlp(input, _to_float32(device_type, *weights), _to_float32(device_type, *biases))
    _checks.sigmoid_mlp(input, weights, biases)
    for l, weight in enumerate(weights):
        input = sigmoid_linear(input, weight, biases[l] if biases else None)
    return input


def _op_biases(weights, biases):
    """The biases as the C++ ops take them: an empty list (no layer has a bias) or one tensor per layer. A layer
    without a bias in a network whose other layers have one gets zeros, which is exact: z + 0 is z, and the zeros'
    gradient and update are thrown away."""
    missing = 0
    for b in biases:  # `None in biases` would call each tensor's __eq__
        missing += b is None
    if missing == 0:
        return biases
    if missing == len(biases):
        return []
    return [
        b if b is not None else torch.zeros(w.shape[:1], dtype=w.dtype, device=w.device)
        for w, b in zip(weights, biases)
    ]


def sgd_step(
    x: Tensor,
    y: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    lr: float | Tensor,
    *,
    cost: str = "quadratic",
    weight_decay: float | Tensor = 0.0,
) -> Tensor:
    r"""One step of Nielsen's ``update_mini_batch`` on a chain of sigmoid layers, updating the tensors in place.

    Forward through every layer, back-propagation by (A)/(B) generalised, then
    ``W <- (1 - lr * weight_decay) W - lr * dC/dW`` and ``b <- b - lr * dC/db`` (3.4), where ``C`` is the cost
    averaged over the mini-batch: ``cost="quadratic"``, ``C = 1/2n sum_x ||y(x) - a^L(x)||^2``, whose output error
    is ``delta^L = (a^L - y) sigma'(z^L)``; or ``cost="cross_entropy"``, Nielsen's
    ``C = -1/n sum_x sum_j [y_j ln a^L_j + (1 - y_j) ln(1 - a^L_j)]`` (see :func:`cross_entropy_cost`), whose
    output error is ``delta^L = a^L - y`` (3.3). ``weight_decay`` is ``torch.optim.SGD``'s: the L2 term
    ``lambda/2n sum w^2`` of Nielsen's ``network2.py`` is ``weight_decay = lambda / n`` for a training set of ``n``
    samples. Biases are not decayed. Every gradient is taken at the values before the step, and a tensor used by
    several layers (tied weights) decays once and gets the sum of its uses' updates, as autograd and
    ``torch.optim.SGD`` give it. Runs without autograd, and bumps the tensors' version counters as any in-place
    update does. Returns ``C`` before the update (without the L2 term), as a 0-d tensor. On the C++ backend the
    whole step is one op (``bp_torch::sigmoid_mlp_sgd_step``).

    Shapes: ``x: (n, n_0)``, ``y: (n, n_L)``, ``weights[l]: (n_(l+1), n_l)``, ``biases[l]: (n_(l+1),)`` or ``None``
    for a layer without a bias (or ``biases`` empty: none has one). ``lr`` and ``weight_decay``: real numbers
    ``>= 0`` (or one-element tensors). With ``cost="cross_entropy"``, ``y`` must lie in [0, 1].

    Examples::

        A one-layer network whose output starts at ``sigma(0) = 0.5``, trained towards ``y = 1``: the cost is
        ``1/2 (1 - 0.5)^2``, ``delta = (0.5 - 1) 0.5 (1 - 0.5) = -0.125``, and each weight moves by ``-lr delta x``::

        >>> w, b = torch.zeros(1, 2), torch.zeros(1)
        >>> bp_torch.functional.sgd_step(torch.ones(1, 2), torch.ones(1, 1), [w], [b], lr=1.0)
        tensor(0.1250)
        >>> w, b
        (tensor([[0.1250, 0.1250]]), tensor([0.1250]))

        The cross-entropy's error is ``a - y = -0.5`` (3.3), four times the quadratic's here::

        >>> w, b = torch.zeros(1, 2), torch.zeros(1)
        >>> bp_torch.functional.sgd_step(torch.ones(1, 2), torch.ones(1, 1), [w], [b], lr=1.0, cost="cross_entropy")
        tensor(0.6931)
        >>> w
        tensor([[0.5000, 0.5000]])
    """
    lr, weight_decay = _checks.sgd_arguments("sgd_step", x, y, weights, biases, lr, cost, weight_decay)
    cpp = _backend.use_cpp(x)
    # The op checks shapes, dtypes and devices in C++ with the Python checks' words, and runs below autograd; the
    # cross-entropy's y values are checked here, after the shapes and before any parameter changes, on both backends.
    if not cpp or cost == "cross_entropy":
        _checks.sigmoid_mlp_sgd_step(x, y, weights, biases)
        if cost == "cross_entropy":
            _checks.probabilities("sgd_step", "y", y)
    if cpp:
        return _ops.sgd_step(x, y, weights, _op_biases(weights, biases), lr, cost, weight_decay)
    with torch.no_grad():
        return sigmoid_mlp_sgd_step(x, y, weights, biases or [None] * len(weights), lr, cost, weight_decay)


def _check_epoch(x, y, weights, biases, batch_size, perm, cost):
    """sgd_epoch's checks of everything but the arguments' kinds, in the Python backend's order: the network and
    data, perm's values, then (for the cross-entropy) y's values."""
    _checks.sigmoid_mlp_sgd_epoch(x, y, weights, biases, batch_size, perm)
    if perm is not None:
        _checks.permutation("sgd_epoch", perm)
    if cost == "cross_entropy":
        _checks.probabilities("sgd_epoch", "y", y)


def sgd_epoch(
    x: Tensor,
    y: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    lr: float | Tensor,
    batch_size: int,
    perm: Tensor | None = None,
    *,
    cost: str = "quadratic",
    weight_decay: float | Tensor = 0.0,
) -> Tensor:
    r"""One epoch of Nielsen's SGD in one call: :func:`sgd_step` on every mini-batch of ``batch_size`` samples, in
    ``perm``'s order, updating the tensors in place.

    Mini-batch ``k`` is ``x[perm[k*batch_size : (k+1)*batch_size]]`` (and ``y``'s same rows), read when its step
    begins; the last one is smaller when ``batch_size`` does not divide ``n``. Each step is the one :func:`sgd_step`
    takes on that mini-batch, with the same result. ``perm=None`` takes the samples in order; a shuffled epoch passes
    ``torch.randperm(n)``. ``cost`` and ``weight_decay`` are :func:`sgd_step`'s, for every step (``weight_decay =
    lambda / n`` for Nielsen's ``lambda`` and ``n`` training samples). Returns the cost of each mini-batch before
    its update, as a 1-D tensor. On the C++
    backend the whole epoch is one op (``bp_torch::sigmoid_mlp_sgd_epoch``), which reads each mini-batch's rows by
    index: the data set is not copied. With at least two torch threads (``torch.get_num_threads()``), an epoch of
    1,024 mini-batches or more is partnered by a second thread, which gathers the next mini-batches and takes a
    share of each large product; the result is the same, bit for bit.

    Shapes: ``x: (n, n_0)``, ``y: (n, n_L)``, ``weights[l]: (n_(l+1), n_l)``, ``biases[l]: (n_(l+1),)`` or ``None``,
    ``perm: (n,)`` int64, a permutation of ``range(n)``; returns ``(ceil(n / batch_size),)``.

    Examples::

        >>> w, b = torch.zeros(1, 2), torch.zeros(1)
        >>> costs = bp_torch.functional.sgd_epoch(torch.ones(4, 2), torch.ones(4, 1), [w], [b], lr=1.0, batch_size=2)
        >>> costs.shape, costs[0]                          # two mini-batches; the first starts from sigma(0)
        (torch.Size([2]), tensor(0.1250))
    """
    lr, weight_decay = _checks.sgd_arguments("sgd_epoch", x, y, weights, biases, lr, cost, weight_decay)
    _checks.batch_size("sgd_epoch", batch_size)
    _checks.tensor("sgd_epoch", "perm", perm, optional=True)
    # A batch of n samples or more is the whole epoch in one step: the same step for any such size, and one that
    # fits the op's int64 (Python's ints do not).
    if x.dim() > 0:
        batch_size = min(batch_size, max(x.shape[0], 1))
    if _backend.use_cpp(x):
        op_biases = _op_biases(weights, biases)
        if op_biases is biases or not op_biases:
            if cost == "cross_entropy":
                # The op checks the rest, perm's values included, in C++; y's values are checked here, before any
                # parameter changes, and reported after a bad perm, as on the Python backend (which sorts perm to
                # check it: only when y is bad).
                _checks.sigmoid_mlp_sgd_epoch(x, y, weights, biases, batch_size, perm)
                try:
                    _checks.probabilities("sgd_epoch", "y", y)
                except ValueError:
                    if perm is not None:
                        _checks.permutation("sgd_epoch", perm)
                    raise
            return _ops.sgd_epoch(x, y, weights, op_biases, lr, batch_size, perm, cost, weight_decay)
        # Biases on some layers only: the op would update the stand-in zeros of the others from one step to the next.
        # The epoch is then a loop of sgd_step ops, each with its own zeros.
        _check_epoch(x, y, weights, biases, batch_size, perm, cost)
        order = torch.arange(x.shape[0], device=x.device) if perm is None else perm
        costs = [
            _ops.sgd_step(x[index], y[index], weights, _op_biases(weights, biases), lr, cost, weight_decay)
            for index in (order[start : start + batch_size] for start in range(0, x.shape[0], batch_size))
        ]
        return torch.stack(costs) if costs else x.new_empty(0)
    _check_epoch(x, y, weights, biases, batch_size, perm, cost)
    with torch.no_grad():
        return sigmoid_mlp_sgd_epoch(
            x, y, weights, biases or [None] * len(weights), lr, batch_size, perm, cost, weight_decay
        )
