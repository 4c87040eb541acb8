"""``AttributionConfig``: every setting of an attribution run, in one frozen object.

It is the argument of ``attprune.attribute`` (keyword arguments override its fields), what
``Scores.meta`` records (its fields, flat, beside the run's statistics), what a resumed run
must match, and where the ``attprune score`` flags come from.

>>> config = attprune.AttributionConfig(method="ig", steps=8, quadrature="gausslegendre")
>>> scores = attprune.attribute(model, batches, config)
>>> scores.settings() == config.result_settings()      # meta also records the resolved backend
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Union

import torch

from ..errors import InputError
from ..ops import BACKENDS
from ..settings import DTYPE_NAMES, Settings, check_int, option, parse_dtype
from ..sites import UNIT_KINDS
from .inputs import LONG_INPUTS
from .memory import parse_memory
from .methods.base import METHODS, method_class
from .methods.ig import BASELINES, PATHS
from .objective import TARGET_ERROR, TARGETS
from .quadrature import AUTO, QUADRATURES
from .recipes import ENCODER, RECIPES, concerns, recipe_for, recipe_named
from .tokens import CLI_POSITIONS, check_positions
from ..ops.reference import REDUCTIONS


#: the value of a recipe field for the methods that do not read it: the encoders' recipe's
NEUTRAL = ENCODER.attribution


def _steps(text: str) -> int | str:
    return text if text == AUTO else int(text)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class AttributionConfig(Settings):
    """The settings of one attribution run (see ``attprune.attribute`` for their meaning)."""

    method: str = option("ig", "attribution method", choices=lambda: tuple(METHODS))
    units: tuple[str, ...] = option(("ffn", "heads"), "unit kinds to score: ffn (intermediate neurons), heads "
                                    "(query heads); comma-separated on the command line", parse=_comma_list)
    steps: int | str | None = option(None, "quadrature nodes of the integration path (Captum's n_steps), or 'auto': "
                                            "per-site IG starts at 4 nodes and doubles them for the sites and examples "
                                            "whose completeness gap exceeds tolerance (conductance: 20 nodes)",
                                     parse=_steps)
    quadrature: str | None = option(None, "node rule of the path integral (Captum's method names)",
                                    choices=QUADRATURES)
    target: Union[str, Callable, None] = option(None, "explain the gold label's log-probability, the model's own "
                                                   "prediction (no labels needed), the gold label's probability "
                                                   "(exp of 'label': the target token's softmax probability, the "
                                                   "joint one of several labelled tokens), the gold answer's "
                                                   "log-probability normalised over the task's answers "
                                                   "(normalized) or its margin over the best other answer (margin; "
                                                   "a causal LM reads the answers from each batch's 'choices'); in "
                                                   "Python also a callable (outputs, batch) -> Tensor[batch]",
                                          cli_choices=TARGETS)
    baseline: str | None = option(None, "ig: where each unit's path starts: zero (the unit off) or mean (its mean "
                                   "activation over the attribution data, computed in a first pass)",
                           choices=BASELINES)
    path: str | None = option(None, "ig: one path per site (the layers above it run at every node: exact per-site "
                               "attribution), or joint: one path for all sites of a kind (every FFN site, or every "
                               "head site, scaled together: one pass of the model per node)", choices=PATHS)
    reduce_tokens: str = option("sum", "how per-token scores become one per example (over real tokens, or the "
                                       "chosen positions)", choices=REDUCTIONS)
    positions: Union[str, Callable] = option(
        "all", "the tokens of each example to attribute at: all (every real token), labelled (where the objective "
               "reads the output: labels != -100, e.g. a cloze probe's [MASK]; for a causal LM the position before "
               "each labelled token, whose logits predict it), mask (input_ids == model.config.mask_token_id), last "
               "(the last real token); in Python also 'batch' (each batch's attribution_positions bool tensor) or a "
               "callable (batch) -> bool Tensor[rows, tokens]. ig interpolates each site at these tokens only (the "
               "others keep their clean values) and sums over them; conductance, grad_x_act and activation reduce "
               "over them; fisher squares the gradient of a unit mask applied there; an example with none is "
               "an error", cli_choices=CLI_POSITIONS)
    dtype: torch.dtype | None = option(None, "compute the model in this dtype (autocast); scores accumulate in "
                                             "float32 (float64 for a float64 model)", cli_choices=DTYPE_NAMES)
    backend: str = option("auto", "IG step arithmetic: torch (reference), triton (fused kernels, CUDA), native "
                                  "(the CMake-built CPU op), auto (triton on CUDA, else torch)", choices=BACKENDS)
    seed: int = option(0, "seed of method=random")
    long_inputs: str = option("truncate", "inputs longer than the model's positions: truncate (with a warning) or "
                                          "refuse (error)", choices=LONG_INPUTS)
    tolerance: float = option(1e-2, "steps='auto': the largest completeness gap allowed, |sum of a site's unit "
                                    "scores - (F(x) - F(site off))|, relative to the batch's mean |F(x) - F(site "
                                    "off)|")
    internal_batch_size: int | None = option(None, "interpolation rows (examples x nodes) per forward/backward "
                                                   "pass, as Captum's internal_batch_size; default: what fits "
                                                   "memory_budget", parse=int, flag="--rows-per-pass")
    recipe: str | None = option(None, "the recipe that fills the settings left unset (steps, quadrature, target, "
                                      "baseline, path; and make_plan's scope, normalize, rank_by): "
                                      "attprune.attribution.recipes; default: the model kind's (causal LMs have "
                                      "their own)", choices=lambda: tuple(RECIPES))
    memory_budget: int | str | None = option(None, "memory one pass may use (bytes or '8GB'); default: half the "
                                                   "free memory of the model's GPU, or a token budget on CPU",
                                             cli=False)

    #: fields that change how a run computes, not what it computes (beyond float rounding)
    RUN_ONLY = ("backend", "internal_batch_size", "memory_budget", "recipe")

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", parse_dtype(self.dtype))
        if isinstance(self.units, (list, tuple)):  # in UNIT_KINDS order: ("heads", "ffn") is ("ffn", "heads")
            order = {kind: i for i, kind in enumerate(UNIT_KINDS)}
            object.__setattr__(self, "units", tuple(sorted(set(self.units), key=lambda u: order.get(u, len(order)))))
        super().__post_init__()

    def check(self) -> None:
        if isinstance(self.units, str):
            raise InputError(f"units must be a tuple such as ('ffn', 'heads'), got the string {self.units!r}")
        if not self.units or any(u not in UNIT_KINDS for u in self.units):
            raise InputError(f"units must be a non-empty subset of {UNIT_KINDS}, got {self.units!r}")
        if self.steps not in (AUTO, None):
            check_int("steps", self.steps)
        if not isinstance(self.tolerance, (int, float)) or isinstance(self.tolerance, bool) or self.tolerance <= 0:
            raise InputError(f"tolerance must be a number > 0, got {self.tolerance!r}")
        if self.internal_batch_size is not None:
            check_int("internal_batch_size", self.internal_batch_size)
        if self.target is not None and not callable(self.target) and self.target not in TARGETS:
            raise InputError(TARGET_ERROR.format(target=self.target))
        check_positions(self.positions)
        if self.positions != "all" and not method_class(self.method).takes_positions:
            raise InputError(f"method={self.method!r} does not take positions (positions={self.positions!r}); "
                             "use positions='all', or a method that does (ig, conductance, grad_x_act, fisher, "
                             "activation)")
        if (self.baseline or "zero", self.path or "site") != ("zero", "site") and self.method != "ig":
            raise InputError(f"baseline={self.baseline!r} and path={self.path!r} set integrated gradients' path; "
                             f"method={self.method!r} has none (use the defaults 'zero' and 'site')")
        if self.memory_budget is not None:
            parse_memory(self.memory_budget)
        method_class(self.method).check(self)

    def for_model(self, model) -> "AttributionConfig":
        """The settings a run on ``model`` uses: every field left unset (None) filled from the
        recipe (``recipe``, else the model kind's), for the methods the field concerns; the
        recipe's name recorded in ``recipe``."""
        recipe = recipe_named(self.recipe) if self.recipe else recipe_for(model)
        filled = {name: value for name, value in recipe.attribution.items()
                  if getattr(self, name) is None and concerns(name, self.method)}
        resolved = self.replace(recipe=recipe.name, **filled)
        # what the method does not read stays at its neutral value, so recorded settings compare across methods
        neutral = {name: value for name, value in NEUTRAL.items() if getattr(resolved, name) is None}
        return resolved.replace(**neutral) if neutral else resolved

    @classmethod
    def result_fields(cls) -> tuple[str, ...]:
        """The names of the fields that decide the scores."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in cls.RUN_ONLY)

    def result_settings(self) -> dict:
        """The fields that decide the scores (what merged or resumed runs must share)."""
        values = self.to_dict()
        return {name: values[name] for name in self.result_fields()}

