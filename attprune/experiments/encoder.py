"""Encoder tasks as pipeline subjects: one task's view of the multi-task MiniLM with its
encoded test split, and the latency of a compacted copy.

>>> subject = EncoderTask.of(mt, "hedge")
>>> subject.dense.interval()          # the unpruned view's test accuracy [95% interval]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from ..compact import compact, mask
from ..data import accuracy, correctness
from ..io import json_digest
from ..plan import Plan
from ..timing import forward_latency
from .multitask import MultiTask
from .pack import TASKS, TaskSpec, load_task
from .pipeline import Outcome, Subject, parameter_count

#: the batch every compacted model is timed on: the task's first test examples, padded to a fixed length
LATENCY_BATCH, LATENCY_TOKENS = 32, 64


@dataclass(eq=False)
class EncoderTask(Subject):
    """A task's view of the multi-task model (``MultiTask.view``) with its encoded test examples."""

    name: str
    model: nn.Module
    tokenizer: object
    test: list[dict]      # encoded batches, examples ordered by length (less padding)
    model_key: str
    test_key: str

    @classmethod
    def of(cls, mt: MultiTask, name: str, max_test: int | None = None, rows: list[dict] | None = None,
           batch_size: int = 64) -> "EncoderTask":
        """Task ``name``'s test split (or ``rows``), capped at ``max_test`` examples (None: all),
        batched by length (the results do not depend on the order)."""
        spec = TASKS[name]
        rows = (load_task(name).test if rows is None else rows)[:max_test]
        rows = spec.by_length(rows, mt.tokenizer)
        test = spec.batches(rows, mt.tokenizer, batch_size)
        test_key = json_digest([rows, spec.kind, spec.max_length, batch_size])
        return cls(name, mt.view(name), mt.tokenizer, test, mt.config.key(), test_key)

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.name]

    @property
    def kind(self) -> str:
        return self.spec.kind

    def train_rows(self) -> list[dict]:
        return list(load_task(self.name).train)

    def batches(self, rows: list[dict], *, labels: bool = True, batch_size: int = 16) -> list[dict]:
        return self.spec.batches(rows, self.tokenizer, batch_size, labels=labels)

    def measure(self, model: nn.Module) -> Outcome:
        correct, labelled = correctness(model, self.test)
        return Outcome(correct.numpy(), labelled.numpy())


def latency_inputs(subject: EncoderTask) -> dict:
    """``LATENCY_BATCH`` test examples of the task, padded or cut to ``LATENCY_TOKENS`` tokens, so
    every task's timing runs the same shape."""
    rows = load_task(subject.name).test[:LATENCY_BATCH]
    (batch,) = subject.spec.batches(rows, subject.tokenizer, LATENCY_BATCH, labels=False, max_length=LATENCY_TOKENS,
                                    pad_to_max_length=True)
    return batch


def masked_accuracy(subject: EncoderTask, plan: Plan) -> float:
    """Accuracy with the plan's units masked (hooks on the shared model; no copy)."""
    with mask(subject.model, plan):
        return accuracy(subject.model, subject.test)


def compact_point(subject: EncoderTask, plan: Plan, *, repeats: int = 15) -> dict:
    """Compact a copy at one plan: parameters, CPU latency vs dense (``attprune.timing``: medians
    of interleaved runs, with their interquartile range), accuracy (== masked)."""
    masked = masked_accuracy(subject, plan)
    small = compact(copy.deepcopy(subject.model), plan)
    inputs = latency_inputs(subject)
    timings = forward_latency({"dense": subject.model, "compact": small}, inputs, repeats=repeats)
    return {"ffn": plan.meta.get("ffn"), "heads": plan.meta.get("heads"), "masked_accuracy": masked,
            "compact_accuracy": accuracy(small, subject.test),
            "params_dense": parameter_count(subject.model), "params_compact": parameter_count(small),
            "dense_ms": timings["dense"].median_ms, "compact_ms": timings["compact"].median_ms,
            "latency": {name: t.to_dict() for name, t in timings.items()},
            "batch_shape": list(inputs["input_ids"].shape)}
