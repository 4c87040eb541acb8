"""One mechanism for every hook attprune puts on a model: route a module's forward.

``patch_forward(module, replacement)`` makes ``module(...)`` call
``replacement(original_forward, args, kwargs)`` until the returned handle is removed.
Attribution uses it to replay recorded outputs and to feed interpolated site outputs;
masking uses it to scale a site's input features.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from torch import nn

Replacement = Callable[[Callable, tuple, dict], Any]


class ForwardPatch:
    """Handle of one patched forward; ``remove()`` restores the module exactly."""

    def __init__(self, module: nn.Module, replacement: Replacement):
        self.module = module
        self._had_own = "forward" in module.__dict__
        self._original = module.forward

        def forward(*args, **kwargs):
            return replacement(self._original, args, kwargs)

        self._forward = forward
        module.forward = forward

    def remove(self) -> None:
        if self.module.__dict__.get("forward") is not self._forward:
            if self._forward is None:
                return
            raise RuntimeError("another patch was put on this module after this one; remove that first")
        if self._had_own:
            self.module.forward = self._original
        else:
            del self.module.forward
        self._forward = None


def patch_forward(module: nn.Module, replacement: Replacement) -> ForwardPatch:
    return ForwardPatch(module, replacement)


@contextlib.contextmanager
def patched_forwards(model: nn.Module, replacements: dict[str, Replacement]):
    """Patch several submodules (by path) for the duration of a ``with`` block."""
    patches = []
    try:
        for name, replacement in replacements.items():
            patches.append(patch_forward(model.get_submodule(name), replacement))
        yield
    finally:
        for patch in reversed(patches):
            patch.remove()
