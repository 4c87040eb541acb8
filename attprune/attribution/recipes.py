"""Recipes: what attprune does, per kind of model, with the settings left unset.

A recipe fixes how units are scored (``AttributionConfig``: the IG path's nodes, rule, start
and shape, and the objective) and how scores become a plan (``make_plan``: scope,
normalisation, ranking).  Each was chosen by measurement, on the models attprune is tested
on, and is recorded by name in ``Scores.meta["recipe"]`` and ``Plan.meta["recipe"]``, so a
result says which recipe made it.  A setting given explicitly always wins.

>>> attprune.attribute(llm, batches).meta["recipe"]          # 'causal-lm/1'
>>> attprune.attribute(llm, batches, recipe="encoder/1")     # another kind's recipe
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import InputError
from .objective import task_of


@dataclass(frozen=True)
class Recipe:
    """A named set of defaults: ``attribution`` fills ``AttributionConfig`` fields left unset
    (each only for the methods it concerns: ``RECIPE_FIELDS``), ``plan`` fills ``make_plan``'s,
    ``plan_by_method`` overrides ``plan`` for the scores of one method."""

    name: str
    attribution: dict
    plan: dict
    evidence: str
    plan_by_method: dict = field(default_factory=dict)

    def plan_for(self, method: str | None) -> dict:
        """``make_plan``'s defaults for scores of ``method``."""
        return {**self.plan, **self.plan_by_method.get(method, {})}


#: AttributionConfig fields a recipe sets, and the methods each concerns
RECIPE_FIELDS = {"steps": ("ig", "conductance"), "quadrature": ("ig", "conductance"), "baseline": ("ig",),
                 "path": ("ig",), "target": ("ig", "conductance", "grad_x_act", "fisher")}
PLAN_FIELDS = ("scope", "normalize", "rank_by")

ENCODER = Recipe(
    "encoder/1",
    attribution={"steps": "auto", "quadrature": "gausslegendre", "target": "label", "baseline": "zero",
                 "path": "site"},
    plan={"scope": "global", "normalize": "layer", "rank_by": "mean_abs"},
    evidence="bench/results/tasks (MiniLM, six tasks, three draws): IG ahead of fisher, Taylor and activation at "
             "70% FFN; bench/README.md 'IG nodes': auto 5.6x faster than Riemann-20, 7.6x more accurate")

CAUSAL_LM = Recipe(
    "causal-lm/1",
    attribution={"steps": 4, "quadrature": "gausslegendre", "target": "label", "baseline": "zero",
                 "path": "site"},
    plan={"scope": "global", "normalize": "none", "rank_by": "mean_abs"},
    plan_by_method={"ig": {"rank_by": "rms"}},
    evidence="bench/results/llm/study (SmolLM2-135M-Instruct; mr, bbc, noun/verb; two draws of 32 prompts; "
             "30% and 50% FFN, paired intervals over draws and prompts, pooled over the tasks): without "
             "per-site normalisation IG gains +4.7 / +10.2 points at 30% / 50% (fisher -0.6 / +7.2); ranking IG "
             "by root mean square adds +2.9 at 50%; IG so planned is ahead of fisher's best plan at 50% (+2.7) and "
             "tied at 30%. 4 fixed nodes: steps='auto' costs 2.1x (16.5 against 7.8 minutes for 32 prompts, "
             "all 60 sites, bench/results/ig_utilisation.md) for kept@50 0.986 against 0.974 "
             "(bench/README.md 'IG nodes')")

RECIPES: dict[str, Recipe] = {r.name: r for r in (ENCODER, CAUSAL_LM)}


def recipe_for(model: nn.Module) -> Recipe:
    """The recipe of ``model``'s kind: causal LMs have their own, every other kind the encoders'."""
    return CAUSAL_LM if task_of(model) == "causal" else ENCODER


def recipe_named(name: str) -> Recipe:
    if name not in RECIPES:
        raise InputError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def concerns(name: str, method: str) -> bool:
    """Whether the recipe field ``name`` sets anything for ``method``."""
    return method in RECIPE_FIELDS[name]


def unset_fields(method: str, settings: dict) -> list[str]:
    """The recipe fields that ``method`` reads and ``settings`` leave to the recipe."""
    return [name for name in RECIPE_FIELDS if concerns(name, method) and settings.get(name) is None]


def plan_defaults(meta: dict) -> dict:
    """``make_plan``'s settings for scores with ``meta``: their recipe's (the encoders' for
    scores recorded before recipes existed)."""
    return recipe_named(meta.get("recipe") or ENCODER.name).plan_for(meta.get("method"))
