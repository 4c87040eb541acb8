"""Task data from files: CSV / TSV / JSONL / a saved ``datasets`` folder -> tokenized batches
(``text_batches`` for classifiers, token taggers, seq2seq and plain causal LMs;
``prompt_batches`` for an instruct LLM's prompts and answers); the accuracy of a model on
labelled batches."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .batches import CHOICES_KEY, IGNORE_INDEX, padded
from .errors import InputError, MissingFileError, missing_dependency


def read_rows(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a ``.csv``/``.tsv`` (header line), ``.jsonl``/``.json`` file or a saved datasets folder."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"data path {path} does not exist")
    if path.is_dir():
        return _read_saved_dataset(path, split)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data if isinstance(data, list) else data.get("data", [])
    else:
        raise InputError(f"unsupported data file {path.name}: use .csv, .tsv, .jsonl, .json or a saved datasets folder")
    if not rows:
        raise InputError(f"{path} holds no examples")
    return rows


def _read_saved_dataset(path: Path, split: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise missing_dependency("datasets", f"reading the saved datasets folder {path}", "datasets") from None

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            if len(data) != 1:
                raise InputError(f"{path} has splits {sorted(data)}: choose one with --split")
            split = next(iter(data))
        if split not in data:
            raise InputError(f"{path} has no split {split!r}; it has {sorted(data)}")
        data = data[split]
    rows = data.to_list()
    if not rows:
        raise InputError(f"{path} holds no examples")
    return rows


def parse_label_map(text: str | None) -> dict[str, int] | None:
    """``"-1:0,1:1"`` -> ``{"-1": 0, "1": 1}``."""
    if not text:
        return None
    mapping = {}
    for item in text.split(","):
        key, sep, value = item.rpartition(":")
        if not sep:
            raise InputError(f"bad label map entry {item!r}: use VALUE:ID pairs such as '-1:0,1:1'")
        mapping[key.strip()] = int(value)
    return mapping


def class_ids(values: Iterable, num_labels: int | None, label_map: dict[str, int] | None = None,
              label2id: dict[str, int] | None = None) -> list[int]:
    """Map raw label values (ints, numeric strings, class names) to class ids in [0, num_labels)
    (``num_labels=None``: any id >= 0)."""
    values = [str(v).strip() for v in values]
    if label_map is not None:
        missing = sorted({v for v in values if v not in label_map})
        if missing:
            raise InputError(f"label values {missing[:5]} are not in the label map")
        ids = [label_map[v] for v in values]
    elif label2id and all(v in label2id for v in values):
        ids = [label2id[v] for v in values]
    else:
        try:
            ids = [int(float(v)) for v in values]
        except ValueError:
            raise InputError(f"labels such as {values[0]!r} are not class ids; pass a label map "
                             "(--label-map=neg:0,pos:1)") from None
    bad = sorted({i for i in ids if i < 0 or (num_labels is not None and i >= num_labels)})
    if bad and num_labels is None:
        raise InputError(f"label ids {bad[:5]} are negative; map them with a label map (--label-map=-1:0,1:1)")
    if bad:
        raise InputError(f"label ids {bad[:5]} are outside [0, {num_labels}) for a model with {num_labels} "
                         "labels; map them with a label map (--label-map=-1:0,1:1)")
    return ids


def text_batches(rows: list[dict], tokenizer, *, task: str, text_column: str = "text",
                 label_column: str | None = "label", text_pair_column: str | None = None,
                 max_length: int = 128, batch_size: int = 16, num_labels: int | None = None,
                 label_map: dict[str, int] | None = None, label2id: dict[str, int] | None = None,
                 pad_to_max_length: bool = False) -> list[dict]:
    """Tokenize rows into padded batches for ``task``: "sequence" (a class per row), "token"
    (``text_column`` a list of words, ``label_column`` a tag id per word: the first sub-word of
    each word is labelled, the rest ``IGNORE_INDEX``), "seq2seq" (target text) or "causal"
    (every real token labelled). ``label_column=None``: no labels. Batches are padded to their
    longest row, or to ``max_length`` with ``pad_to_max_length``.

    >>> batches = text_batches(read_rows("train.csv"), tokenizer, task="sequence", num_labels=2)
    >>> batches = text_batches(rows, tokenizer, task="token", text_column="words", label_column="tags")
    """
    if not rows:
        raise InputError("no examples to tokenize")
    for column in (text_column, text_pair_column):
        if column is not None and column not in rows[0]:
            raise InputError(f"no column {column!r} in the data; columns: {sorted(rows[0])}")
    needs_labels = task in ("sequence", "seq2seq", "token") and label_column is not None
    if needs_labels and label_column not in rows[0]:
        raise InputError(f"no label column {label_column!r} in the data; columns: {sorted(rows[0])} "
                         "(use --label-column, or --target prediction without labels)")
    padding = "max_length" if pad_to_max_length else True
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        if task == "token":
            enc = tokenizer([list(r[text_column]) for r in chunk], is_split_into_words=True, truncation=True,
                            max_length=max_length, padding=padding, return_tensors="pt")
        else:
            texts = [str(r[text_column]) for r in chunk]
            pairs = [str(r[text_pair_column]) for r in chunk] if text_pair_column else None
            enc = tokenizer(texts, pairs, padding=padding, truncation=True, max_length=max_length,
                            return_tensors="pt")
        batch = dict(enc)
        if task == "token" and needs_labels:
            batch["labels"] = _word_labels(enc, [r[label_column] for r in chunk])
        elif task == "sequence" and needs_labels:
            batch["labels"] = torch.tensor(class_ids((r[label_column] for r in chunk), num_labels, label_map,
                                                     label2id))
        elif task == "seq2seq" and needs_labels:
            target = tokenizer(text_target=[str(r[label_column]) for r in chunk], padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt")
            batch["labels"] = target["input_ids"].masked_fill(target["attention_mask"] == 0, IGNORE_INDEX)
        elif task == "causal":
            batch["labels"] = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, IGNORE_INDEX)
        batches.append(batch)
    return batches


def _word_labels(enc, tags: list[list[int]]) -> torch.Tensor:
    """Per-token labels: each word's tag on its first sub-word, ``IGNORE_INDEX`` elsewhere."""
    labels = torch.full(enc["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
    for row, row_tags in enumerate(tags):
        previous = None
        for t, word in enumerate(enc.word_ids(row)):
            if word is not None and word != previous:
                labels[row, t] = int(row_tags[word])
            previous = word
    return labels


def chat_prompt(tokenizer, text: str, prefill: str = "", *, chat_template: bool = True) -> list[int]:
    """The token ids of a prompt: ``text`` as the user's turn through the tokenizer's chat
    template, ending with the assistant's generation prompt and ``prefill`` (the start of the
    assistant's reply); ``chat_template=False``: the text's own tokens (then the prefill's),
    without special tokens."""
    if not chat_template:
        return tokenizer(text + prefill, add_special_tokens=False).input_ids
    return tokenizer(rendered_prompt(tokenizer, text) + prefill, add_special_tokens=False).input_ids


def rendered_prompt(tokenizer, text: str) -> str:
    """``text`` as the user's turn through the tokenizer's chat template, with the generation
    prompt: the string ``chat_prompt`` tokenizes (before its prefill)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputError("the tokenizer has no chat template; pass chat_template=False (--no-chat-template) to "
                         "use the prompts as they are")
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


def answer_tokens(tokenizer, answer: str) -> list[int]:
    """The token ids of an answer as the assistant's first words (no special tokens)."""
    ids = tokenizer(str(answer), add_special_tokens=False).input_ids
    if not ids:
        raise InputError(f"the answer {answer!r} encodes to no tokens")
    return ids


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise InputError("the tokenizer has neither a pad nor an end-of-sequence token")
    return pad


def comparable(choices: list[list[int]]) -> bool:
    """Whether answers (token ids) can be told apart by their first token (the ``choices`` of a batch)."""
    return len(choices) >= 2 and len({c[0] for c in choices}) == len(choices)


def answer_batches(prompts: list[list[int]], answers: list[list[int]], pad: int, batch_size: int = 8,
                   choices: list[list[int]] | None = None) -> list[dict]:
    """Batches of prompt + answer token ids whose ``labels`` mark the answer tokens only
    (``IGNORE_INDEX`` elsewhere): ``target="label"`` then explains the log-probability of the
    answer given the prompt.  ``choices``: every answer of the task (token ids); each batch then
    holds ``choices``, [rows, answers], the first token of each, for the targets that compare the
    gold answer with the others (``"normalized"``, ``"margin"``).

    >>> answer_batches([prompt_ids], [tokenizer("Paris", add_special_tokens=False).input_ids], pad=0)
    """
    if len(prompts) != len(answers):
        raise InputError(f"{len(prompts)} prompts but {len(answers)} answers")
    firsts = None
    if choices is not None:
        if not comparable(choices):
            raise InputError("the task's answers must be 2 or more and differ in their first token to be compared "
                             "(normalized / margin targets)")
        firsts = torch.tensor([c[0] for c in choices])
    batches = []
    for start in range(0, len(prompts), batch_size):
        rows = range(start, min(start + batch_size, len(prompts)))
        sequences = [prompts[i] + answers[i] for i in rows]
        ids, mask = padded(sequences, pad)
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, i in enumerate(rows):
            end = len(prompts[i]) + len(answers[i])
            labels[row, len(prompts[i]):end] = ids[row, len(prompts[i]):end]
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if firsts is not None:
            batch[CHOICES_KEY] = firsts.expand(len(sequences), -1).clone()
        batches.append(batch)
    return batches


def prompt_batches(rows: list[dict], tokenizer, *, prompt_column: str = "prompt", answer_column: str = "answer",
                   chat_template: bool = True, batch_size: int = 8, choices: list[str] | None = None,
                   prefill_column: str | None = None) -> list[dict]:
    """An instruct LLM's task as batches: each row's prompt through the chat template (unless
    ``chat_template=False``), then its prefill (``prefill_column``: the start of the
    assistant's reply, e.g. "The sentiment of this review is"), then its answer; ``labels`` on
    the answer tokens only.
    ``choices``: the task's possible answers (default: the distinct answers of the rows, when
    there are 2 to 20 and their first tokens differ), for the ``"normalized"`` / ``"margin"``
    targets.

    >>> batches = prompt_batches(read_rows("task.jsonl"), tokenizer, prompt_column="question", answer_column="answer")
    >>> attprune.attribute(model, batches, units=("ffn",))
    """
    if not rows:
        raise InputError("no examples to tokenize")
    for column in (prompt_column, answer_column, prefill_column):
        if column is not None and column not in rows[0]:
            raise InputError(f"no column {column!r} in the data; columns: {sorted(rows[0])}")
    prompts = [chat_prompt(tokenizer, str(r[prompt_column]), str(r[prefill_column]) if prefill_column else "",
                           chat_template=chat_template) for r in rows]
    answers = [answer_tokens(tokenizer, r[answer_column]) for r in rows]
    if choices is None:
        distinct = list(dict.fromkeys(str(r[answer_column]) for r in rows))
        if len(distinct) <= 20 and comparable([answer_tokens(tokenizer, a) for a in distinct]):
            choices = distinct
    choice_ids = [answer_tokens(tokenizer, c) for c in choices] if choices is not None else None
    return answer_batches(prompts, answers, pad_id(tokenizer), batch_size, choice_ids)


@torch.no_grad()
def correctness(model: nn.Module, batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: how many of its labels the model predicts right, and how many it has
    (1 for sequence tasks; labelled tokens for token tasks), in the order of ``batches``.

    >>> correct, labelled = correctness(model, batches)
    >>> float(correct.sum() / labelled.sum())        # == accuracy(model, batches)
    """
    correct, labelled = [], []
    was_training = model.training
    model.eval()
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        predicted = model(**inputs).logits.argmax(-1)
        labels = batch["labels"]
        keep = labels != IGNORE_INDEX
        hits = (predicted == labels) & keep
        if labels.dim() > 1:  # token task: count per example
            hits, keep = hits.flatten(1).sum(1), keep.flatten(1).sum(1)
        correct.append(hits.long())
        labelled.append(keep.long())
    model.train(was_training)
    correct = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.long)
    labelled = torch.cat(labelled) if labelled else torch.zeros(0, dtype=torch.long)
    if int(labelled.sum()) == 0:
        raise InputError("no labelled examples to evaluate")
    return correct, labelled


def accuracy(model: nn.Module, batches: list[dict]) -> float:
    """Accuracy over examples (sequence tasks) or over labelled tokens (token tasks)."""
    correct, labelled = correctness(model, batches)
    return int(correct.sum()) / int(labelled.sum())
