"""95% bootstrap intervals over test examples, for one result and for a difference of two;
paired contrasts of two methods over attribution draws and tasks.

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


# -- contrasts of methods: outcomes keyed (task, units, method, draw, sparsity) ------------------

def draw_spread(rows: list[dict]) -> list[dict]:
    """Mean, spread and range over the attribution draws of every (task, units, method, sparsity)
    evaluated with more than one draw."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["task"], r["units"], r["method"], r["sparsity"]), []).append(r["accuracy"])
    out = []
    for (task, units, method, s), values in groups.items():
        if len(values) > 1:
            mean, std = float(np.mean(values)), float(np.std(values))  # population spread
            out.append(dict(task=task, units=units, method=method, sparsity=s, draws=len(values),
                            mean=round(mean, 6), std=round(std, 6), min=min(values), max=max(values)))
    return out


def contrast(outcomes: dict, tasks, units: str, first: str, second: str, s: float) -> tuple[list[dict], dict | None]:
    """``first`` minus ``second`` at sparsity ``s``, from ``outcomes`` keyed (task, units, method,
    draw, sparsity): per task and pooled over the tasks that have both.

    Each method's per-example correctness is averaged over its draws (seeds), then the difference
    is bootstrapped over the same test examples (paired; pooled: stratified by task, the mean of
    the per-task differences); ``per_draw``: the difference with the same draw, where both have it.
    Verdicts: "ahead" / "behind" when the 95% interval excludes 0, else "tied".
    """
    per_task, groups = [], []
    for task in tasks:
        a = _draw_mean(outcomes, task, units, first, s)
        b = _draw_mean(outcomes, task, units, second, s)
        if a is None or b is None:
            continue
        interval = paired_difference(a[0], b[0], totals=a[1])
        per_draw = [round(o.accuracy - outcomes[(task, units, second, k[3], s)].accuracy, 6)
                    for k, o in outcomes.items() if k[:3] == (task, units, first) and k[4] == s
                    and (task, units, second, k[3], s) in outcomes]
        per_task.append(dict(task=task, units=units, sparsity=s, first=first, second=second,
                             difference=interval.to_dict(), verdict=verdict(interval), per_draw=per_draw))
        groups.append((a[0] - b[0], a[1]))
    if not groups:
        return per_task, None
    interval = mean_of_groups(groups)
    return per_task, dict(units=units, sparsity=s, first=first, second=second, tasks=len(groups),
                          difference=interval.to_dict(), verdict=verdict(interval))


def contrasts(outcomes: dict, tasks, pairs, sparsities, units: str = "ffn") -> dict:
    """``contrast`` for every (first, second) of ``pairs`` at every sparsity: {"per_task", "pooled"}."""
    per_task, pooled = [], []
    for first, second in pairs:
        for s in sparsities:
            rows, total = contrast(outcomes, tasks, units, first, second, s)
            per_task += rows
            pooled += [total] if total else []
    return {"per_task": per_task, "pooled": pooled}


def _draw_mean(outcomes: dict, task: str, units: str, method: str, s: float):
    """(per-example correct averaged over the draws, labelled) or None if never evaluated."""
    found = [o for k, o in outcomes.items() if k[:3] == (task, units, method) and k[4] == s]
    if not found:
        return None
    return np.mean([o.correct for o in found], axis=0), found[0].labelled




# -- intervals that hold the attribution draws too: [draws, examples] matrices ------------------

def _matrix(values) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim == 1:
        m = m[None]
    if m.ndim != 2 or m.size == 0:
        raise InputError("draw intervals need a non-empty [draws, examples] matrix of per-example values")
    return m


def _two_level_means(m: np.ndarray, resamples: int, rng) -> np.ndarray:
    """Bootstrap means of ``m`` [draws, examples]: draws and examples resampled, each with replacement."""
    draws, examples = m.shape
    d = rng.integers(0, draws, size=(resamples, draws))
    e = rng.integers(0, examples, size=(resamples, examples))
    return m[d[:, :, None], e[:, None, :]].mean(axis=(1, 2))


def draws_interval(values, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mean of a [draws, examples] matrix (e.g. 0/1 correctness of each attribution draw's
    pruned model on the same test examples) and its two-level bootstrap interval: every
    resample draws the attribution draws and the test examples anew, so the interval holds the
    spread over attribution draws as well as over test examples.

    >>> draws_interval([[1, 0, 1, 1], [1, 1, 0, 1], [0, 0, 1, 1]])
    """
    m = _matrix(values)
    low, high = _percentiles(_two_level_means(m, resamples, np.random.default_rng(seed)), level)
    return Interval(float(m.mean()), low, high)


def paired_draws(a, b, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """mean(a) - mean(b) of two [draws, examples] matrices over the same test examples, draw k
    of each from the same attribution examples: the difference matrix resampled on both levels
    (a matrix of one row, e.g. a data-free method, is compared with every draw of the other)."""
    a, b = _matrix(a), _matrix(b)
    if a.shape[1] != b.shape[1]:
        raise InputError(f"paired_draws needs results on the same examples, got {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise InputError(f"paired_draws pairs draws by index: {a.shape[0]} and {b.shape[0]} draws")
    return draws_interval(a - b, level, resamples, seed)


def pooled_draws(differences: Sequence, level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = 0) -> Interval:
    """The mean over tasks of each task's mean difference ([draws, examples] each), every task
    resampled on its own on both levels (stratified by task)."""
    if not differences:
        raise InputError("pooled_draws needs at least one task")
    rng = np.random.default_rng(seed)
    matrices = [_matrix(d) for d in differences]
    means = np.mean([_two_level_means(m, resamples, rng) for m in matrices], axis=0)
    return Interval(float(np.mean([m.mean() for m in matrices])), *_percentiles(means, level))
