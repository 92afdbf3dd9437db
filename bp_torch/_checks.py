"""Input validation shared by the Python backend and the fake (meta) kernels.

Two kinds of checks:

* what kind of thing each argument is (a tensor, a list of tensors, a real learning rate, an int batch size): these
  run here, in bp_torch.functional, for both backends alike, before any backend is chosen. The C++ ops' schemas
  would otherwise turn such a misuse into a RuntimeError that names no argument.
* shapes, dtypes and devices of the tensors: the C++ kernels in ``csrc/`` repeat these with ``TORCH_CHECK_VALUE`` /
  ``TORCH_CHECK_TYPE`` and the same messages, so that a correct call costs one dispatch; both backends raise the
  same exception type (``ValueError`` for shapes, devices and options, ``TypeError`` for dtypes) with the same
  words, which tests/test_backends_agree.py checks on drawn inputs.
"""

import math
import numbers

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64)
REDUCTIONS = ("none", "mean", "sum")
COSTS = ("quadratic", "cross_entropy")  # the costs sgd_step and sgd_epoch minimise
INITS = ("torch", "nielsen", "large")  # SigmoidLinear's and SigmoidMLP's initialisations


def _check_dtype(op, tensors):
    """Every tensor must be float32 or float64 (half types would lose the chapter's numerics) and share one dtype."""
    for name, t in tensors:
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{op}: {name} must be float32 or float64, got {t.dtype}")
    first_name, first = tensors[0]
    for name, t in tensors[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"{op}: {first_name} and {name} must have the same dtype, got {first.dtype} and {t.dtype}")
    for name, t in tensors[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{op}: {first_name} and {name} must be on the same device, got {first.device} and {t.device}"
            )


def tensor(op, name, value, optional=False):
    """``value`` must be a Tensor (or None where ``optional``)."""
    if isinstance(value, torch.Tensor) or (optional and value is None):
        return
    kind = "a Tensor or None" if optional else "a Tensor"
    raise TypeError(f"{op}: {name} must be {kind}, got {type(value).__name__}")


def tensor_list(op, name, values, optional=False):
    """``values`` must be a list or tuple of Tensors (entries may be None where ``optional``). A generator or a single
    tensor is refused rather than consumed or iterated row by row."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{op}: {name} must be a list or tuple of tensors (one per layer), got {type(values).__name__}")
    for value in values:  # a loop, not a generator: this runs on every call of an op
        if not isinstance(value, torch.Tensor) and not (optional and value is None):
            for l, value in enumerate(values):
                tensor(op, f"{name}[{l}]", value, optional)


def learning_rate(op, lr):
    """The learning rate as a float: a real number (int, float, numpy scalar) or a one-element real tensor, finite and
    not negative (torch.optim.SGD refuses a negative one too). A NaN or infinite rate would silently turn every
    parameter into NaN."""
    if type(lr) is float and 0 <= lr < math.inf:  # the common case, first: this runs once per mini-batch
        return lr
    return _nonnegative_real(op, "lr", lr)


def weight_decay(op, value):
    """The L2 weight decay (3.4) as a float, by learning_rate's rule: ``torch.optim.SGD``'s ``weight_decay``, which is
    Nielsen's ``lambda / n``. A negative one would grow the weights, a NaN turn them into NaN."""
    if type(value) is float and 0 <= value < math.inf:
        return value
    return _nonnegative_real(op, "weight_decay", value)


def _nonnegative_real(op, name, value):
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{op}: {name} must be a real number, got a {value.dtype} tensor")
        if value.numel() != 1:
            raise ValueError(f"{op}: {name} must be a single number, got a tensor of shape {list(value.shape)}")
        value = value.item()
    elif not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{op}: {name} must be a finite number >= 0, got {value}")
    return value


def cost_name(op, cost):
    """``cost`` must name one of :data:`COSTS`."""
    if not isinstance(cost, str) or cost not in COSTS:
        raise ValueError(f"{op}: cost must be one of {COSTS}, got {cost!r}")


def sgd_rule(op, cost, decay):
    """The sgd ops' cost and weight decay, as their C++ kernels check them (after the shapes)."""
    cost_name(op, cost)
    weight_decay(op, decay)


def init_name(op, init):
    """``init`` must name one of :data:`INITS`."""
    if not isinstance(init, str) or init not in INITS:
        raise ValueError(f"{op}: init must be one of {INITS}, got {init!r}")


def probabilities(op, name, t):
    """Every value of ``t`` must lie in [0, 1], as the cross-entropy's ``y`` (and ``a``) do: outside it, a log of a
    negative number makes the cost NaN. NaN itself passes, and propagates as it does in torch. The values cannot steer
    Python under a torch.func transform, so the check is skipped there; in a compiled graph it is an assertion that
    runs with the graph."""
    if torch._C._are_functorch_transforms_active() and not torch.compiler.is_compiling():
        return
    if torch.compiler.is_compiling():
        torch._assert_async(~((t < 0) | (t > 1)).any(), f"{op}: {name} must be in [0, 1]")
        return
    # One pass over t in the common case, all inside (a data set's targets are checked once per epoch); a NaN makes
    # min and max NaN, and the full pass below then looks at every value.
    if t.numel() == 0:
        return
    low, high = torch.aminmax(t)
    if low >= 0 and high <= 1:
        return
    outside = (t < 0) | (t > 1)
    if outside.any():
        value = t[outside].reshape(-1)[0].item()
        raise ValueError(f"{op}: {name} must be in [0, 1] (a probability), got {value}")


def batch_size(op, value):
    """A positive int (not a bool, which is an int to Python)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: batch_size must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{op}: batch_size must be at least 1, got {value}")


def sgd_arguments(op, x, y, weights, biases, lr, cost="quadratic", decay=0.0):
    """What sgd_step and sgd_epoch take, by kind; returns lr and the weight decay as floats."""
    tensor(op, "x", x)
    tensor(op, "y", y)
    tensor_list(op, "weights", weights)
    tensor_list(op, "biases", biases, optional=True)
    cost_name(op, cost)
    return learning_rate(op, lr), weight_decay(op, decay)


def sigmoid_linear(x, weight, bias):
    op = "sigmoid_linear"
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got shape {list(weight.shape)}")
    if x.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension (*, in_features), got a 0-d tensor")
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{op}: input's last dimension must equal in_features={weight.shape[1]}, "
            f"got input shape {list(x.shape)} and weight shape {list(weight.shape)}"
        )
    tensors = [("input", x), ("weight", weight)]
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"{op}: bias must have shape [{weight.shape[0]}] (out_features), got shape {list(bias.shape)}"
            )
        tensors.append(("bias", bias))
    _check_dtype(op, tensors)


def quadratic_cost(a, y, reduction, op="quadratic_cost"):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if a.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension (*, n_outputs), got a 0-d tensor")
    if a.shape != y.shape:
        raise ValueError(
            f"{op}: input and target must have the same shape, "
            f"got input shape {list(a.shape)} and target shape {list(y.shape)}"
        )
    _check_dtype(op, [("input", a), ("target", y)])


def sigmoid_linear_backward(grad_a, x, weight, a):
    """The checks of the C++ op ``bp_torch::sigmoid_linear_backward``, for its fake kernel."""
    sigmoid_linear(x, weight, None)
    out_shape = [*x.shape[:-1], weight.shape[0]]
    if list(a.shape) != out_shape or grad_a.shape != a.shape:
        raise ValueError(
            f"sigmoid_linear_backward: grad_a and a must have shape {out_shape}, "
            f"got {list(grad_a.shape)} and {list(a.shape)}"
        )
    if grad_a.dtype != x.dtype or a.dtype != x.dtype:
        raise TypeError("sigmoid_linear_backward: grad_a and a must have the input's dtype")


def cross_entropy_cost(a, y, reduction):
    """quadratic_cost's checks, then ``a`` and ``y`` in [0, 1]."""
    op = "cross_entropy_cost"
    quadratic_cost(a, y, reduction, op)
    probabilities(op, "input", a)
    probabilities(op, "target", y)


def quadratic_cost_backward(grad_cost, a, y, reduction, op="quadratic_cost"):
    """The checks of the C++ op ``bp_torch::quadratic_cost_backward`` (or ``op``'s backward, a cost that takes the
    same arguments), for its fake kernel."""
    quadratic_cost(a, y, reduction, op)
    expected = list(a.shape[:-1]) if reduction == "none" else []
    if list(grad_cost.shape) != expected:
        raise ValueError(f"{op}_backward: grad_cost must have shape {expected}, got {list(grad_cost.shape)}")
    if grad_cost.dtype != a.dtype:
        raise TypeError(f"{op}_backward: grad_cost must have the input's dtype")


def two_layer_quadratic_cost(x, w1, b1, w2, b2, y):
    sigmoid_linear(x, w1, b1)
    if w2.dim() != 2 or w2.shape[1] != w1.shape[0]:
        raise ValueError(
            f"two_layer_quadratic_cost: w2 must have shape [n2, {w1.shape[0]}] to follow w1 of shape "
            f"{list(w1.shape)}, got {list(w2.shape)}"
        )
    sigmoid_linear(x.new_empty(w1.shape[0]), w2, b2)
    expected_y = [*x.shape[:-1], w2.shape[0]]
    if list(y.shape) != expected_y:
        raise ValueError(f"two_layer_quadratic_cost: y must have shape {expected_y}, got {list(y.shape)}")
    _check_dtype("two_layer_quadratic_cost", [("x", x), ("y", y)])


def _sigmoid_mlp_layer_count(op, weights, biases):
    if len(weights) == 0:
        raise ValueError(f"{op}: weights must have at least one entry (one per layer), got none")
    if len(biases) not in (0, len(weights)):
        raise ValueError(
            f"{op}: biases must be empty (no bias) or have one entry per layer ({len(weights)}), got {len(biases)}"
        )


def _bias(biases, l):
    """Layer l's bias, or None: ``biases`` is empty (no layer has one) or has one entry per layer, None for a layer
    without a bias."""
    return biases[l] if biases else None


def _check_chain(op, l, n_in, weight):
    """Layer l's in_features must be the width of what feeds it: the input for l = 0, else layer l-1's output."""
    if weight.shape[1] != n_in:
        source = "the input's last dimension" if l == 0 else "the previous layer's out_features"
        raise ValueError(f"{op}: weights[{l}] must have in_features={n_in} ({source}), got shape {list(weight.shape)}")


def sigmoid_mlp(x, weights, biases, op="sigmoid_mlp"):
    """A whole network: ``weights[l]: (n_(l+1), n_l)`` chained from ``x: (*, n_0)``; ``biases`` empty (no bias) or
    one ``(n_(l+1),)`` per layer; one dtype (float32 or float64) and one device for all."""
    _sigmoid_mlp_layer_count(op, weights, biases)
    if x.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension (*, in_features), got a 0-d tensor")
    n_in = x.shape[-1]
    tensors = [("input", x)]
    for l, weight in enumerate(weights):
        if weight.dim() != 2:
            raise ValueError(
                f"{op}: weights[{l}] must be 2-D (out_features, in_features), got shape {list(weight.shape)}"
            )
        _check_chain(op, l, n_in, weight)
        tensors.append((f"weights[{l}]", weight))
        if _bias(biases, l) is not None:
            if biases[l].dim() != 1 or biases[l].shape[0] != weight.shape[0]:
                raise ValueError(
                    f"{op}: biases[{l}] must have shape [{weight.shape[0]}] (out_features), "
                    f"got shape {list(biases[l].shape)}"
                )
            tensors.append((f"biases[{l}]", biases[l]))
        n_in = weight.shape[0]
    _check_dtype(op, tensors)


def sigmoid_mlp_sgd_step(x, y, weights, biases, op="sgd_step"):
    """``biases``: empty (no bias) or one per layer, as the op takes them (see bp_torch.functional.sgd_step)."""
    _sigmoid_mlp_layer_count(op, weights, biases)
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be 2-D (batch, {weights[0].shape[1]}), got shape {list(x.shape)}")
    for l, weight in enumerate(weights):
        sigmoid_linear(x.new_empty(weight.shape[-1]), weight, _bias(biases, l))
        if l > 0:
            _check_chain(op, l, weights[l - 1].shape[0], weight)
    for name, parameters in (("weights", weights), ("biases", biases)):
        for l, p in enumerate(parameters):
            if p is not None and any(stride == 0 and size > 1 for size, stride in zip(p.shape, p.stride())):
                raise ValueError(
                    f"{op}: {name}[{l}] has elements that share memory (an expanded tensor), "
                    f"which an in-place update cannot change one by one"
                )
    if x.shape[1] != weights[0].shape[1]:
        raise ValueError(f"{op}: x must have shape [batch, {weights[0].shape[1]}], got {list(x.shape)}")
    expected_y = [x.shape[0], weights[-1].shape[0]]
    if list(y.shape) != expected_y:
        raise ValueError(
            f"{op}: y must have shape {expected_y} to match x of shape {list(x.shape)}, got {list(y.shape)}"
        )
    _check_dtype(op, [("x", x), ("y", y), ("weight", weights[0])])


def sigmoid_mlp_sgd_epoch(x, y, weights, biases, batch_size, perm):
    """sgd_step's checks of the network and data, then ``batch_size >= 1`` and ``perm``: ``None`` or one int64
    index per sample, on x's device. Not its values (fake tensors have none): see :func:`permutation`."""
    op = "sgd_epoch"
    sigmoid_mlp_sgd_step(x, y, weights, biases, op)
    if batch_size < 1:
        raise ValueError(f"{op}: batch_size must be at least 1, got {batch_size}")
    if perm is None:
        return
    if perm.dtype != torch.int64:
        raise TypeError(f"{op}: perm must be a torch.int64 tensor, got {perm.dtype}")
    n = x.shape[0]
    if perm.dim() != 1 or perm.shape[0] != n:
        raise ValueError(f"{op}: perm must have shape [{n}] (one index per sample of x), got {list(perm.shape)}")
    if perm.device != x.device:
        raise ValueError(f"{op}: x and perm must be on the same device, got {x.device} and {perm.device}")


def permutation(op, perm):
    """``perm`` must hold each of ``0 .. n-1`` once. Reports the first position that breaks this, with an index out
    of range or a repeat of an earlier one, as the C++ check finds it in one pass."""
    n = perm.shape[0]
    if torch.compiler.is_compiling():
        # In a compiled graph the message cannot depend on the values (that would be data-dependent control flow):
        # the graph checks them with an assertion that runs with it.
        is_permutation = (torch.sort(perm).values == torch.arange(n, device=perm.device)).all()
        torch._assert_async(is_permutation, f"{op}: perm must be a permutation of range({n})")
        return
    in_range = (perm >= 0) & (perm < n)
    # A stable sort keeps equal indices in their order of position: each after the first of its value repeats it.
    values, positions = torch.sort(perm, stable=True)
    repeat = torch.zeros(n, dtype=torch.bool, device=perm.device)
    repeat[positions[1:][values[1:] == values[:-1]]] = True
    bad = (~in_range | repeat).nonzero()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{op}: perm must be a permutation of range({n}), got perm[{i}] = {int(perm[i])}"
            f"{', a repeat' if in_range[i] else ''}"
        )
