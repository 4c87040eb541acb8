"""The one experiment pipeline: score (cached, per attribution draw), plan, compact, evaluate
(cached), for encoder tasks and decoder-LLM prompt tasks alike.

A ``Subject`` is one task on one model: its training rows (attribution examples are drawn
from them), how rows become attribution batches, and how a model is measured on the test
examples (``Outcome``: per-example results, so that every comparison is paired).  The
multi-task MiniLM's tasks (``encoder.EncoderTask``) and SmolLM2's prompt tasks
(``llm.PromptTask``) are the two kinds; every experiment and both demos run through the
functions below.

>>> subject = encoder.EncoderTask.of(mt, "mr")            # or llm.PromptTask.of(model, tokenizer, "bbc")
>>> scores, seconds = score(subject, "ig", n=32, draw=1, cache=folder)
>>> outcome = evaluate(subject, make_plan(scores, ffn=0.3), cache=folder)
>>> outcome.interval()                                     # accuracy [95% bootstrap interval]

Scores are cached keyed by the model, the task, the method, its settings and the examples'
content; outcomes keyed by the model, the test examples and the plan: an interrupted
experiment resumes where it stopped, and experiments share what they computed.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..attribution import AttributionConfig, Scores, attribute, input_means
from ..compact import compact
from ..io import atomic_path, json_digest, tensors_digest
from ..plan import Plan, make_plan
from ..sites import UNIT_KINDS
from .stats import Interval, mean_interval


@dataclass(frozen=True)
class Outcome:
    """A model's results on a subject's test examples (in the subject's order).

    correct: labels predicted right, per example; labelled: labels per example (1 for sequence
    and prompt tasks, labelled words for token tasks); nll: the mean negative log-likelihood of
    each held-out text window (language models; empty otherwise).
    """

    correct: np.ndarray
    labelled: np.ndarray
    nll: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / self.labelled.sum())

    @property
    def perplexity(self) -> float | None:
        return float(np.exp(self.nll.mean())) if self.nll.size else None

    def interval(self) -> Interval:
        """The accuracy and its 95% bootstrap interval over test examples."""
        return mean_interval(self.correct, totals=self.labelled)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, correct=self.correct, labelled=self.labelled, nll=self.nll)

    @classmethod
    def load(cls, path: Path) -> "Outcome | None":
        """The outcome stored at ``path``; None when absent or unreadable (then evaluated again)."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return cls(stored["correct"], stored["labelled"], stored["nll"] if "nll" in stored else np.zeros(0))
        except (OSError, ValueError, KeyError):
            return None


class Subject:
    """One task on one model: what the pipeline scores and evaluates.

    Attributes set by subclasses: ``name`` (the task), ``model``, ``model_key`` (a digest of the
    weights; keys both caches) and ``test_key`` (a digest of the test examples and their
    encoding; keys the outcomes).
    """

    name: str
    model: nn.Module
    model_key: str
    test_key: str
    _dense: Outcome | None = None

    def train_rows(self) -> list[dict]:
        """The task's training rows, in their fixed order (draws take from these)."""
        raise NotImplementedError

    def batches(self, rows: list[dict], *, labels: bool = True) -> list[dict]:
        """Rows as attribution batches (``labels=False``: for ``target="prediction"``)."""
        raise NotImplementedError

    def measure(self, model: nn.Module) -> Outcome:
        """``model``'s results on the test examples."""
        raise NotImplementedError

    @property
    def dense(self) -> Outcome:
        """The unpruned model's results (measured once; ``evaluate(subject, cache=...)`` caches them)."""
        return evaluate(self)


def draw_rows(rows: list[dict], n: int, draw: int = 0) -> list[dict]:
    """``n`` rows, a seeded draw: the first ``n`` for draw 0, a seeded shuffle's first ``n`` otherwise."""
    rows = list(rows)
    if draw:
        random.Random(draw).shuffle(rows)
    return rows[:n]


def attribution_rows(subject: Subject, n: int, draw: int = 0) -> list[dict]:
    """The ``n`` training rows of attribution draw ``draw``."""
    return draw_rows(subject.train_rows(), n, draw)


def score(subject: Subject, method: str, *, n: int | None = 32, draw: int = 0, rows: list[dict] | None = None,
          units: tuple[str, ...] = UNIT_KINDS, cache: Path | None = None, progress: bool = False,
          batch_size: int | None = None, **settings) -> tuple[Scores, float]:
    """A method's scores and the seconds they took, from attribution draw ``draw`` of ``n``
    training rows (or the given ``rows``; ``n=None``: no data, for the data-free methods).

    ``settings`` go to ``attprune.attribute``.  With ``cache`` (a folder) scores are stored
    there keyed by the model, the task, the method, the settings and the rows' content, and
    reused, also for a subset of the units (every site is scored independently, so the FFN
    scores of an FFN + heads run are those of an FFN-only run); the seconds returned for a
    reused entry are those recorded when it was computed.
    """
    if rows is None and n is not None:
        rows = attribution_rows(subject, n, draw)
    target = settings.get("target", "label")
    path = None
    if cache is not None:
        key = json_digest([subject.model_key, subject.name, method, resolved_settings(subject, method, settings), rows])
        path = Path(cache) / f"{subject.name}-{method}-{key}.safetensors"
        cached = _cached_scores(path, units)
        if cached is not None:
            return cached, cached.meta["seconds"]
    batches = None
    if rows is not None:
        options = {} if batch_size is None else {"batch_size": batch_size}
        batches = subject.batches(rows, labels=not isinstance(target, str) or target != "prediction", **options)
    started = time.perf_counter()
    scores = attribute(subject.model, batches, method=method, units=units, progress=progress, **settings)
    seconds = time.perf_counter() - started
    scores = Scores(scores.sites, dict(scores.meta, units=list(units), seconds=seconds), scores.input_means)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        scores.save(path)
    return scores, seconds


def site_means(subject: Subject, *, n: int = 32, draw: int = 0, cache: Path | None = None) -> dict[str, torch.Tensor]:
    """Every site's mean input over attribution draw ``draw`` of ``n`` training rows
    (``attprune.input_means``), cached in ``cache`` beside the scores: what compaction's
    compensation folds into the biases."""
    rows = attribution_rows(subject, n, draw)
    path = None
    if cache is not None:
        path = Path(cache) / f"{subject.name}-means-{json_digest([subject.model_key, subject.name, rows])}.safetensors"
        if path.is_file():
            return load_file(str(path))
    means = input_means(subject.model, subject.batches(rows))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({p: m.contiguous() for p, m in means.items()}, str(tmp))
    return means


def resolved_settings(subject: Subject, method: str, settings: dict) -> list:
    """What decides a method's scores on the subject's model: the settings with the model kind's
    recipe filling the rest (``AttributionConfig.for_model``), as they key the score cache (so a
    setting given explicitly and the same value from the recipe share an entry)."""
    config = AttributionConfig.build(None, dict(settings, method=method)).for_model(subject.model)
    return sorted((k, v) for k, v in config.result_settings().items() if k != "units")


def _cached_scores(path: Path, units: tuple[str, ...]) -> Scores | None:
    """The cached scores of ``units`` at ``path``; None if absent, unreadable or without them."""
    if not path.is_file():
        return None
    try:
        cached = Scores.load(path)
    except ValueError:
        return None
    if not set(units) <= set(cached.meta.get("units", ())):
        return None
    sites = {p: s for p, s in cached.sites.items() if s.kind in units}
    means = {p: m for p, m in (cached.input_means or {}).items() if p in sites}
    return Scores(sites, dict(cached.meta, units=list(units)), means or None)


def pruned_copy(subject: Subject, plan: Plan, **compact_options) -> nn.Module:
    """A compacted copy of the subject's model (the original is untouched)."""
    return compact(copy.deepcopy(subject.model), plan, **compact_options)


def evaluate(subject: Subject, plan: Plan | None = None, *, cache: Path | None = None,
             compensate: dict[str, torch.Tensor] | None = None) -> Outcome:
    """The subject's test results of its model pruned by ``plan`` (None: the dense model),
    measured on a compacted copy (equal to the masked model, and faster); ``compensate``: the
    site input means whose removed part compaction folds into the biases (``attprune.compact``).
    With ``cache`` (a folder), results are stored there keyed by the model, the test examples,
    the units the plan keeps and the means, and reused."""
    if plan is None and subject._dense is not None:
        return subject._dense
    path = None
    if cache is not None:
        means = None if compensate is None else tensors_digest(sorted(compensate.items()))
        kept = None if plan is None else {k: v for k, v in plan.to_dict().items() if k != "meta"}  # units decide
        key = json_digest([subject.model_key, subject.test_key, kept] + ([means] if means else []))
        path = Path(cache) / f"{subject.name}-{key}.npz"
        outcome = Outcome.load(path)
    if path is None or outcome is None:
        options = {} if compensate is None else {"compensate": compensate}
        with torch.no_grad():
            outcome = subject.measure(subject.model if plan is None else pruned_copy(subject, plan, **options))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            outcome.save(path)
    if plan is None:
        subject._dense = outcome
    return outcome


def sweep(subject: Subject, scores: Scores, *, kind: str = "ffn", sparsities=(0.1, 0.3, 0.5, 0.7, 0.9),
          cache: Path | None = None, **plan_options) -> list[dict]:
    """Accuracy and its 95% interval (``ci95``) at each sparsity of one unit kind (the other
    kind untouched); ``plan_options`` go to ``make_plan``."""
    return [point_row(evaluate(subject, make_plan(scores, **{kind: s}, **plan_options), cache=cache), sparsity=s)
            for s in sparsities]


def point_row(outcome: Outcome, **fields) -> dict:
    """A result row: ``fields``, the accuracy and its 95% interval (and perplexity, for LMs)."""
    interval = outcome.interval()
    row = dict(fields, accuracy=round(interval.value, 6), ci95=[round(interval.low, 6), round(interval.high, 6)])
    if outcome.perplexity is not None:
        row["perplexity"] = round(outcome.perplexity, 4)
    return row


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
