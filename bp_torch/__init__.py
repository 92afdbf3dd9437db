"""bp_torch: back-propagation made explicit.

Sigmoid-linear layers, the quadratic and cross-entropy costs and SGD with L2 weight decay as PyTorch ops whose
backward is the textbook's equations, with a pure-Python backend (the chapter line by line) and an optional fused
C++ backend.
"""

from . import functional
from ._backend import available_backends, backend, set_backend, use_backend
from ._version import __version__
from .explain import explain
from .modules import CrossEntropyCost, QuadraticCost, SigmoidLinear, SigmoidMLP

__all__ = [
    "CrossEntropyCost",
    "QuadraticCost",
    "SigmoidLinear",
    "SigmoidMLP",
    "__version__",
    "available_backends",
    "backend",
    "explain",
    "functional",
    "set_backend",
    "use_backend",
]
