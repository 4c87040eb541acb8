"""Prompt tasks on a decoder LLM as pipeline subjects: a causal LM with one prompt task's
encoded test prompts, its calibration prompts and held-out text windows for perplexity.

>>> subject = LLMTask.of(model, tokenizer, "bbc", max_test=300)
>>> scores, seconds = pipeline.score(subject, "ig", n=32, draw=0, units=("ffn",), steps=4)
>>> pipeline.evaluate(subject, make_plan(scores, ffn=0.3)).interval()
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import pad_id
from ..errors import InputError
from ..io import json_digest, tensors_digest
from .answers import accuracy_per_example, text_windows, window_nll, with_cache
from .pack import load_task
from .pipeline import Outcome, Subject
from .prompts import PROMPT_TASKS, PromptExample, PromptTemplate, answer_ids, attribution_batches, encode_prompts

#: held-out plain text for perplexity: the BBC task's dev-split articles (used by no prompt run)
PERPLEXITY_TEXT = ("bbc", "dev")


@dataclass(eq=False)
class LLMTask(Subject):
    """One prompt task on one causal LM: encoded test prompts and perplexity windows."""

    name: str
    template: PromptTemplate
    model: nn.Module
    tokenizer: object
    test: list[PromptExample]
    calibration: list[PromptExample]  # the template's calibration prompts (training rows)
    windows: torch.Tensor            # [n, tokens] perplexity windows
    max_text_tokens: int
    model_key: str
    test_key: str

    @classmethod
    def of(cls, model: nn.Module, tokenizer, name: str, *, max_test: int = 300, max_text_tokens: int = 64,
           n_windows: int = 16, split: str = "test") -> "LLMTask":
        """Encode ``max_test`` prompts of task ``name``'s ``split`` and ``n_windows`` text windows."""
        if name not in PROMPT_TASKS:
            raise InputError(f"unknown prompt task {name!r}; choose one of {', '.join(PROMPT_TASKS)}")
        template = PROMPT_TASKS[name]
        test = encode_prompts(template.rows(split)[:max_test], tokenizer, template, max_text_tokens)
        calibration = encode_prompts(template.calibration_rows(), tokenizer, template, max_text_tokens)
        windows = perplexity_windows(tokenizer, n_windows=n_windows)
        test_key = json_digest([[e.prompt for e in test], [e.label for e in test], [e.prompt for e in calibration],
                                windows.tolist(), answer_ids(template, tokenizer)])
        return cls(name, template, model, tokenizer, test, calibration, windows, max_text_tokens,
                   tensors_digest(model.named_parameters())[:16], test_key)

    @property
    def answers(self) -> list[list[int]]:
        return answer_ids(self.template, self.tokenizer)

    @property
    def chance(self) -> float:
        """The majority label's share of the test prompts (what a constant answer scores)."""
        labels = [e.label for e in self.test]
        return max(labels.count(k) for k in set(labels)) / len(labels)

    def train_rows(self) -> list[dict]:
        return self.template.rows("train")

    def batches(self, rows: list[dict], *, labels: bool = True, batch_size: int = 4) -> list[dict]:
        examples = encode_prompts(rows, self.tokenizer, self.template, self.max_text_tokens)
        return attribution_batches(examples, self.tokenizer, self.template, batch_size)

    def measure(self, model: nn.Module) -> Outcome:
        correct = accuracy_per_example(model, self.test, self.answers, pad_id(self.tokenizer),
                                       calibration=self.calibration)
        nll = window_nll(model, self.windows)
        return Outcome(np.asarray(correct), np.ones(len(correct), dtype=np.int64), nll.numpy())


def perplexity_windows(tokenizer, window: int = 128, n_windows: int = 16) -> torch.Tensor:
    task, split = PERPLEXITY_TEXT
    return text_windows([r["text"] for r in getattr(load_task(task), split)], tokenizer, window, n_windows)


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
