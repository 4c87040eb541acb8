"""95% bootstrap intervals over test examples, for one result and for a difference of two.

>>> mean_interval([1, 0, 1, 1])                        # accuracy from per-example correctness
Interval(value=0.75, low=0.25, high=1.0)
>>> paired_difference(correct_a, correct_b).excludes_zero()   # "A beats B" only when True
>>> verdict(paired_difference(correct_a, correct_b))          # "ahead", "tied" or "behind"

Token tasks score several labels per example: pass ``totals`` (labels per example) and the
statistic becomes sum(values) / sum(totals), with whole examples resampled (a cluster
bootstrap: the tokens of one sentence stay together).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError

RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A statistic and its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {k: round(v, 6) for k, v in asdict(self).items()}

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def verdict(difference: Interval) -> str:
    """"ahead" / "behind" when the interval of A - B excludes 0 on that side, else "tied"."""
    return "ahead" if difference.low > 0 else "behind" if difference.high < 0 else "tied"


def _as_arrays(values, totals) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InputError("intervals need a non-empty 1-D sequence of per-example values")
    totals = np.ones_like(values) if totals is None else np.asarray(totals, dtype=np.float64)
    if totals.shape != values.shape:
        raise InputError(f"totals must give one count per example: {totals.shape} for {values.shape} values")
    if totals.sum() <= 0:
        raise InputError("totals must count at least one label")
    return values, totals


def _resampled_ratios(values: np.ndarray, totals: np.ndarray, resamples: int, rng) -> np.ndarray:
    index = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    return values[index].sum(1) / np.maximum(totals[index].sum(1), 1e-300)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def mean_interval(values: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0,
                  totals: Sequence[float] | None = None) -> Interval:
    """The mean of per-example values (e.g. 0/1 correctness) and its bootstrap interval;
    with ``totals``, sum(values) / sum(totals) (correct tokens over labelled tokens)."""
    values, totals = _as_arrays(values, totals)
    low, high = _percentiles(_resampled_ratios(values, totals, resamples, np.random.default_rng(seed)), level)
    return Interval(float(values.sum() / totals.sum()), low, high)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES,
                      seed: int = 0, totals: Sequence[float] | None = None) -> Interval:
    """mean(a) - mean(b) over the same examples, resampling the examples (pairs stay together)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired_difference needs results on the same examples, got {a.shape} and {b.shape}")
    return mean_interval(a - b, level, resamples, seed, totals)


def mean_of_groups(groups: Sequence[tuple[Sequence[float], Sequence[float] | None]], level: float = 0.95,
                   resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The unweighted mean over groups (tasks) of each group's ratio, e.g. of paired differences
    ``(a - b, totals)``; every group's examples are resampled on their own (a stratified bootstrap).

    >>> mean_of_groups([(ig_mr - fisher_mr, None), (ig_pos - fisher_pos, tokens_pos)])
    """
    if not groups:
        raise InputError("mean_of_groups needs at least one group")
    rng = np.random.default_rng(seed)
    arrays = [_as_arrays(values, totals) for values, totals in groups]
    draws = np.mean([_resampled_ratios(v, t, resamples, rng) for v, t in arrays], axis=0)
    value = float(np.mean([v.sum() / t.sum() for v, t in arrays]))
    return Interval(value, *_percentiles(draws, level))
