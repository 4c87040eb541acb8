"""Attribution methods, one class each, in a registry (``base.py``): per-site integrated
gradients (``ig.py``), the embedding-path gradient methods conductance / grad_x_act / fisher
(``gradients.py``), ``activation``, the LLM-pruning criteria ``wanda`` / ``flap`` (statistics over all
calibration tokens, ``calibration.py``) and the data-free ``magnitude`` / ``random``."""

# the built-in methods register on import, in the order the CLI and the docs list them
from . import ig, gradients, activation, calibration, data_free  # noqa: F401, I001
from .base import METHODS, Method, method_class, register_method, unregister_method

__all__ = ["METHODS", "Method", "method_class", "register_method", "unregister_method"]
