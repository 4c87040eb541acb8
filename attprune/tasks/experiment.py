"""Prune the multi-task model per task and measure what is left: the building blocks of the
real-task benchmark (``bench/experiments/``) and of ``attprune demo``.

Every function returns plain rows (dicts) so results can be written as JSON, tabulated
and plotted.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..attribution import Scores, attribute
from ..compact import compact, mask
from ..data import correctness
from ..io import atomic_path, json_digest
from ..plan import Plan, make_plan
from ..timing import forward_latency
from .encode import accuracy, by_length, encode
from .intervals import Interval, mean_interval
from .multitask import MultiTask
from .pack import TASKS, load_task

#: methods compared in the sweeps; "random" is run with several seeds
METHODS = ("ig", "conductance", "grad_x_act", "fisher", "activation", "magnitude", "random")
SPARSITIES = (0.1, 0.3, 0.5, 0.7, 0.9)
#: attribution as the library does it by default (``AttributionConfig``)
DEFAULT_STEPS, DEFAULT_QUADRATURE = "auto", "gausslegendre"


@dataclass
class TaskRun:
    """A task's view of the multi-task model with its encoded evaluation data."""

    name: str
    model: nn.Module
    tokenizer: object
    test: list[dict]  # encoded batches, examples ordered by length (less padding)
    dense: float      # unpruned test accuracy
    model_key: str = ""  # the multi-task model's cache key (keys the score cache)
    test_key: str = ""   # digest of the test examples and their encoding (keys the evaluation cache)
    dense_outcome: "Outcome | None" = None  # the unpruned model's per-example results

    @property
    def kind(self) -> str:
        return TASKS[self.name].kind


def task_run(mt: MultiTask, name: str, max_test: int | None = None, rows: list[dict] | None = None,
             batch_size: int = 64) -> TaskRun:
    """Encode a task's test split (or ``rows``), capped at ``max_test`` examples (None: all),
    in batches of examples of similar length (the results do not depend on the order)."""
    spec = TASKS[name]
    rows = (load_task(name).test if rows is None else rows)[:max_test]
    rows = by_length(rows, mt.tokenizer, spec.kind, spec.max_length)
    test = encode(rows, mt.tokenizer, spec.kind, spec.max_length, batch_size)
    view = mt.view(name)
    test_key = json_digest([rows, spec.kind, spec.max_length, batch_size])
    correct, labelled = correctness(view, test)
    dense = Outcome(correct.numpy(), labelled.numpy())
    return TaskRun(name, view, mt.tokenizer, test, dense.accuracy, mt.config.key(), test_key, dense)


@dataclass(frozen=True)
class Outcome:
    """Per-example results of one evaluation on a task's test examples (in ``TaskRun.test`` order)."""

    correct: np.ndarray   # labels predicted right, per example
    labelled: np.ndarray  # labels per example: 1 for sequence tasks, labelled words for token tasks

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / self.labelled.sum())

    def interval(self) -> Interval:
        """The accuracy and its 95% bootstrap interval over test examples."""
        return mean_interval(self.correct, totals=self.labelled)


def evaluate(run: TaskRun, plan: Plan | None = None, cache: Path | None = None) -> Outcome:
    """The task's test results of the model pruned by ``plan`` (None: dense), evaluated on a
    compacted copy (equal to the masked model, and faster).  With ``cache`` (a folder), results
    are stored there keyed by model, test examples and plan, and reused."""
    path = None
    if cache is not None:
        key = json_digest([run.model_key, run.test_key, plan.to_dict() if plan is not None else None])
        path = Path(cache) / f"{run.name}-{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as stored:
                    return Outcome(stored["correct"], stored["labelled"])
            except (OSError, ValueError, KeyError):
                pass  # unreadable: evaluated again and overwritten
    model = run.model if plan is None else compact(copy.deepcopy(run.model), plan)
    correct, labelled = correctness(model, run.test)
    outcome = Outcome(correct.numpy(), labelled.numpy())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, correct=outcome.correct, labelled=outcome.labelled)
    return outcome


def attribution_rows(name: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` training examples of a task, a seeded draw (the first ``n`` for seed 0)."""
    rows = list(load_task(name).train)
    if seed:
        random.Random(seed).shuffle(rows)
    return rows[:n]


def score(run: TaskRun, method: str, rows: list[dict] | None, *, units=("ffn",), steps: int | str = 20,
          quadrature: str = "riemann_right", target: str = "label", seed: int = 0, batch_size: int = 16,
          cache: Path | None = None) -> tuple[Scores, float]:
    """Scores of one method on ``rows`` (None for data-free methods) and the seconds it took.

    With ``cache`` (a folder), scores are stored there keyed by model, task, method, options and
    the rows' content, and reused, also for a subset of the units: every site's scores are computed
    independently, so the FFN scores of an FFN+heads run are those of an FFN-only run. The seconds
    returned for a reused entry are those recorded when it was computed.
    """
    path = None
    if cache is not None:
        key = _score_key(run, method, rows, steps, quadrature, target, seed)
        path = Path(cache) / f"{run.name}-{method}-{key}.safetensors"
        cached = load_cached_scores(path)
        if cached is not None and set(units) <= set(cached.meta["units"]):
            sites = {p: s for p, s in cached.sites.items() if s.kind in units}
            return Scores(sites, dict(cached.meta, units=list(units))), cached.meta["seconds"]
    spec = TASKS[run.name]
    batches = None
    if rows is not None:
        batches = encode(rows, run.tokenizer, spec.kind, spec.max_length, batch_size,
                         with_labels=target == "label")
    started = time.perf_counter()
    scores = attribute(run.model, batches, units=units, method=method, steps=steps, quadrature=quadrature,
                       target=target, seed=seed, progress=False)
    seconds = time.perf_counter() - started
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Scores(scores.sites, dict(scores.meta, units=list(units), seconds=seconds)).save(path)
    return scores, seconds


def load_cached_scores(path: Path) -> Scores | None:
    """The cached scores at ``path``; None if absent or unreadable (then recomputed and overwritten)."""
    if not path.is_file():
        return None
    try:
        return Scores.load(path)
    except ValueError:
        return None


def _score_key(run: TaskRun, method: str, rows: list[dict] | None, steps: int, quadrature: str, target: str,
               seed: int) -> str:
    fields = [run.model_key, run.name, method, steps, target, seed, rows]
    if quadrature != "riemann_right":  # keys made before the option existed stay valid
        fields.append(quadrature)
    return json_digest(fields)


def masked_accuracy(run: TaskRun, scores: Scores, *, ffn: float = 0.0, heads: float = 0.0, **plan_options) -> float:
    plan = make_plan(scores, ffn=ffn, heads=heads, **plan_options)
    with mask(run.model, plan):
        return accuracy(run.model, run.test)


def sweep(run: TaskRun, scores: Scores, *, kind: str = "ffn", sparsities=SPARSITIES, cache: Path | None = None,
          **plan_options) -> list[dict]:
    """Accuracy and its 95% interval (``ci95``) at each sparsity of one unit kind (the other
    kind untouched); ``cache``: see ``evaluate``."""
    return [point_row(evaluate(run, make_plan(scores, **{kind: s}, **plan_options), cache), sparsity=s)
            for s in sparsities]


def point_row(outcome: Outcome, **fields) -> dict:
    """A result row: ``fields``, the accuracy and its 95% interval."""
    interval = outcome.interval()
    return dict(fields, accuracy=round(interval.value, 6), ci95=[round(interval.low, 6), round(interval.high, 6)])


#: the batch every compacted model is timed on: the task's first test examples, padded to a fixed length
LATENCY_BATCH, LATENCY_TOKENS = 32, 64


def latency_inputs(run: TaskRun) -> dict:
    """``LATENCY_BATCH`` test examples of the task, padded or cut to ``LATENCY_TOKENS`` tokens, so
    every task's timing runs the same shape."""
    spec = TASKS[run.name]
    rows = load_task(run.name).test[:LATENCY_BATCH]
    (batch,) = encode(rows, run.tokenizer, spec.kind, LATENCY_TOKENS, LATENCY_BATCH, with_labels=False,
                      pad_to_max_length=True)
    return batch


def compact_point(run: TaskRun, scores: Scores, *, ffn: float = 0.5, heads: float = 0.0, repeats: int = 15,
                  **plan_options) -> dict:
    """Compact a copy at one point: parameters, CPU latency vs dense (``attprune.timing``: medians
    of interleaved runs, with their interquartile range), accuracy (== masked)."""
    plan = make_plan(scores, ffn=ffn, heads=heads, **plan_options)
    with mask(run.model, plan):
        masked = accuracy(run.model, run.test)
    small = compact(copy.deepcopy(run.model), plan)
    inputs = latency_inputs(run)
    timings = forward_latency({"dense": run.model, "compact": small}, inputs, repeats=repeats)
    return {"ffn": ffn, "heads": heads, "masked_accuracy": masked, "compact_accuracy": accuracy(small, run.test),
            "params_dense": parameter_count(run.model), "params_compact": parameter_count(small),
            "dense_ms": timings["dense"].median_ms, "compact_ms": timings["compact"].median_ms,
            "latency": {name: t.to_dict() for name, t in timings.items()},
            "batch_shape": list(inputs["input_ids"].shape)}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def method_label(method: str, seed: int) -> str:
    return f"{method}#{seed}" if method == "random" else method
