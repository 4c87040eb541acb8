"""95% bootstrap intervals over test examples, for one result and for a difference of two.

>>> mean_interval([1, 0, 1, 1])                        # accuracy from per-example correctness
Interval(value=0.75, low=0.25, high=1.0)
>>> paired_difference(correct_a, correct_b).excludes_zero()   # "A beats B" only when True
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


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    index = rng.integers(0, values.shape[0], size=(resamples, values.shape[0]))
    return values[index].mean(1)


def mean_interval(values: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES,
                  seed: int = 0) -> Interval:
    """The mean of per-example values (e.g. 0/1 correctness) and its bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise InputError("mean_interval needs a non-empty 1-D sequence of per-example values")
    if not 0 < level < 1:
        raise InputError(f"level must be in (0, 1), got {level}")
    means = _resampled_means(values, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(values.mean()), float(low), float(high))


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = RESAMPLES,
                      seed: int = 0) -> Interval:
    """mean(a) - mean(b) over the same examples, resampling the examples (pairs stay together)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"paired_difference needs results on the same examples, got {a.shape} and {b.shape}")
    return mean_interval(a - b, level, resamples, seed)
