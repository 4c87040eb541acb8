"""The task pack's classification tasks as prompts to an instruct LLM.

A user of an instruct model asks the question through the model's chat template and reads
the answer.  Each task has a question and one answer word per label; the model's prediction
is the label whose answer tokens are most likely after the prompt (``lm_eval.py``), and
attribution with ``target="label"`` explains the log-probability of the gold answer tokens
(the batch's ``labels`` mark exactly those tokens).

>>> task = PROMPT_TASKS["mr"]
>>> examples = encode_prompts(load_task("mr").test[:8], tokenizer, task)
>>> batches = attribution_batches(examples, tokenizer, batch_size=4)   # labels on the answers
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..batches import IGNORE_INDEX
from ..errors import InputError
from .pack import TASKS, TaskSpec


@dataclass(frozen=True)
class PromptTask:
    """A question, and one answer word per label of the pack task ``name`` (in label order)."""

    name: str
    question: str
    answers: tuple[str, ...]
    field: str = "Text"

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.name]

    def message(self, text: str) -> str:
        return f"{self.question} Answer with one word: {' or '.join(self.answers)}.\n\n{self.field}: {text}"


PROMPT_TASKS: dict[str, PromptTask] = {t.name: t for t in (
    PromptTask("mr", "Is the sentiment of this movie review negative or positive?", ("Negative", "Positive"),
               "Review"),
    PromptTask("tweets", "Is the sentiment of this tweet about self-driving cars negative, neutral or positive?",
               ("Negative", "Neutral", "Positive"), "Tweet"),
    PromptTask("bbc", "What is the topic of this news article?",
               ("Business", "Entertainment", "Politics", "Sports", "Technology"), "Article"),
    PromptTask("hedge", "Does this sentence express uncertainty or speculation?", ("No", "Yes"), "Sentence"),
    PromptTask("spam", "Is this email spam?", ("No", "Yes"), "Email"),
)}


@dataclass
class PromptExample:
    """One encoded prompt: its token ids (chat template, generation prompt included) and gold label."""

    prompt: list[int]
    label: int


def answer_ids(task: PromptTask, tokenizer) -> list[list[int]]:
    """The token ids of every answer word, as the assistant's first word (no leading space)."""
    ids = [tokenizer(a, add_special_tokens=False).input_ids for a in task.answers]
    if any(not i for i in ids):
        raise InputError(f"an answer of task {task.name!r} encodes to no tokens")
    return ids


def encode_prompts(rows: list[dict], tokenizer, task: PromptTask, max_text_tokens: int = 64) -> list[PromptExample]:
    """Rows ``{"text", "label"}`` -> prompts through the chat template, texts cut to ``max_text_tokens``."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError("the tokenizer has no chat template; prompt tasks need an instruct model's tokenizer")
    examples = []
    for row in rows:
        ids = tokenizer(row["text"], add_special_tokens=False).input_ids[:max_text_tokens]
        text = tokenizer.decode(ids).strip()
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": task.message(text)}],
                                               add_generation_prompt=True, tokenize=True)
        if hasattr(prompt, "keys"):  # newer tokenizers return a BatchEncoding
            prompt = prompt["input_ids"]
        examples.append(PromptExample(list(prompt), int(row["label"])))
    return examples


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise InputError("the tokenizer has neither a pad nor an end-of-sequence token")
    return pad


def right_padded(sequences: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of sequences padded on the right."""
    return _padded(sequences, pad, left=False)


def left_padded(sequences: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of sequences padded on the left (all end together)."""
    return _padded(sequences, pad, left=True)


def _padded(sequences: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        where = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, where] = torch.tensor(seq, dtype=torch.long)
        mask[row, where] = 1
    return ids, mask


def attribution_batches(examples: list[PromptExample], tokenizer, task: PromptTask,
                        batch_size: int = 8) -> list[dict]:
    """Prompt + gold answer, ``labels`` = the answer tokens (``IGNORE_INDEX`` elsewhere):
    ``target="label"`` then explains the log-probability of the gold answer."""
    answers = answer_ids(task, tokenizer)
    batches = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        sequences = [e.prompt + answers[e.label] for e in chunk]
        ids, mask = right_padded(sequences, pad_id(tokenizer))
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, e in enumerate(chunk):
            labels[row, len(e.prompt):len(sequences[row])] = ids[row, len(e.prompt):len(sequences[row])]
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches
