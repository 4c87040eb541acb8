"""What attprune takes as a batch: a dict of tensors, as the model's forward takes them.

``labels`` holds class ids (sequence classification), per-token ids (token classification,
causal and seq2seq LMs) with ``IGNORE_INDEX`` marking positions nothing scores, as in
PyTorch's ``cross_entropy`` and Hugging Face's models. ``attribution_positions`` (optional,
``POSITIONS_KEY``) marks the tokens to attribute at, for ``positions="batch"``; ``choices``
(optional, ``CHOICES_KEY``) the first token of each answer of a prompt task.
"""

from __future__ import annotations

import torch

from .errors import InputError

#: label of a position that no loss or objective reads (PyTorch's ``ignore_index`` default)
IGNORE_INDEX = -100
#: an optional batch entry, a bool tensor [rows, tokens]: the positions to attribute at (read by
#: ``positions="batch"``, always removed before the model call)
POSITIONS_KEY = "attribution_positions"
#: an optional batch entry, a long tensor [rows, answers]: the first token of every answer of a
#: prompt task (read by the targets that compare the gold answer with the others; removed before
#: the model call)
CHOICES_KEY = "choices"
#: the batch entries that are for attribution, not for the model
NOT_MODEL_INPUTS = ("labels", POSITIONS_KEY, CHOICES_KEY)


def batch_rows(batch: dict) -> int:
    """The number of examples: the leading size of the batch's tensors."""
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return value.shape[0]
    raise InputError("a batch must hold at least one tensor (input_ids, ...)")


def tile(x: torch.Tensor, times: int) -> torch.Tensor:
    """[rows, ...] -> [times * rows, ...], step-major (row k * rows + b is copy k of example b)."""
    return x if times == 1 else x.repeat(times, *([1] * (x.dim() - 1)))


def tile_batch(batch: dict, times: int) -> dict:
    """Every per-example tensor of ``batch`` tiled ``times`` (step-major); the rest as it is."""
    rows = batch_rows(batch)
    return {k: tile(v, times) if torch.is_tensor(v) and v.dim() and v.shape[0] == rows else v
            for k, v in batch.items()}


def truncate_tokens(batch: dict, length: int) -> dict:
    """The first ``length`` tokens: every tensor whose second dimension is the input sequence
    (``input_ids``' length) is cut there; decoder inputs of an encoder-decoder are left as they are."""
    tokens = batch["input_ids"].shape[1] if "input_ids" in batch else batch["inputs_embeds"].shape[1]
    return {k: v[:, :length] if torch.is_tensor(v) and v.dim() >= 2 and v.shape[1] == tokens and
            not k.startswith("decoder_") else v for k, v in batch.items()}


def slice_batch(batch: dict, rows: slice | torch.Tensor) -> dict:
    """The examples ``rows`` (a slice or an index tensor) of every per-example tensor."""
    n = batch_rows(batch)
    return {k: v[rows] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v for k, v in batch.items()}


def padded(sequences: list[list[int]], pad: int, *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of token sequences padded with ``pad`` on the right
    (or the left: every sequence then ends at the last column, as a decoder continues it)."""
    if not sequences:
        raise InputError("no sequences to pad")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        where = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, where] = torch.tensor(seq, dtype=torch.long)
        mask[row, where] = 1
    return ids, mask
