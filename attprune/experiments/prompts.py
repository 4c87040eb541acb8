"""The task pack's classification tasks as prompts to an instruct LLM.

A user of an instruct model asks the question through the model's chat template and reads
the answer.  Each task's template has the user's message (the question and the text), the
start of the assistant's reply (``prefill``: "The sentiment of this review is") and one answer
per label, each a single token (" negative", " positive"): the model's prediction is the
answer it finds most likely after the prompt, its probabilities renormalised over the answers
and divided by their mean over a fixed set of label-balanced training prompts (calibration:
Zhao et al. 2021, with real prompts in place of content-free ones; recomputed for every
model, a pruned one too).  Attribution with ``target="label"`` explains the log-probability
of the gold answer token (the batch's ``labels`` mark exactly that token; ``choices`` holds
every answer, for ``target="normalized"`` / ``"margin"``).

The templates were chosen on the dev splits of the pack (``bench/README.md``, "A real decoder LLM"):
zero-shot, the question before the text, texts cut to 64 tokens; few-shot demonstrations,
content-free calibration and multi-token answer words did worse there.

>>> template = PROMPT_TASKS["mr"]
>>> examples = encode_prompts(template.rows("test")[:8], tokenizer, template)
>>> batches = attribution_batches(examples, tokenizer, template, batch_size=4)   # labels on the answers
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ..data import answer_batches, answer_tokens, chat_prompt, comparable, pad_id
from ..errors import InputError
from .pack import POS_TAGS, load_task


def _pack_rows(name: str) -> Callable[[str], list[dict]]:
    return lambda split: list(getattr(load_task(name), split))


@dataclass(frozen=True)
class PromptTemplate:
    """How a task is asked.

    name: the prompt task; question / prefill: the user's message and the start of the
    assistant's reply, formatted with the row's fields (``{text}``, and the noun/verb task's
    ``{word}``); answers: one per label, in label order; calibration: how many label-balanced
    training prompts calibrate the answer scores (0: none); rows: ``split -> rows`` (default:
    the pack task of the same name).
    """

    name: str
    question: str
    prefill: str
    answers: tuple[str, ...]
    calibration: int = 32
    source: Callable[[str], list[dict]] | None = None

    def rows(self, split: str) -> list[dict]:
        """The task's rows of a split (``"train"``, ``"dev"`` or ``"test"``), in their fixed order."""
        return (self.source or _pack_rows(self.name))(split)

    def calibration_rows(self) -> list[dict]:
        """The training rows whose prompts calibrate the answer scores: ``calibration`` of them,
        label-balanced, a seeded draw (their labels choose them, nothing else reads them)."""
        if not self.calibration:
            return []
        return balanced_rows(self.rows("train"), self.calibration // len(self.answers), len(self.answers))


def balanced_rows(rows: list[dict], per_label: int, n_labels: int, seed: int = 1) -> list[dict]:
    """``per_label`` rows of each label: the first of each in a seeded shuffle, in a seeded order."""
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    picked: dict[int, list[int]] = {k: [] for k in range(n_labels)}
    for i in order:
        if len(picked[rows[i]["label"]]) < per_label:
            picked[rows[i]["label"]].append(i)
    chosen = [i for k in range(n_labels) for i in picked[k]]
    rng.shuffle(chosen)
    return [rows[i] for i in chosen]


# -- noun or verb: a task derived from the pack's tagged WSJ sentences ------------------------

NOUN_TAGS, VERB_TAGS = {"NN", "NNS"}, {"VB", "VBD", "VBP", "VBZ"}
AUXILIARIES = {"is", "was", "are", "were", "be", "been", "am", "has", "have", "had", "do", "does", "did", "being",
               "having"}
_DETOKENIZE = ((" ,", ","), (" .", "."), (" 's", "'s"), (" n't", "n't"), ("`` ", '"'), (" ''", '"'), (" ;", ";"),
               (" :", ":"), ("-LRB- ", "("), (" -RRB-", ")"), (" %", "%"), ("$ ", "$"), (" 're", "'re"),
               (" 've", "'ve"), (" 'll", "'ll"), (" 'd", "'d"), (" 'm", "'m"), (" ?", "?"), (" !", "!"))


def detokenize(words: list[str]) -> str:
    """Penn Treebank tokens as readable text (no space before punctuation and clitics)."""
    text = " ".join(words)
    for a, b in _DETOKENIZE:
        text = text.replace(a, b)
    return text


def noun_verb_rows(sentences: list[dict], seed: int = 0, max_words: int = 40) -> list[dict]:
    """Two rows per tagged sentence (cut to ``max_words``): one word tagged as a noun (NN, NNS),
    label 0, and one as a verb (VB, VBD, VBP, VBZ; not a form of be / have / do), label 1, each a
    seeded choice among the alphabetic words of 3+ letters that occur once in the sentence, in a
    seeded order; sentences without both are skipped."""
    rng = random.Random(seed)
    out = []
    for sentence in sentences:
        words = sentence["words"][:max_words]
        tags = [POS_TAGS[t] if t >= 0 else None for t in sentence["tags"][:max_words]]
        lower = [w.lower() for w in words]

        def usable(w):
            return w.isalpha() and len(w) >= 3 and lower.count(w.lower()) == 1
        nouns = [w for w, t in zip(words, tags) if t in NOUN_TAGS and usable(w)]
        verbs = [w for w, t in zip(words, tags) if t in VERB_TAGS and usable(w) and w.lower() not in AUXILIARIES]
        if nouns and verbs:
            text = detokenize(words)
            pair = [{"text": text, "word": rng.choice(nouns), "label": 0},
                    {"text": text, "word": rng.choice(verbs), "label": 1}]
            rng.shuffle(pair)
            out += pair
    return out


PROMPT_TASKS: dict[str, PromptTemplate] = {t.name: t for t in (
    PromptTemplate("mr", "Is the sentiment of this movie review positive or negative?\n\nReview: {text}",
                   "The sentiment of this review is", (" negative", " positive")),
    PromptTemplate("bbc", "What is the topic of this news article: business, entertainment, politics, sport or "
                          "technology?\n\nArticle: {text}", "The topic of this article is",
                   (" business", " entertainment", " politics", " sport", " technology"), calibration=50),
    PromptTemplate("nounverb", 'Sentence: {text}\n\nIn this sentence, is the word "{word}" a noun or a verb?',
                   'In this sentence, "{word}" is a', (" noun", " verb"),
                   source=lambda split: noun_verb_rows(getattr(load_task("pos"), split))),
    PromptTemplate("tweets", "Is the sentiment of this tweet negative, neutral or positive?\n\nTweet: {text}",
                   "The sentiment of this tweet is", (" negative", " neutral", " positive"), calibration=30),
    PromptTemplate("hedge", "Does this sentence state something as certain or as uncertain?\n\nSentence: {text}",
                   "The sentence states it as", (" certain", " uncertain")),
    PromptTemplate("spam", "Is this email spam or a normal message?\n\nEmail: {text}", "This email is",
                   (" normal", " spam"), calibration=16),
)}


@dataclass
class PromptExample:
    """One encoded prompt (chat template, generation prompt and prefill) and its gold label."""

    prompt: list[int]
    label: int


def answer_ids(task: PromptTemplate, tokenizer) -> list[list[int]]:
    """The token ids of every answer (each one token for the built-in templates)."""
    return [answer_tokens(tokenizer, a) for a in task.answers]


def message(task: PromptTemplate, row: dict, tokenizer, max_text_tokens: int = 64) -> tuple[str, str]:
    """(the user's message, the assistant's prefill) of a row, its text cut to ``max_text_tokens``."""
    ids = tokenizer(row["text"], add_special_tokens=False).input_ids[:max_text_tokens]
    fields = dict(row, text=tokenizer.decode(ids).strip())
    return task.question.format(**fields), task.prefill.format(**fields)


def encode_prompts(rows: list[dict], tokenizer, task: PromptTemplate, max_text_tokens: int = 64) -> list[PromptExample]:
    """Rows -> prompts: the user's message through the chat template, then the prefill."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError("the tokenizer has no chat template; prompt tasks need an instruct model's tokenizer")
    return [PromptExample(chat_prompt(tokenizer, *message(task, row, tokenizer, max_text_tokens)), int(row["label"]))
            for row in rows]


def attribution_batches(examples: list[PromptExample], tokenizer, task: PromptTemplate,
                        batch_size: int = 8) -> list[dict]:
    """Prompt + gold answer, ``labels`` = the answer tokens (``attprune.data.answer_batches``):
    ``target="label"`` then explains the log-probability of the gold answer; every batch also
    holds the task's answer choices when their first tokens differ."""
    answers = answer_ids(task, tokenizer)
    return answer_batches([e.prompt for e in examples], [answers[e.label] for e in examples], pad_id(tokenizer),
                          batch_size, choices=answers if comparable(answers) else None)
