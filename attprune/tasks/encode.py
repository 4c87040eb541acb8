"""Task rows -> padded, labelled batches (``accuracy`` lives in ``attprune.data``)."""

from __future__ import annotations

import torch

from ..batches import IGNORE_INDEX
from ..data import accuracy  # noqa: F401  (re-exported: the tasks' evaluation)


def encode(rows: list[dict], tokenizer, kind: str, max_length: int, batch_size: int = 32,
           with_labels: bool = True, pad_to_max_length: bool = False) -> list[dict]:
    """Sequence rows ``{"text", "label"}`` or token rows ``{"words", "tags"}`` -> batches.

    Token tasks label the first sub-word of every word; the rest (and padding) get ``IGNORE_INDEX``.
    Batches are padded to their longest example, or to ``max_length`` with ``pad_to_max_length``.
    """
    padding = "max_length" if pad_to_max_length else True
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        if kind == "token":
            enc = tokenizer([r["words"] for r in chunk], is_split_into_words=True, truncation=True,
                            max_length=max_length, padding=padding, return_tensors="pt")
            labels = torch.full(enc["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
            for b, row in enumerate(chunk):
                previous = None
                for t, word in enumerate(enc.word_ids(b)):
                    if word is not None and word != previous:
                        labels[b, t] = row["tags"][word]
                    previous = word
        else:
            enc = tokenizer([r["text"] for r in chunk], truncation=True, max_length=max_length, padding=padding,
                            return_tensors="pt")
            labels = torch.tensor([r["label"] for r in chunk])
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if "token_type_ids" in enc:
            batch["token_type_ids"] = enc["token_type_ids"]
        if with_labels:
            batch["labels"] = labels
        batches.append(batch)
    return batches


def by_length(rows: list[dict], tokenizer, kind: str, max_length: int) -> list[dict]:
    """``rows`` ordered by their length in tokens (stable), so that batches need little padding."""
    if kind == "token":
        lengths = [len(r["words"]) for r in rows]
    else:
        encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
    return [rows[i] for i in sorted(range(len(rows)), key=lengths.__getitem__)]
