"""Which tokens count: padding does not, and ``positions`` may keep fewer (how per-token scores
are then reduced: ``attprune.ops.reference``).

``positions`` (``AttributionConfig.positions``) chooses, per example, the input positions a
method attributes at; ``select_positions`` turns the choice into a [rows, tokens] bool mask:

* ``"all"``: every real token (no selection);
* ``"labelled"``: the positions whose output the objective reads: where ``labels != -100``
  (token classification; a masked LM, whose labels mark the [MASK] positions of a cloze
  probe); for a causal LM the position *before* each labelled token, whose logits predict it
  (for a question + answer, the last question token and every answer token but the last: an
  answer token's own position only feeds the tokens after it). With ``target="prediction"``
  the predicted labels count. Needs per-token labels;
* ``"mask"``: where ``input_ids == model.config.mask_token_id`` (set it from the tokenizer's
  ``mask_token_id`` when the config has none);
* ``"last"``: the last real token of each example (what a causal LM's next-token prediction or
  a Llama-style classifier reads);
* ``"batch"``: the batch's own ``attribution_positions`` entry, a [rows, tokens] bool tensor
  (removed before the model call);
* a callable ``(batch) -> Tensor[rows, tokens]`` (bool), given the batch as it was passed.

Padding is never selected. An example with no selected real token is refused (``InputError``).
Encoder-decoder models are refused (two token sequences: positions would be ambiguous).
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

from ..batches import IGNORE_INDEX, POSITIONS_KEY
from ..errors import InputError

PositionsSpec = Union[str, Callable]
POSITIONS = ("all", "labelled", "mask", "last", "batch")
#: the choices of ``--positions`` (a command-line batch carries no positions of its own)
CLI_POSITIONS = ("all", "labelled", "mask", "last")


def token_mask(batch: dict, stream: str, n_tokens: int, n_rows: int) -> torch.Tensor:
    """[rows, tokens] bool mask of the real (non-padding) tokens a site sees.

    ``stream="input"``: ``attention_mask``.  ``stream="decoder"``: ``decoder_attention_mask``,
    else the positions of labels other than ``IGNORE_INDEX``, else every position.
    """
    if stream == "decoder":
        mask = batch.get("decoder_attention_mask")
        if mask is None and batch.get("labels") is not None:
            mask = batch["labels"] != IGNORE_INDEX
    else:
        mask = batch.get("attention_mask")
    if mask is None:
        return torch.ones(n_rows, n_tokens, dtype=torch.bool)
    mask = mask.bool()
    if mask.shape != (n_rows, n_tokens):
        raise InputError(f"{stream} mask has shape {tuple(mask.shape)}, expected {(n_rows, n_tokens)}")
    return mask


def check_positions(positions: PositionsSpec) -> None:
    if not callable(positions) and not (isinstance(positions, str) and positions in POSITIONS):
        raise InputError(f"positions must be one of {', '.join(map(repr, POSITIONS))} or a callable (batch) -> "
                         f"bool Tensor[rows, tokens], got {positions!r}")


def select_positions(positions: PositionsSpec, model: nn.Module, batch: dict, labels: torch.Tensor | None,
                     causal: bool, n_rows: int, n_tokens: int) -> torch.Tensor:
    """[rows, tokens] bool: the chosen positions among the real input tokens of ``batch``.

    ``batch``: the batch as passed (on the model's device); ``labels``: those the objective
    scores ([rows, tokens], -100 where none); ``causal``: labels are predicted one position
    earlier. Every example must keep at least one position.
    """
    check_positions(positions)
    if getattr(model.config, "is_encoder_decoder", False):
        raise InputError("positions apply to models with one token sequence; an encoder-decoder has two (use "
                         "positions='all')")
    name = getattr(positions, "__name__", type(positions).__name__) if callable(positions) else repr(positions)
    if callable(positions):
        chosen = _checked(positions(batch), f"positions={name} returned", n_rows, n_tokens)
    elif positions == "batch":
        if POSITIONS_KEY not in batch:
            raise InputError(f"positions='batch' reads each batch's {POSITIONS_KEY!r} entry (a bool tensor "
                             f"[rows, tokens]); this batch has none")
        chosen = _checked(batch[POSITIONS_KEY], f"the batch's {POSITIONS_KEY!r} entry is", n_rows, n_tokens)
    elif positions == "labelled":
        chosen = _labelled(labels, causal, n_rows, n_tokens)
    elif positions == "mask":
        chosen = _masked(model, batch)
    else:  # "last"
        chosen = None
    ids = batch["input_ids"] if "input_ids" in batch else batch["inputs_embeds"]
    real = token_mask(batch, "input", n_tokens, n_rows).to(ids.device)
    if positions == "last":
        last = n_tokens - 1 - real.flip(1).int().argmax(1)
        chosen = torch.zeros_like(real).scatter_(1, last[:, None], True)
    chosen = chosen.to(real.device) & real
    empty = (~chosen.any(1)).nonzero().flatten().tolist()
    if empty:
        raise InputError(f"positions={name} selects no real token in example(s) {empty} of a batch of {n_rows}; "
                         "every example needs at least one")
    return chosen


def _checked(value, what: str, n_rows: int, n_tokens: int) -> torch.Tensor:
    if not torch.is_tensor(value) or value.shape != (n_rows, n_tokens) or value.is_floating_point() \
            or value.is_complex():
        shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise InputError(f"{what} {shape}{'' if not torch.is_tensor(value) else f' {value.dtype}'}; expected a "
                         f"bool tensor of shape {(n_rows, n_tokens)} (rows, input tokens)")
    return value.bool()


def _labelled(labels: torch.Tensor | None, causal: bool, n_rows: int, n_tokens: int) -> torch.Tensor:
    if labels is None:
        raise InputError("positions='labelled' needs labels (the positions they mark); pass labels, or "
                         "target='prediction'")
    if labels.dim() != 2 or labels.shape != (n_rows, n_tokens):
        raise InputError(f"positions='labelled' needs one label per input token (labels of shape "
                         f"{(n_rows, n_tokens)}, -100 where none), got labels of shape {tuple(labels.shape)}: "
                         "a sequence classifier has one label per example (use positions='last', 'batch' or a "
                         "callable)")
    labelled = labels != IGNORE_INDEX
    if not causal:
        return labelled
    before = torch.zeros_like(labelled)
    before[:, :-1] = labelled[:, 1:]  # the logits at t predict the token at t + 1
    return before


def _masked(model: nn.Module, batch: dict) -> torch.Tensor:
    mask_id = getattr(model.config, "mask_token_id", None)
    if not isinstance(mask_id, int):
        raise InputError(f"positions='mask' needs the mask token's id in model.config.mask_token_id "
                         f"({type(model.config).__name__} has none): set model.config.mask_token_id = "
                         "tokenizer.mask_token_id, or use positions='labelled' (on a masked LM the labels mark "
                         "the masked positions)")
    if not torch.is_tensor(batch.get("input_ids")):
        raise InputError("positions='mask' reads input_ids; this batch has inputs_embeds only")
    return batch["input_ids"] == mask_id
