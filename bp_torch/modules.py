"""Drop-in ``nn.Module`` s built on :mod:`bp_torch.functional`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NoReturn, cast

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize

from . import _checks
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
        init: the initial weights, drawn from torch's random generator (``torch.manual_seed`` makes them
            reproducible): ``"torch"`` (default), ``nn.Linear``'s, the same numbers as ``nn.Linear`` from the same
            seed; ``"nielsen"``, ``network2.py``'s ``default_weight_initializer`` (3.5), weights from
            :math:`\mathcal{N}(0, 1/\text{in\_features})` and biases from :math:`\mathcal{N}(0, 1)`, so that
            ``z`` starts with a standard deviation near 1 rather than :math:`\sqrt{\text{in\_features}}` and the
            hidden units start unsaturated; ``"large"``, ``network.py``'s (``large_weight_initializer``),
            :math:`\mathcal{N}(0, 1)` for both. Each draws the weight, then the bias.

    Shape:
        - Input: :math:`(*, H_{in})` where :math:`*` is any number of dimensions, including none, and
          :math:`H_{in} = \text{in\_features}`.
        - Output: :math:`(*, H_{out})`, all values in :math:`[0, 1]`, where :math:`H_{out} = \text{out\_features}`.

    Attributes:
        weight: the learnable weights of shape :math:`(\text{out\_features}, \text{in\_features})`, initialised
            from :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = \frac{1}{\text{in\_features}}`, as ``nn.Linear``
            (with ``init="torch"``; see ``init``)
        bias: the learnable bias of shape :math:`(\text{out\_features})`, initialised like the weights
        init: the name of the initialisation, used by :meth:`reset_parameters`

    Examples::

        >>> layer = bp_torch.SigmoidLinear(20, 30)
        >>> layer(torch.randn(128, 20)).shape
        torch.Size([128, 30])
        >>> plain = nn.Linear(20, 30)
        >>> plain.load_state_dict(layer.state_dict())
        <All keys matched successfully>
    """

    __constants__ = ["in_features", "out_features"]
    init: str = "torch"  # what a layer pickled before it had an ``init`` was initialised by

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        init: str = "torch",
    ) -> None:
        super().__init__()
        _checks.init_name("SigmoidLinear", init)
        self.init = init
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty((out_features, in_features), device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the initial weights and bias by ``self.init`` (see the class's ``init``). ``"torch"`` is nn.Linear's
        own initialisation, so both layers draw the same numbers from the same seed."""
        if self.init == "torch":
            nn.Linear.reset_parameters(cast(nn.Linear, self))  # it reads weight, bias and in_features only
            return
        # (3.5) "nielsen": w ~ N(0, 1/n_in), so z = w a + b has a variance near 1 for inputs of size ~1; "large":
        # w ~ N(0, 1). A layer with no inputs has no weights to draw.
        std = 1 / math.sqrt(max(self.in_features, 1)) if self.init == "nielsen" else 1.0
        with torch.no_grad():
            self.weight.normal_(0.0, std)
            if self.bias is not None:
                self.bias.normal_(0.0, 1.0)  # b ~ N(0, 1), for both

    def forward(self, input: Tensor) -> Tensor:
        """``sigmoid(input @ weight.T + bias)``: :func:`bp_torch.functional.sigmoid_linear` on this layer's parameters.
        Shapes: ``(*, in_features) -> (*, out_features)``."""
        return F.sigmoid_linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        init = "" if self.init == "torch" else f", init={self.init!r}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{init}"


class _Cost(nn.Module):
    """What the cost modules share: the ``reduction`` argument, checked at construction, and its repr."""

    __constants__ = ["reduction"]

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _checks.REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_checks.REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class QuadraticCost(_Cost):
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

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The cost of ``input`` (the network's output ``a``) against ``target`` (``y``): see
        :func:`bp_torch.functional.quadratic_cost`."""
        return F.quadratic_cost(input, target, self.reduction)


class CrossEntropyCost(_Cost):
    r"""The cross-entropy cost of Nielsen's chapter 3, ``C = -sum_j [y_j ln a_j + (1 - y_j) ln(1 - a_j)]`` per
    sample (3.1), with the interface of ``nn.BCELoss`` (see :func:`bp_torch.functional.cross_entropy_cost`).

    Its backward is ``dC/da = (a - y) / (a (1 - a))`` (3.2): after a sigmoid output the ``sigma'(z) = a (1 - a)``
    cancels, so ``delta^L = a - y`` (3.3) and a saturated wrong output still learns fast, where the quadratic cost's
    ``(a - y) sigma'(z)`` nearly stops. :meth:`SigmoidMLP.sgd_step` with ``cost="cross_entropy"`` uses ``a - y``
    directly.

    Args:
        reduction: ``"mean"`` (default, Nielsen's ``-1/n sum_x sum_j [...]``), ``"sum"`` or ``"none"``.

    Shape:
        - Input: :math:`(*, n)`, values in [0, 1]; Target: :math:`(*, n)`, the same shape, values in [0, 1].
        - Output: a scalar, or :math:`(*)` with ``reduction="none"``.

    Unlike ``nn.BCELoss``, which averages over every element, the cost sums over the last dimension (the outputs of
    one sample), as Nielsen does: ``CrossEntropyCost()(a, y) == n * nn.BCELoss()(a, y)`` for ``n`` outputs.

    Examples::

        >>> cost = bp_torch.CrossEntropyCost()
        >>> cost(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.0, 1.0]]))
        tensor(1.3863)
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The cost of ``input`` (the network's output ``a``) against ``target`` (``y``): see
        :func:`bp_torch.functional.cross_entropy_cost`."""
        return F.cross_entropy_cost(input, target, self.reduction)


# The cost modules by the names that sgd_step's ``cost`` takes.
COST_MODULES: dict[str, type[QuadraticCost] | type[CrossEntropyCost]] = {
    "quadratic": QuadraticCost,
    "cross_entropy": CrossEntropyCost,
}


def _has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks of its own, which a fused op in its place would skip."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


class SigmoidMLP(nn.Sequential):
    r"""Nielsen's ``Network(sizes)`` as a module: a chain of :class:`SigmoidLinear` layers,
    ``a^l = sigma(w^l a^(l-1) + b^l)`` for ``l = 1 .. L``.

    Args:
        sizes: the number of neurons in each layer, input first, e.g. ``[784, 30, 10]``; at least 2 entries.
        bias: whether each layer has a bias. Default: ``True``
        init: each layer's initialisation, ``"torch"`` (default), ``"nielsen"`` or ``"large"``: see
            :class:`SigmoidLinear`. Layer by layer, each draws its weight, then its bias, so
            ``torch.manual_seed(s)`` before the constructor makes the network reproducible.

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

    def __init__(
        self,
        sizes: Iterable[int],
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        init: str = "torch",
    ) -> None:
        _checks.init_name("SigmoidMLP", init)
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(f"SigmoidMLP: sizes must have at least 2 entries (input and output), got {sizes}")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            raise ValueError(f"SigmoidMLP: sizes must be non-negative integers, got {sizes}")
        super().__init__(
            *(
                SigmoidLinear(n_in, n_out, bias=bias, device=device, dtype=dtype, init=init)
                for n_in, n_out in zip(sizes[:-1], sizes[1:])
            )
        )
        self.sizes = sizes

    def _fused_parameters(self) -> tuple[list[Tensor], list[Tensor | None]] | None:
        """``([W^1 .. W^L], [b^1 .. b^L])`` if the fused op computes exactly what running the layers one by one
        computes, else None.

        It does when every child is exactly a :class:`SigmoidLinear` (not a subclass, which may override
        ``forward``; not a parametrized layer, whose class is a subclass; not another module appended to the
        ``nn.Sequential``) and no hook would run on a child (module hooks, global hooks, spectral_norm's pre-hook).
        Read on each call, since all of this can change between calls, and from the layers' ``_parameters`` dicts,
        where ``nn.Module.__getattr__`` would look too, at a quarter of its cost. A bias is None for a layer
        without one.
        """
        if (
            _module._global_forward_hooks
            or _module._global_forward_pre_hooks
            or _module._global_backward_hooks
            or _module._global_backward_pre_hooks
        ):
            return None
        weights: list[Tensor] = []
        biases: list[Tensor | None] = []
        for layer in self._modules.values():  # one loop: each comprehension would be a call of its own
            if type(layer) is not SigmoidLinear or _has_hooks(layer):
                return None
            params = layer._parameters
            weight = params["weight"] if "weight" in params else layer.weight  # noqa: SIM401 - get() would look up
            # layer.weight every time
            if weight is None:
                return None
            weights.append(weight)
            biases.append(params["bias"] if "bias" in params else layer.bias)  # noqa: SIM401
        return (weights, biases) if weights else None

    def forward(self, input: Tensor) -> Tensor:
        """When the network is exactly a chain of plain :class:`SigmoidLinear` layers with no hooks (see
        ``_fused_parameters``), :func:`bp_torch.functional.sigmoid_mlp`: on the C++ backend one op and one autograd
        node for the whole network. Otherwise the chain of its modules, exactly as an ``nn.Sequential`` runs
        them."""
        fused = self._fused_parameters()
        if fused is not None:
            return F.sigmoid_mlp(input, *fused)
        return super().forward(input)

    def to_sequential(self) -> nn.Sequential:
        """This network in plain torch, for a checkpoint that loads without bp_torch: ``nn.Sequential(nn.Linear,
        nn.Sigmoid, nn.Linear, nn.Sigmoid, ...)`` holding copies of the parameters, on their device and dtype.
        Its ``state_dict`` keys are ``"0.weight"``, ``"0.bias"``, ``"2.weight"``, ...: layer ``l``'s
        ``nn.Linear`` is module ``2 l``. A child that is not a :class:`SigmoidLinear` is refused with a
        ``ValueError`` naming it.

        Examples::

            >>> net = bp_torch.SigmoidMLP([784, 30, 10])
            >>> torch.save(net.to_sequential().state_dict(), "net.pt")     # loads into plain nn.Linear + nn.Sigmoid
        """
        modules: list[nn.Module] = []
        for name, layer in self._modules.items():
            if not isinstance(layer, SigmoidLinear) or type(layer).forward is not SigmoidLinear.forward:
                raise ValueError(f"to_sequential: layer {name} ({type(layer).__name__}) is not a SigmoidLinear")
            weight = layer.weight.detach()
            linear = nn.Linear(
                layer.in_features,
                layer.out_features,
                bias=layer.bias is not None,
                device=weight.device,
                dtype=weight.dtype,
            )
            with torch.no_grad():
                linear.weight.copy_(weight)
                if layer.bias is not None:
                    linear.bias.copy_(layer.bias)
            modules += [linear, nn.Sigmoid()]
        return nn.Sequential(*modules)

    def _sgd_parameters(self, op: str) -> tuple[list[Tensor], list[Tensor | None]]:
        """``([W^1 .. W^L], [b^1 .. b^L])`` for sgd_step and sgd_epoch, which update them in place: only where that
        step is exactly autograd + ``torch.optim.SGD`` on this network. Anything else is refused with the layer
        and the reason (see ``_refuse``), rather than a parameter being skipped or a module being treated as a
        sigmoid layer."""
        weights: list[Tensor] = []
        biases: list[Tensor | None] = []
        for layer in self._modules.values():  # runs once per mini-batch: the checks first, messages on failure
            params = layer._parameters
            weight, bias = params.get("weight"), params.get("bias")
            if (
                type(layer) is not SigmoidLinear
                or _has_hooks(layer)
                or weight is None
                or not weight.requires_grad
                or (bias is not None and not bias.requires_grad)
            ):
                self._refuse(op)
            weights.append(weight)
            biases.append(bias)
        if not weights:
            raise ValueError(f"{op}: the network has no layers")
        return weights, biases

    def _refuse(self, op: str) -> NoReturn:
        """Raises the ValueError that says which layer sgd_step or sgd_epoch cannot update exactly, and why."""
        for name, layer in self._modules.items():
            where = f"{op}: layer {name} ({type(layer).__name__})"
            if type(layer) is not SigmoidLinear:
                if isinstance(layer, SigmoidLinear) and parametrize.is_parametrized(layer):
                    raise ValueError(
                        f"{where} is parametrized (torch.nn.utils.parametrize): {op} updates tensors "
                        "in place and cannot update a computed weight; train it with autograd and "
                        "torch.optim"
                    )
                raise ValueError(
                    f"{where} is not a SigmoidLinear: {op} computes chains of SigmoidLinear layers "
                    "only; train this network with autograd and torch.optim"
                )
            if _has_hooks(layer):
                raise ValueError(f"{where} has hooks, which {op} would not run; train it with autograd and torch.optim")
            for kind in ("weight", "bias"):
                param = layer._parameters.get(kind)
                if param is None and kind == "weight":
                    raise ValueError(f"{where} has no weight parameter")
                if param is not None and not param.requires_grad:
                    raise ValueError(
                        f"{where}: its {kind} does not require grad (a frozen parameter), which "
                        f"torch.optim would leave unchanged and {op} would update"
                    )
        raise AssertionError("_refuse found nothing to refuse")

    def sgd_step(
        self, x: Tensor, y: Tensor, lr: float | Tensor, *, cost: str = "quadratic", weight_decay: float | Tensor = 0.0
    ) -> Tensor:
        """One step of Nielsen's ``update_mini_batch`` on this network's own parameters, in place, without
        autograd: see :func:`bp_torch.functional.sgd_step`. ``cost``: ``"quadratic"`` or ``"cross_entropy"``;
        ``weight_decay``: ``torch.optim.SGD``'s, Nielsen's ``lambda / n`` (the weights decay, the biases do not).
        Returns the mini-batch's cost before the update.
        On the C++ backend the whole step is a single op call. A network that is not a chain of plain
        :class:`SigmoidLinear` layers (another module appended, a parametrized or hooked layer, a frozen parameter)
        is refused with a ``ValueError`` that names the layer.

        Shapes: ``x: (n, sizes[0])``, ``y: (n, sizes[-1])``.
        """
        return F.sgd_step(x, y, *self._sgd_parameters("sgd_step"), lr, cost=cost, weight_decay=weight_decay)

    def sgd_epoch(
        self,
        x: Tensor,
        y: Tensor,
        lr: float | Tensor,
        batch_size: int,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        *,
        cost: str = "quadratic",
        weight_decay: float | Tensor = 0.0,
    ) -> Tensor:
        """One epoch of Nielsen's SGD on this network's own parameters, in place, without autograd: mini-batches of
        ``batch_size`` samples (the last one partial), in the order of ``torch.randperm(n, generator=generator)``
        when ``shuffle``, else in order, each step with :meth:`sgd_step`'s ``cost`` and ``weight_decay``. See
        :func:`bp_torch.functional.sgd_epoch`; on the C++ backend the whole
        epoch is a single op call. Returns each mini-batch's cost before its update, as a 1-D tensor. Refuses the
        networks that :meth:`sgd_step` refuses.

        Shapes: ``x: (n, sizes[0])``, ``y: (n, sizes[-1])``; returns ``(ceil(n / batch_size),)``.
        """
        weights, biases = self._sgd_parameters("sgd_epoch")
        _checks.tensor("sgd_epoch", "x", x)
        # A 0-d x has no samples to shuffle: the checks then say what x must be, rather than x.shape[0] failing.
        n = x.shape[0] if x.dim() > 0 else 0
        perm = torch.randperm(n, generator=generator, device=x.device) if shuffle else None
        return F.sgd_epoch(x, y, weights, biases, lr, batch_size, perm, cost=cost, weight_decay=weight_decay)
