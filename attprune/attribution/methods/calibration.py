r"""The structured LLM-pruning criteria: ``wanda`` and ``flap``, from per-feature statistics of
each site's input X over all calibration tokens (no gradient).

For feature j of a site's input (a column of its projection's weight W [out, in]), with
sums over the real (non-padding) tokens t of all batches, T of them, from N examples:

``wanda`` (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
Models", arXiv:2306.11695), in the structured form FLAP compares to (``prune_wanda_sp``):

.. math:: S_u = \sum_{j \in u} \frac{1}{\text{out}} \sum_i |W_{ij}| \, \sqrt{\textstyle\sum_t x_{t,j}^2 / N}

``flap`` (An et al. 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language
Models", AAAI 2024, arXiv:2312.11983), its WIFV metric (``prune_flap``, ``--metrics WIFV``):

.. math:: s_j = \frac{\sum_t (x_{t,j} - \bar x_j)^2}{T - 1} \sum_i W_{ij}^2, \qquad
          S_u = s_u \text{ (a neuron)}, \quad S_u = \sum_{j \in u} s_j^2 \text{ (a head)}

Matched against FLAP's code (github.com/CASIA-IVA-Lab/FLAP, ``lib/prune.py`` and
``lib/layerwrapper.py``):

- wanda's norm is ``WrappedGPT.scaler_row`` square-rooted: the sum of x^2 over the tokens
  divided by the number of *sequences* (its ``nsamples`` counts sequences, not tokens), and
  the per-weight scores are averaged over the output rows (``W_metric.mean(axis=0)``), then
  summed over a head's columns.  Neither constant changes the order within a site; with
  ``make_plan(normalize="none")`` they keep different sites comparable as FLAP's are.
- flap's variance is the sample variance (Bessel's T - 1) of x_j over all real tokens.
  FLAP's ``BiasGPT.fluc_inp`` is a running Welford-style update over sequences of a fixed
  length L; it estimates L times this variance (not exactly: it drops the first sequence and
  reads the already-updated mean), a factor common to every site, so no ranking changes.
- a head's flap score sums the *squares* of its columns' metrics, as ``prune_flap`` does for
  ``o_proj`` (``metrics[...] ** 2`` before the per-head sum or mean); FFN neurons are not
  squared.

Not here: FLAP's bias compensation (the pruned features' mean input, ``baseline_inp``, sent
through W into the projection's bias) and its structure search, which standardises each
layer's metrics ((s - mean) / std per layer and module) before one global threshold; that
belongs to the plan: the nearest ``make_plan`` is ``scope="global"`` with
``normalize="layer"`` (it divides by the site's mean |score|, without centring).

Both need the statistics of all tokens before any unit can be scored, so each batch yields
per-example moments (``CalibrationMethod``): the usual accumulation, resume files and
all-reduce carry their sums, and ``finish`` turns them into per-unit scores once.  The
result has one score per unit: its mean, with count = examples and spread 0.  Merging two
such runs averages their scores (weighted by examples); it does not recompute the criterion
on the union.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator

import torch

from ...errors import InputError
from ...sites import HEADS, Site
from ..runner import Clean, Runner
from .base import Method, register_method

if TYPE_CHECKING:  # scores.py imports the config, which imports this registry
    from ..scores import SiteScores


@dataclass
class Moments:
    """Per-feature sums over the real calibration tokens of one site's input."""

    sum: torch.Tensor      # [features] sum of x
    sum_sq: torch.Tensor   # [features] sum of x^2
    tokens: float
    examples: int


class CalibrationMethod(Method):
    """A criterion of per-feature statistics over all calibration tokens, combined with the
    site projection's weight once every batch is read.

    ``score_batch`` yields, per example, [sum_t x_j, sum_t x_j^2 (every feature j), real
    tokens]; ``finish`` gives ``feature_scores`` the sums and adds each unit's features.
    """

    accumulator_dtype = torch.float64  # the variance is a difference of sums
    takes_positions = True  # the statistics of the chosen tokens only

    @classmethod
    def check(cls, config) -> None:
        if config.reduce_tokens != "sum":
            raise InputError(f"method={cls.name!r} reads statistics of all real tokens; reduce_tokens does "
                             "not apply: leave it 'sum'")

    def accumulator_size(self, site: Site) -> int:
        return 2 * site.n_units * site.unit_size + 1

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        for site in runner.sites:
            x = clean.site_inputs[site.path].to(runner.acc_dtype)
            real = runner.token_mask(clean, site).to(x.device).unsqueeze(-1)
            x = torch.where(real, x, 0.0)
            yield site.path, torch.cat([x.sum(1), x.square().sum(1), real.sum(1).to(x.dtype)], dim=1)

    def finish(self, runner: Runner, stats: dict[str, "SiteScores"]) -> dict[str, "SiteScores"]:
        scores = {}
        for site in runner.sites:
            s, features = stats[site.path], site.n_units * site.unit_size
            moments = Moments(s.sum[:features], s.sum[features:2 * features], float(s.sum[-1]), s.count)
            weight = runner.site_weight(site, torch.device("cpu")).to(torch.float64)
            per_unit = self.feature_scores(moments, weight, site).view(site.n_units, site.unit_size).sum(1)
            # one score per unit, as the mean of count equal per-example scores (spread 0)
            scores[site.path] = replace(s, sum=per_unit * s.count, sum_abs=per_unit.abs() * s.count,
                                        sum_sq=per_unit.square() * s.count)
        return scores

    def feature_scores(self, moments: Moments, weight: torch.Tensor, site: Site) -> torch.Tensor:
        """[features] scores from the moments and the [out, in] weight (summed per unit)."""
        raise NotImplementedError


@register_method
class Wanda(CalibrationMethod):
    """Structured Wanda (Sun et al. 2023): |W| x ||X|| averaged over rows, summed over a unit's columns."""

    name = "wanda"

    def feature_scores(self, moments: Moments, weight: torch.Tensor, site: Site) -> torch.Tensor:
        norm = (moments.sum_sq / max(moments.examples, 1)).sqrt()  # FLAP's scaler_row, square-rooted
        return weight.abs().mean(0) * norm


@register_method
class Flap(CalibrationMethod):
    """FLAP's fluctuation metric (An et al. 2024): Var(X_j) x ||W_:,j||^2 (a head: sum of its squares)."""

    name = "flap"

    def feature_scores(self, moments: Moments, weight: torch.Tensor, site: Site) -> torch.Tensor:
        tokens = max(moments.tokens, 1.0)
        variance = (moments.sum_sq - moments.sum.square() / tokens).clamp_min(0) / max(tokens - 1, 1.0)
        metric = variance * weight.square().sum(0)
        return metric.square() if site.kind == HEADS else metric
