"""The C++ ops, in one place: loading ``bp_torch._C``, the op handles that :mod:`bp_torch.functional` calls, their
fake kernels, the backward ops' differentiable twins and their autocast declarations (the layout of
pytorch/extension-cpp's ``ops.py``).

Loading the library registers ``torch.ops.bp_torch.*``: the schemas and CPU kernels (``csrc/ops.cpp``,
``csrc/cpu/``) and the C++ ``torch::autograd::Function`` s under the Autograd key (``csrc/autograd.cpp``). Their
backward runs the fused backward op; with ``create_graph=True`` it runs the op's differentiable twin implemented
here, which is :mod:`bp_torch.autograd`'s formula. Without the extension every handle here is None and
:mod:`bp_torch._backend` offers the Python backend only.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType
from typing import Any

import torch

from . import _checks, autograd


def _extension_expected() -> bool:
    """Whether this installation should have bp_torch._C: not when BP_TORCH_NO_EXT=1 is set now, nor when it was
    set at build time (setup.py writes bp_torch/_build_info.py)."""
    if os.environ.get("BP_TORCH_NO_EXT") == "1":
        return False
    try:
        from . import _build_info
    except ImportError:  # a tree that setup.py never ran in
        return True
    return bool(_build_info.EXTENSION)


_C: ModuleType | None
try:
    _C = importlib.import_module("bp_torch._C")  # loading the library registers torch.ops.bp_torch.*
except ModuleNotFoundError as err:
    _C = None
    if _extension_expected():  # not built, or its build was lost: say so, once (module code runs once)
        warnings.warn(
            f"bp_torch: the C++ extension is missing ({err}); using the Python backend. Reinstall "
            "bp_torch to build it (pip install --no-build-isolation .), or set BP_TORCH_NO_EXT=1 for "
            "a pure-Python install",
            RuntimeWarning,
            stacklevel=2,
        )
except ImportError as err:  # built, but cannot load (an ABI mismatch, say): worth one warning
    _C = None
    warnings.warn(
        f"bp_torch: the C++ extension failed to load ({err}); using the Python backend", RuntimeWarning, stacklevel=2
    )

# The ops' overloads, looked up once: the ops run once per layer or network per mini-batch, where attribute lookups
# per call show.
sigmoid_linear: Any = None
quadratic_cost: Any = None
cross_entropy_cost: Any = None
sigmoid_mlp: Any = None
sgd_step: Any = None
sgd_epoch: Any = None
if _C is not None:
    sigmoid_linear = torch.ops.bp_torch.sigmoid_linear.default
    quadratic_cost = torch.ops.bp_torch.quadratic_cost.default
    cross_entropy_cost = torch.ops.bp_torch.cross_entropy_cost.default
    sigmoid_mlp = torch.ops.bp_torch.sigmoid_mlp.default
    sgd_step = torch.ops.bp_torch.sigmoid_mlp_sgd_step.default
    sgd_epoch = torch.ops.bp_torch.sigmoid_mlp_sgd_epoch.default

    # The fake kernels give torch.compile (and other tracers) each op's output shapes without running it, so the
    # ops trace with no graph break. They validate like the real kernels, so errors are the same when tracing.

    @torch.library.register_fake("bp_torch::sigmoid_linear")
    def _sigmoid_linear_fake(x, weight, bias):
        _checks.sigmoid_linear(x, weight, bias)
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    @torch.library.register_fake("bp_torch::sigmoid_linear_backward")
    def _sigmoid_linear_backward_fake(grad_a, x, weight, a, output_mask):
        _checks.sigmoid_linear_backward(grad_a, x, weight, a)
        return (
            x.new_empty(x.shape) if output_mask[0] else None,
            weight.new_empty(weight.shape) if output_mask[1] else None,
            weight.new_empty(weight.shape[0]) if output_mask[2] else None,
        )

    @torch.library.register_fake("bp_torch::quadratic_cost")
    def _quadratic_cost_fake(a, y, reduction):
        _checks.quadratic_cost(a, y, reduction)
        return a.new_empty(a.shape[:-1] if reduction == "none" else ())

    @torch.library.register_fake("bp_torch::quadratic_cost_backward")
    def _quadratic_cost_backward_fake(grad_cost, a, y, reduction, output_mask):
        _checks.quadratic_cost_backward(grad_cost, a, y, reduction)
        return (a.new_empty(a.shape) if output_mask[0] else None, a.new_empty(a.shape) if output_mask[1] else None)

    @torch.library.register_fake("bp_torch::cross_entropy_cost")
    def _cross_entropy_cost_fake(a, y, reduction):
        _checks.quadratic_cost(a, y, reduction, "cross_entropy_cost")
        return a.new_empty(a.shape[:-1] if reduction == "none" else ())

    @torch.library.register_fake("bp_torch::cross_entropy_cost_backward")
    def _cross_entropy_cost_backward_fake(grad_cost, a, y, reduction, output_mask):
        _checks.quadratic_cost_backward(grad_cost, a, y, reduction, "cross_entropy_cost")
        return (a.new_empty(a.shape) if output_mask[0] else None, a.new_empty(a.shape) if output_mask[1] else None)

    @torch.library.register_fake("bp_torch::sigmoid_mlp")
    def _sigmoid_mlp_fake(x, weights, biases):
        _checks.sigmoid_mlp(x, weights, biases)
        return [x.new_empty((*x.shape[:-1], weight.shape[0])) for weight in weights]

    @torch.library.register_fake("bp_torch::sigmoid_mlp_backward")
    def _sigmoid_mlp_backward_fake(grad_output, x, weights, activations, input_grad, bias_grad):
        return (
            x.new_empty(x.shape) if input_grad else None,
            [weight.new_empty(weight.shape) for weight in weights],
            [weight.new_empty(weight.shape[0]) for weight in weights] if bias_grad else [],
        )

    @torch.library.register_fake("bp_torch::sigmoid_mlp_sgd_step")
    def _sigmoid_mlp_sgd_step_fake(x, y, weights, biases, lr, cost="quadratic", weight_decay=0.0):
        _checks.sigmoid_mlp_sgd_step(x, y, weights, biases)
        _checks.sgd_rule("sgd_step", cost, weight_decay)
        return x.new_empty(())  # the cost; the parameters change in place, shapes unchanged

    @torch.library.register_fake("bp_torch::sigmoid_mlp_sgd_epoch")
    def _sigmoid_mlp_sgd_epoch_fake(x, y, weights, biases, lr, batch_size, perm, cost="quadratic", weight_decay=0.0):
        _checks.sigmoid_mlp_sgd_epoch(x, y, weights, biases, batch_size, perm)
        _checks.sgd_rule("sgd_epoch", cost, weight_decay)
        return x.new_empty(((x.shape[0] + batch_size - 1) // batch_size,))  # one cost per mini-batch

    # The differentiable twins of the backward ops are the Python backend's formulas, in torch ops that autograd
    # records (CompositeImplicitAutograd): a backward whose gradients need a graph (create_graph=True) takes them
    # instead of the fused kernels (csrc/autograd.cpp). Each formula is then written once in Python
    # (bp_torch.autograd) and once in the kernels. They check their inputs as the kernels do, with the same words.

    @torch.library.impl("bp_torch::sigmoid_linear_backward_differentiable", "CompositeImplicitAutograd")
    def _sigmoid_linear_backward_differentiable(grad_a, x, weight, a, output_mask):
        _checks.sigmoid_linear_backward(grad_a, x, weight, a)
        return autograd.sigmoid_linear_backward(grad_a, x, weight, a, output_mask)

    @torch.library.impl("bp_torch::quadratic_cost_backward_differentiable", "CompositeImplicitAutograd")
    def _quadratic_cost_backward_differentiable(grad_cost, a, y, reduction, output_mask):
        _checks.quadratic_cost_backward(grad_cost, a, y, reduction)
        return autograd.quadratic_cost_backward(grad_cost, a, y, reduction, output_mask)

    @torch.library.impl("bp_torch::cross_entropy_cost_backward_differentiable", "CompositeImplicitAutograd")
    def _cross_entropy_cost_backward_differentiable(grad_cost, a, y, reduction, output_mask):
        _checks.quadratic_cost_backward(grad_cost, a, y, reduction, "cross_entropy_cost")
        return autograd.cross_entropy_cost_backward(grad_cost, a, y, reduction, output_mask)

    # Autocast: the kernels take float32 and float64 only, so the ops declare their casting. Under
    # torch.autocast (for example with dtype=torch.bfloat16) their floating-point inputs other than float64 are cast
    # to float32, and they compute and return float32, like the Python backend (see bp_torch.functional).
    for _op in (
        "bp_torch::sigmoid_linear",
        "bp_torch::quadratic_cost",
        "bp_torch::cross_entropy_cost",
        "bp_torch::sigmoid_mlp",
    ):
        for _device_type in ("cpu", "cuda"):
            torch.library.register_autocast(_op, _device_type, torch.float32)
