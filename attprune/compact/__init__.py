"""Masking (reversible, same shapes) and compaction (physically smaller dense layers)."""

from .core import applied_plan, compact
from .cost import cost_summary, model_cost, plan_cost
from .mask import MaskHandle, mask

__all__ = ["MaskHandle", "applied_plan", "compact", "mask", "cost_summary", "model_cost", "plan_cost"]
