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

from ..data import answer_batches, answer_tokens, chat_prompt, comparable, pad_id
from ..errors import InputError
from .pack import TASKS, TaskSpec


@dataclass(frozen=True)
class PromptTemplate:
    """How a pack task is asked: a question, and one answer word per label of the pack task
    ``name`` (in label order)."""

    name: str
    question: str
    answers: tuple[str, ...]
    field: str = "Text"

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.name]

    def message(self, text: str) -> str:
        return f"{self.question} Answer with one word: {' or '.join(self.answers)}.\n\n{self.field}: {text}"


PROMPT_TASKS: dict[str, PromptTemplate] = {t.name: t for t in (
    PromptTemplate("mr", "Is the sentiment of this movie review negative or positive?", ("Negative", "Positive"),
                   "Review"),
    PromptTemplate("tweets", "Is the sentiment of this tweet about self-driving cars negative, neutral or positive?",
                   ("Negative", "Neutral", "Positive"), "Tweet"),
    PromptTemplate("bbc", "What is the topic of this news article?",
                   ("Business", "Entertainment", "Politics", "Sports", "Technology"), "Article"),
    PromptTemplate("hedge", "Does this sentence express uncertainty or speculation?", ("No", "Yes"), "Sentence"),
    PromptTemplate("spam", "Is this email spam?", ("No", "Yes"), "Email"),
)}


@dataclass
class PromptExample:
    """One encoded prompt: its token ids (chat template, generation prompt included) and gold label."""

    prompt: list[int]
    label: int


def answer_ids(task: PromptTemplate, tokenizer) -> list[list[int]]:
    """The token ids of every answer word, as the assistant's first word (no leading space)."""
    return [answer_tokens(tokenizer, a) for a in task.answers]


def encode_prompts(rows: list[dict], tokenizer, task: PromptTemplate, max_text_tokens: int = 64) -> list[PromptExample]:
    """Rows ``{"text", "label"}`` -> prompts through the chat template, texts cut to ``max_text_tokens``."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError("the tokenizer has no chat template; prompt tasks need an instruct model's tokenizer")
    examples = []
    for row in rows:
        ids = tokenizer(row["text"], add_special_tokens=False).input_ids[:max_text_tokens]
        text = tokenizer.decode(ids).strip()
        examples.append(PromptExample(chat_prompt(tokenizer, task.message(text)), int(row["label"])))
    return examples


def attribution_batches(examples: list[PromptExample], tokenizer, task: PromptTemplate,
                        batch_size: int = 8) -> list[dict]:
    """Prompt + gold answer, ``labels`` = the answer tokens (``attprune.data.answer_batches``):
    ``target="label"`` then explains the log-probability of the gold answer; every batch also
    holds the task's answer choices when their first tokens differ."""
    answers = answer_ids(task, tokenizer)
    return answer_batches([e.prompt for e in examples], [answers[e.label] for e in examples], pad_id(tokenizer),
                          batch_size, choices=answers if comparable(answers) else None)
