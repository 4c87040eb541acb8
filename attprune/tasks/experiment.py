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

from torch import nn

from ..attribution import Scores, attribute
from ..compact import compact, mask
from ..io import json_digest
from ..plan import make_plan
from ..timing import forward_latency
from .encode import accuracy, encode
from .multitask import MultiTask
from .pack import TASKS, load_task

#: methods compared in the sweeps; "random" is run with several seeds
METHODS = ("ig", "conductance", "grad_x_act", "fisher", "activation", "magnitude", "random")
SPARSITIES = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass
class TaskRun:
    """A task's view of the multi-task model with its encoded evaluation data."""

    name: str
    model: nn.Module
    tokenizer: object
    test: list[dict]  # encoded batches
    dense: float      # unpruned test accuracy
    model_key: str = ""  # the multi-task model's cache key (keys the score cache)

    @property
    def kind(self) -> str:
        return TASKS[self.name].kind


def task_run(mt: MultiTask, name: str, max_test: int | None = None, rows: list[dict] | None = None,
             batch_size: int = 64) -> TaskRun:
    """Encode a task's test split (or ``rows``), capped at ``max_test`` examples."""
    spec = TASKS[name]
    rows = load_task(name).test if rows is None else rows
    test = encode(rows[:max_test], mt.tokenizer, spec.kind, spec.max_length, batch_size)
    view = mt.view(name)
    return TaskRun(name, view, mt.tokenizer, test, accuracy(view, test), mt.config.key())


def attribution_rows(name: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` training examples of a task, a seeded draw (the first ``n`` for seed 0)."""
    rows = list(load_task(name).train)
    if seed:
        random.Random(seed).shuffle(rows)
    return rows[:n]


def score(run: TaskRun, method: str, rows: list[dict] | None, *, units=("ffn",), steps: int = 20,
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


def sweep(run: TaskRun, scores: Scores, *, kind: str = "ffn", sparsities=SPARSITIES, **plan_options) -> list[dict]:
    """Accuracy at each sparsity of one unit kind (the other kind untouched)."""
    return [{"sparsity": s, "accuracy": masked_accuracy(run, scores, **{kind: s}, **plan_options)}
            for s in sparsities]


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
