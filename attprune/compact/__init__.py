"""Masking (reversible, same shapes) and compaction (physically smaller dense layers)."""

from .core import applied_plan, compact, register_layout
from .mask import MaskHandle, mask

__all__ = ["MaskHandle", "applied_plan", "compact", "mask", "register_layout"]
