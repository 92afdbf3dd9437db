"""The backend switch, in one place.

bp_torch has two backends that compute the same formulas:

* ``"python"``: the ``torch.autograd.Function`` s of :mod:`bp_torch.autograd`, the chapter line by line;
* ``"cpp"``: the dispatcher ops of the compiled extension ``bp_torch._C`` (``torch.ops.bp_torch.*``), with fused
  CPU kernels and a C++ autograd node.

The default is ``"cpp"`` when the extension is built, ``"python"`` otherwise; the ``BP_TORCH_BACKEND`` environment
variable overrides it at import, and :func:`set_backend` at run time. ``with use_backend(name):`` chooses a backend
for the code inside the block only, in this thread or asyncio task only, as torch's own modes are scoped.
"""
import contextlib
import contextvars
import importlib
import os
import warnings

import torch

from . import _checks

def _extension_expected():
    """Whether this installation should have bp_torch._C: not when BP_TORCH_NO_EXT=1 is set now, nor when it was
    set at build time (setup.py writes bp_torch/_build_info.py)."""
    if os.environ.get("BP_TORCH_NO_EXT") == "1":
        return False
    try:
        from . import _build_info
    except ImportError:  # a tree that setup.py never ran in
        return True
    return bool(_build_info.EXTENSION)


try:
    _C = importlib.import_module("bp_torch._C")  # loading the library registers torch.ops.bp_torch.*
except ModuleNotFoundError as err:
    _C = None
    if _extension_expected():  # not built, or its build was lost: say so, once (module code runs once)
        warnings.warn(f"bp_torch: the C++ extension is missing ({err}); using the Python backend. Reinstall "
                      "bp_torch to build it (pip install --no-build-isolation .), or set BP_TORCH_NO_EXT=1 for "
                      "a pure-Python install", RuntimeWarning)
except ImportError as err:  # built, but cannot load (an ABI mismatch, say): worth one warning
    _C = None
    warnings.warn(f"bp_torch: the C++ extension failed to load ({err}); using the Python backend", RuntimeWarning)

_BACKENDS = ("python", "cpp") if _C is not None else ("python",)
_default = "cpp" if _C is not None else "python"
# The choice of the innermost use_backend() block, None outside any. A ContextVar is private to each thread (a new
# thread starts outside every block) and is copied into each asyncio task, so no thread or task sees another's.
_scoped = contextvars.ContextVar("bp_torch_backend", default=None)


def available_backends():
    """The backends this installation can run, e.g. ``("python", "cpp")``."""
    return _BACKENDS


def backend():
    """The active backend's name: that of the innermost :func:`use_backend` block, else :func:`set_backend`'s."""
    return _scoped.get() or _default


def _check_name(name):
    if name not in _BACKENDS:
        hint = "" if _C is not None or name != "cpp" else " (the C++ extension is not built)"
        raise ValueError(f"bp_torch: unknown or unavailable backend {name!r}{hint}; available: {_BACKENDS}")


def set_backend(name):
    """Select the process-wide default backend (``"python"`` or ``"cpp"``), used wherever no :func:`use_backend`
    block is active, in every thread."""
    global _default
    _check_name(name)
    _default = name


@contextlib.contextmanager
def use_backend(name):
    """Run the block on backend ``name`` (``"python"`` or ``"cpp"``), in this thread or asyncio task only::

        with bp_torch.use_backend("python"):
            loss = cost(net(x), y)      # the chapter's equations, in Python

    Other threads keep their own choice; blocks nest, and the previous choice returns when the block exits.
    """
    _check_name(name)
    token = _scoped.set(name)
    try:
        yield
    finally:
        _scoped.reset(token)


def use_cpp(input):
    """Whether a call on ``input`` should take the C++ ops.

    The compiled kernels are CPU kernels: tensors on other devices (CUDA, meta) take the Python Functions, which
    are device-generic torch code. torch.func transforms cannot look into the C++ autograd nodes, so calls made under
    ``vmap``/``grad`` take the Python Functions too. torch.compile traces the C++ ops through their fake kernels.
    """
    # is_cpu: a quarter of the cost of device.type. The transforms flag is one C call, is_compiling() two Python
    # calls, so it is asked only under a transform (this runs on every call of an op).
    return ((_scoped.get() or _default) == "cpp" and input.is_cpu
            and (not torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling()))


if os.environ.get("BP_TORCH_BACKEND"):
    set_backend(os.environ["BP_TORCH_BACKEND"])


if _C is not None:
    ops = torch.ops.bp_torch

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
    def _sigmoid_mlp_sgd_step_fake(x, y, weights, biases, lr):
        _checks.sigmoid_mlp_sgd_step(x, y, weights, biases)
        return x.new_empty(())                     # the cost; the parameters change in place, shapes unchanged

    @torch.library.register_fake("bp_torch::sigmoid_mlp_sgd_epoch")
    def _sigmoid_mlp_sgd_epoch_fake(x, y, weights, biases, lr, batch_size, perm):
        _checks.sigmoid_mlp_sgd_epoch(x, y, weights, biases, batch_size, perm)
        return x.new_empty(((x.shape[0] + batch_size - 1) // batch_size,))     # one cost per mini-batch

    # Autocast: the kernels take float32 and float64 only, so the ops declare their casting. Under
    # torch.autocast (for example with dtype=torch.bfloat16) their floating-point inputs other than float64 are cast
    # to float32, and they compute and return float32, like the Python backend (see bp_torch.functional).
    for _op in ("bp_torch::sigmoid_linear", "bp_torch::quadratic_cost", "bp_torch::sigmoid_mlp"):
        for _device_type in ("cpu", "cuda"):
            torch.library.register_autocast(_op, _device_type, torch.float32)
