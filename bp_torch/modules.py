"""Drop-in ``nn.Module`` s built on :mod:`bp_torch.functional`."""
import torch
from torch import nn

from . import _backend, _checks
from . import functional as F


class SigmoidLinear(nn.Module):
    r"""Applies ``a = sigmoid(x W^T + b)``: ``nn.Linear`` followed by ``nn.Sigmoid``, as one layer whose backward is
    the chapter's equations (see :func:`bp_torch.functional.sigmoid_linear`).

    A drop-in for ``nn.Sequential(nn.Linear(in_features, out_features, bias), nn.Sigmoid())``: the same parameter
    names, shapes and default initialisation as ``nn.Linear``, so a ``state_dict`` moves between the two.

    Args:
        in_features: size of each input sample
        out_features: size of each output sample
        bias: if ``False``, the layer learns no additive bias. Default: ``True``

    Shape:
        - Input: :math:`(*, H_{in})` where :math:`*` is any number of dimensions, including none, and
          :math:`H_{in} = \text{in\_features}`.
        - Output: :math:`(*, H_{out})`, all values in :math:`[0, 1]`, where :math:`H_{out} = \text{out\_features}`.

    Attributes:
        weight: the learnable weights of shape :math:`(\text{out\_features}, \text{in\_features})`, initialised
            from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = \frac{1}{\text{in\_features}}`, as ``nn.Linear``
        bias: the learnable bias of shape :math:`(\text{out\_features})`, initialised like the weights

    Examples::

        >>> layer = bp_torch.SigmoidLinear(20, 30)
        >>> layer(torch.randn(128, 20)).shape
        torch.Size([128, 30])
        >>> plain = nn.Linear(20, 30)
        >>> plain.load_state_dict(layer.state_dict())
        <All keys matched successfully>
    """

    __constants__ = ["in_features", "out_features"]

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Linear's own initialisation, so both layers draw the same numbers from the same seed."""
        nn.Linear.reset_parameters(self)

    def forward(self, input):
        return F.sigmoid_linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuadraticCost(nn.Module):
    r"""The chapter's quadratic cost, ``C = 1/2 sum_j (y_j - a_j)^2`` per sample, with the interface of
    ``nn.MSELoss`` (see :func:`bp_torch.functional.quadratic_cost`).

    Args:
        reduction: ``"mean"`` (default, Nielsen's ``1/2n sum_x ||y(x) - a(x)||^2``), ``"sum"`` or ``"none"``.

    Shape:
        - Input: :math:`(*, n)`; Target: :math:`(*, n)`, the same shape.
        - Output: a scalar, or :math:`(*)` with ``reduction="none"``.

    Note that, unlike ``nn.MSELoss``, the cost sums over the last dimension (the outputs of one sample) and halves
    it, as the chapter does: ``QuadraticCost()(a, y) == 0.5 * n * nn.MSELoss()(a, y)`` for ``n`` outputs.

    Examples::

        >>> cost = bp_torch.QuadraticCost()
        >>> cost(torch.tensor([[0.2, 0.9]]), torch.tensor([[0.0, 1.0]]))
        tensor(0.0250)
    """

    __constants__ = ["reduction"]

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in _checks.REDUCTIONS:
            raise ValueError(f"QuadraticCost: reduction must be one of {_checks.REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, input, target):
        return F.quadratic_cost(input, target, self.reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class SigmoidMLP(nn.Sequential):
    r"""Nielsen's ``Network(sizes)`` as a module: a chain of :class:`SigmoidLinear` layers,
    ``a^l = sigma(w^l a^(l-1) + b^l)`` for ``l = 1 .. L``.

    Args:
        sizes: the number of neurons in each layer, input first, e.g. ``[784, 30, 10]``; at least 2 entries.
        bias: whether each layer has a bias. Default: ``True``

    Shape:
        - Input: :math:`(*, \text{sizes}[0])`; Output: :math:`(*, \text{sizes}[-1])`.

    Its ``state_dict`` keys are ``"0.weight"``, ``"0.bias"``, ``"1.weight"``, ..., as an ``nn.Sequential`` of
    ``SigmoidLinear`` s, and it indexes like one.

    Examples::

        >>> net = bp_torch.SigmoidMLP([784, 30, 10])
        >>> net(torch.rand(10, 784)).shape
        torch.Size([10, 10])
        >>> list(net.state_dict())
        ['0.weight', '0.bias', '1.weight', '1.bias']
    """

    def __init__(self, sizes, bias=True, device=None, dtype=None):
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"SigmoidMLP: sizes must have at least 2 entries (input and output), got {sizes}")
        if not all(isinstance(n, int) and n > 0 for n in sizes):
            raise ValueError(f"SigmoidMLP: sizes must be positive integers, got {sizes}")
        super().__init__(*(SigmoidLinear(n_in, n_out, bias=bias, device=device, dtype=dtype)
                           for n_in, n_out in zip(sizes[:-1], sizes[1:])))
        self.sizes = sizes

    def _parameter_lists(self):
        """``([W^1 .. W^L], [b^1 .. b^L])``, the biases list empty without biases: what the fused ops take.

        Read on each call rather than cached, because the parameters a layer holds can change under us
        (``torch.func.functional_call`` swaps them), but from the layers' ``_parameters`` dicts, where
        ``nn.Module.__getattr__`` would look them up too: ``layer.weight`` costs about 4x as much, and ``sgd_step``
        runs once per mini-batch. A parametrized layer (``nn.utils.parametrize``) computes its weight instead.
        """
        weights, biases = [], []
        try:
            for layer in self._modules.values():       # one loop: each comprehension would be a call of its own
                params = layer._parameters
                weights.append(params["weight"])
                biases.append(params["bias"])
        except KeyError:
            weights = [layer.weight for layer in self]
            biases = [layer.bias for layer in self]
        return weights, (biases if biases[0] is not None else [])

    def forward(self, input):
        """On the C++ backend, the whole network is one op and one autograd node (see
        :func:`bp_torch.functional.sigmoid_mlp`), so forward hooks of the individual layers do not run; on the
        Python backend, and under torch.func transforms, it is the chain of layers, as an ``nn.Sequential``."""
        if _backend.use_cpp(input):
            return F._sigmoid_mlp_op(input, *self._parameter_lists())[-1]
        return super().forward(input)

    def sgd_step(self, x, y, lr):
        """One step of Nielsen's ``update_mini_batch`` on this network's own parameters, in place, without
        autograd: see :func:`bp_torch.functional.sgd_step`. Returns the mini-batch's cost before the update.
        On the C++ backend the whole step is a single op call.

        Shapes: ``x: (n, sizes[0])``, ``y: (n, sizes[-1])``.
        """
        weights, biases = self._parameter_lists()
        return F._sgd_step(x, y, weights, biases, lr)

    def sgd_epoch(self, x, y, lr, batch_size, shuffle=True, generator=None):
        """One epoch of Nielsen's SGD on this network's own parameters, in place, without autograd: mini-batches of
        ``batch_size`` samples (the last one partial), in the order of ``torch.randperm(n, generator=generator)``
        when ``shuffle``, else in order. See :func:`bp_torch.functional.sgd_epoch`; on the C++ backend the whole
        epoch is a single op call. Returns each mini-batch's cost before its update, as a 1-D tensor.

        Shapes: ``x: (n, sizes[0])``, ``y: (n, sizes[-1])``; returns ``(ceil(n / batch_size),)``.
        """
        # A 0-d x has no samples to shuffle: the checks then say what x must be, rather than x.shape[0] failing.
        n = x.shape[0] if x.dim() > 0 else 0
        perm = torch.randperm(n, generator=generator, device=x.device) if shuffle else None
        return F._sgd_epoch(x, y, *self._parameter_lists(), lr, batch_size, perm)
