"""Task data from files: CSV / TSV / JSONL / a saved ``datasets`` folder -> tokenized batches;
the accuracy of a model on labelled batches."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .batches import IGNORE_INDEX
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


def class_ids(values: Iterable, num_labels: int, label_map: dict[str, int] | None = None,
              label2id: dict[str, int] | None = None) -> list[int]:
    """Map raw label values (ints, numeric strings, class names) to class ids in [0, num_labels)."""
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
    bad = sorted({i for i in ids if not 0 <= i < num_labels})
    if bad:
        raise InputError(f"label ids {bad[:5]} are outside [0, {num_labels}) for a model with {num_labels} "
                         "labels; map them with a label map (--label-map=-1:0,1:1)")
    return ids


def text_batches(rows: list[dict], tokenizer, *, task: str, text_column: str = "text",
                 label_column: str | None = "label", text_pair_column: str | None = None,
                 max_length: int = 128, batch_size: int = 16, num_labels: int | None = None,
                 label_map: dict[str, int] | None = None, label2id: dict[str, int] | None = None) -> list[dict]:
    """Tokenize rows into padded batches for ``task`` ("sequence", "causal" or "seq2seq").

    >>> batches = text_batches(read_rows("train.csv"), tokenizer, task="sequence", num_labels=2)
    """
    if not rows:
        raise InputError("no examples to tokenize")
    for column in (text_column, text_pair_column):
        if column is not None and column not in rows[0]:
            raise InputError(f"no column {column!r} in the data; columns: {sorted(rows[0])}")
    needs_labels = task in ("sequence", "seq2seq") and label_column is not None
    if needs_labels and label_column not in rows[0]:
        raise InputError(f"no label column {label_column!r} in the data; columns: {sorted(rows[0])} "
                         "(use --label-column, or --target prediction without labels)")
    if task == "token":
        raise InputError("token-classification data needs per-token labels: build batches in Python "
                         "(see the README) and call attprune.attribute")
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        texts = [str(r[text_column]) for r in chunk]
        pairs = [str(r[text_pair_column]) for r in chunk] if text_pair_column else None
        enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = dict(enc)
        if task == "sequence" and needs_labels:
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
