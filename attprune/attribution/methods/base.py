"""The attribution-method registry: one ``Method`` subclass per method, registered by name.

A method declares what it needs and how it scores; ``attprune.attribute`` reads only these
declarations, so adding a method is one class (README, "Extending attprune")::

    @register_method
    class InputNorm(Method):
        name = "input_norm"

        def score_batch(self, runner, clean, chunk):   # yields (site path, [rows, units] scores)
            ...

    scores = attprune.attribute(model, batches, method="input_norm")
"""

from __future__ import annotations

from typing import ClassVar, Iterator

import torch
from torch import nn

from ...errors import InputError
from ...sites import Site
from ..runner import Clean, Runner

# ``AttributionConfig`` (``..config``) and ``SiteScores`` (``..scores``) appear in annotations only, as
# strings: the config module reads this registry for its choices, so this module imports neither

METHODS: dict[str, type["Method"]] = {}


class Method:
    """One attribution method.

    Declarations (class attributes):
        name: the ``method=`` string.
        needs_data: False for scores that need no batches (``score_without_data``).
        records_embeddings: the clean pass keeps the input embeddings' outputs (methods that
            interpolate or differentiate from the embeddings).
        replays_sites: the clean pass records what each site's replay needs (per-site IG:
            the layers below a site are not run again).
        follows_gradient: a token's scores are products with the gradient of F, so tokens F
            cannot see score exactly 0 (a causal LM's batch is then cut after its last target).
        takes_positions: honours ``positions`` (calls ``runner.select_positions(clean,
            self.config.positions)`` first in ``score_batch``; ``runner.token_mask`` then holds
            only the chosen tokens); other methods refuse a choice other than "all".
        accumulator_dtype: the dtype of the running sums (None: float32, float64 for a float64
            model).

    A data-driven method implements ``score_batch``: per-example scores [rows, units] of
    every site, yielded as ``(site path, scores)``; a data-free one ``score_without_data``.
    A method whose score is not a mean over examples (e.g. a norm over all calibration
    tokens) yields per-example *statistics* instead, [rows, ``accumulator_size(site)``],
    and turns their sums into unit scores in ``finish`` (``calibration.py``).
    """

    name: ClassVar[str]
    needs_data: ClassVar[bool] = True
    records_embeddings: ClassVar[bool] = False
    replays_sites: ClassVar[bool] = False
    follows_gradient: ClassVar[bool] = False
    takes_positions: ClassVar[bool] = False
    accumulator_dtype: ClassVar[torch.dtype | None] = None

    #: the site input means over the data (``attribution/means.py``), set by ``attribute`` before
    #: scoring when ``needs_input_means``
    input_means: dict | None = None

    def __init__(self, config: "AttributionConfig"):
        self.config = config

    @property
    def needs_input_means(self) -> bool:
        """Whether scoring reads every site's mean input over the data (a first pass computes them)."""
        return False

    @classmethod
    def check(cls, config: "AttributionConfig") -> None:
        """Refuse settings this method cannot honour (raise ``InputError``)."""

    def nodes(self) -> tuple[list[float], list[float]] | None:
        """``(alphas, weights)`` of the method's integration path, or None (one pass per batch)."""
        return None

    def max_nodes(self) -> int:
        """The most nodes one example's pass may need (sizes the nodes per forward pass)."""
        nodes = self.nodes()
        return len(nodes[0]) if nodes else 1

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        """Per-example scores of every site from one batch; ``chunk``: nodes per forward pass."""
        raise NotImplementedError(f"method {self.name!r} scores without data")

    def accumulator_size(self, site: Site) -> int:
        """The width of the rows ``score_batch`` yields for ``site`` (the sums resume and
        all-reduce at this width)."""
        return site.n_units

    def finish(self, runner: Runner, stats: dict[str, "SiteScores"]) -> dict[str, "SiteScores"]:
        """The per-unit ``SiteScores`` of every site from the sums of what ``score_batch``
        yielded over all batches (and all processes); the sums are the scores unless overridden."""
        return stats

    def statistics(self) -> dict:
        """What the run achieved, for ``Scores.meta`` (e.g. ``steps="auto"``'s completeness gaps)."""
        return {}

    def score_without_data(self, model: nn.Module, sites: list[Site]) -> dict[str, torch.Tensor]:
        """One score per unit of every site, from the weights alone."""
        raise NotImplementedError(f"method {self.name!r} needs data")


def register_method(cls: type[Method], *, override: bool = False) -> type[Method]:
    """Add a ``Method`` subclass to the registry (usable as a class decorator)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise InputError(f"{cls.__name__} needs a class attribute name = '...'")
    if name in METHODS and METHODS[name] is not cls and not override:
        raise InputError(f"method {name!r} is already registered ({METHODS[name].__name__}); pass override=True")
    METHODS[name] = cls
    return cls


def unregister_method(name: str) -> None:
    METHODS.pop(name, None)


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
