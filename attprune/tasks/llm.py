"""Task-specific pruning of a decoder LLM on prompt tasks: the building blocks of
``bench/experiments/llm_pruning.py`` and of ``attprune demo --llm``.

A ``PromptRun`` holds a causal LM with one prompt task's encoded test prompts, its dense
per-example correctness and the perplexity windows; ``score`` computes (and caches) a
method's scores on training prompts; ``evaluate`` prunes by a plan, compacts a copy and
measures accuracy (with a 95% bootstrap interval) and perplexity there.

>>> run = prompt_run(model, tokenizer, "mr", max_test=300)
>>> scores, seconds = score(run, "ig", n_examples=32, cache=folder)
>>> evaluate(run, make_plan(scores, ffn=0.3))["accuracy"]
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..attribution import Scores, attribute
from ..compact import compact
from ..errors import InputError
from ..io import json_digest, tensors_digest
from ..plan import Plan
from .experiment import load_cached_scores, parameter_count
from .intervals import mean_interval
from .lm_eval import accuracy_per_example, text_windows, window_nll, with_cache
from .pack import load_task
from .prompts import PROMPT_TASKS, PromptExample, PromptTask, answer_ids, attribution_batches, encode_prompts, pad_id

#: held-out plain text for perplexity: the BBC task's dev-split articles (used by no prompt run)
PERPLEXITY_TEXT = ("bbc", "dev")


@dataclass
class PromptRun:
    """One prompt task on one causal LM: encoded test prompts and the dense model's results."""

    name: str
    task: PromptTask
    model: nn.Module
    tokenizer: object
    test: list[PromptExample]
    windows: torch.Tensor            # [n, tokens] perplexity windows
    max_text_tokens: int
    dense: dict = field(default_factory=dict)  # evaluate() of the dense model
    model_key: str = ""

    @property
    def answers(self) -> list[list[int]]:
        return answer_ids(self.task, self.tokenizer)

    @property
    def chance(self) -> float:
        """The majority label's share of the test prompts (what a constant answer scores)."""
        labels = [e.label for e in self.test]
        return max(labels.count(k) for k in set(labels)) / len(labels)


def perplexity_windows(tokenizer, window: int = 128, n_windows: int = 32) -> torch.Tensor:
    task, split = PERPLEXITY_TEXT
    return text_windows([r["text"] for r in getattr(load_task(task), split)], tokenizer, window, n_windows)


def prompt_run(model: nn.Module, tokenizer, name: str, *, max_test: int = 300, max_text_tokens: int = 64,
               n_windows: int = 32, dense: dict | None = None) -> PromptRun:
    """Encode ``max_test`` test prompts of task ``name`` and evaluate the dense model (or take
    ``dense``, a ``measure`` result recorded before)."""
    if name not in PROMPT_TASKS:
        raise InputError(f"unknown prompt task {name!r}; choose one of {', '.join(PROMPT_TASKS)}")
    task = PROMPT_TASKS[name]
    test = encode_prompts(load_task(name).test[:max_test], tokenizer, task, max_text_tokens)
    run = PromptRun(name, task, model, tokenizer, test, perplexity_windows(tokenizer, n_windows=n_windows),
                    max_text_tokens, model_key=tensors_digest(model.named_parameters())[:16])
    run.dense = measure(run, model) if dense is None else dense
    return run


def measure(run: PromptRun, model: nn.Module) -> dict:
    """Accuracy on the test prompts (per example and with its interval) and perplexity."""
    correct = accuracy_per_example(model, run.test, run.answers, pad_id(run.tokenizer))
    nll = window_nll(model, run.windows)
    return {"correct": correct, "accuracy": mean_interval(correct), "perplexity": float(nll.mean().exp()),
            "window_nll": nll.tolist()}


def attribution_examples(run: PromptRun, n: int) -> list[PromptExample]:
    """The first ``n`` training prompts of the task (disjoint from the test prompts)."""
    return encode_prompts(load_task(run.name).train[:n], run.tokenizer, run.task, run.max_text_tokens)


def score(run: PromptRun, method: str, *, n_examples: int = 32, batch_size: int = 4, cache: Path | None = None,
          progress: bool = False, **settings) -> tuple[Scores, float]:
    """A method's scores from ``n_examples`` training prompts (gold answers as targets), and the
    seconds they took; cached in ``cache`` keyed by model, task, method, settings and prompts."""
    examples = attribution_examples(run, n_examples)
    path = None
    if cache is not None:
        key = json_digest([run.model_key, run.name, method, sorted(settings.items()), [e.prompt for e in examples]])
        path = Path(cache) / f"{run.name}-{method}-{key}.safetensors"
        cached = load_cached_scores(path)
        if cached is not None:
            return cached, cached.meta["seconds"]
    batches = attribution_batches(examples, run.tokenizer, run.task, batch_size)
    started = time.perf_counter()
    scores = attribute(run.model, batches, method=method, progress=progress, **settings)
    seconds = time.perf_counter() - started
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Scores(scores.sites, dict(scores.meta, seconds=seconds)).save(path)
    return scores, seconds


def pruned_copy(run: PromptRun, plan: Plan) -> nn.Module:
    """A compacted copy of the run's model (the original is untouched)."""
    return compact(copy.deepcopy(run.model), plan)


def evaluate(run: PromptRun, plan: Plan) -> dict:
    """``measure`` of the compacted model of ``plan``, plus its parameter count."""
    small = pruned_copy(run, plan)
    out = measure(run, small)
    out["params"] = parameter_count(small)
    return out


@torch.inference_mode()
def decode_tokens_per_second(model: nn.Module, prompt: torch.Tensor, new_tokens: int = 32,
                             repeats: int = 3) -> float:
    """Greedy decoding with the KV cache after ``prompt`` ([batch, tokens]): median tokens/s
    (per sequence) over ``repeats``, prefill excluded."""
    rates = []
    for _ in range(repeats):
        out = model(input_ids=prompt, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        started = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=token, **with_cache(model, cache))
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        rates.append(new_tokens / (time.perf_counter() - started))
    return sorted(rates)[len(rates) // 2]
