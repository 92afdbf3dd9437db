"""The backend switch, in one place.

bp_torch has two backends that compute the same formulas:

* ``"python"``: the ``torch.autograd.Function`` s of :mod:`bp_torch.autograd`, the chapter line by line;
* ``"cpp"``: the dispatcher ops of the compiled extension ``bp_torch._C`` (``torch.ops.bp_torch.*``, loaded by
  :mod:`bp_torch._ops`), with fused CPU kernels and a C++ autograd node.

The default is ``"cpp"`` when the extension is built, ``"python"`` otherwise; the ``BP_TORCH_BACKEND`` environment
variable overrides it at import, and :func:`~bp_torch.set_backend` at run time. ``with use_backend(name):`` chooses
a backend for the code inside the block only, in this thread or asyncio task only, as torch's own modes are scoped.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

from ._ops import _C

_BACKENDS = ("python", "cpp") if _C is not None else ("python",)
_default = "cpp" if _C is not None else "python"
# The choice of the innermost use_backend() block, None outside any. A ContextVar is private to each thread (a new
# thread starts outside every block) and is copied into each asyncio task, so no thread or task sees another's.
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar("bp_torch_backend", default=None)


def available_backends() -> tuple[str, ...]:
    """The backends this installation can run, e.g. ``("python", "cpp")``."""
    return _BACKENDS


def backend() -> str:
    """The active backend's name: that of the innermost :func:`use_backend` block, else :func:`set_backend`'s."""
    return _scoped.get() or _default


def _check_name(name: str) -> None:
    if name not in _BACKENDS:
        hint = "" if _C is not None or name != "cpp" else " (the C++ extension is not built)"
        raise ValueError(f"bp_torch: unknown or unavailable backend {name!r}{hint}; available: {_BACKENDS}")


def set_backend(name: str) -> None:
    """Select the process-wide default backend (``"python"`` or ``"cpp"``), used wherever no :func:`use_backend`
    block is active, in every thread."""
    global _default
    _check_name(name)
    _default = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
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


def use_cpp(input: torch.Tensor) -> bool:
    """Whether a call on ``input`` should take the C++ ops.

    The compiled kernels are CPU kernels: tensors on other devices (CUDA, meta) take the Python Functions, which
    are device-generic torch code. torch.func transforms cannot look into the C++ autograd nodes, so calls made under
    ``vmap``/``grad`` take the Python Functions too. torch.compile traces the C++ ops through their fake kernels.
    """
    # is_cpu: a quarter of the cost of device.type. The transforms flag is one C call, is_compiling() two Python
    # calls, so it is asked only under a transform (this runs on every call of an op).
    return (
        (_scoped.get() or _default) == "cpp"
        and input.is_cpu
        and (not torch._C._are_functorch_transforms_active() or torch.compiler.is_compiling())
    )


if os.environ.get("BP_TORCH_BACKEND"):
    set_backend(os.environ["BP_TORCH_BACKEND"])
