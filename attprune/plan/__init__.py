"""Plans: which units of every site stay."""

from .make import make_plan
from .plan import Plan, PlanMismatchError

__all__ = ["Plan", "PlanMismatchError", "make_plan"]
