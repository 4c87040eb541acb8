"""Save an adapted task (1 bit per masked weight) and put it back on a shared pre-trained model.

A folder holds ``adapter_config.json`` (granularity, hyperparameters, mask shapes, the head's
shape, statistics, a fingerprint of the pre-trained weights it was learned on),
``head.safetensors`` and either ``masks.safetensors`` (``"weights"``: each mask packed 8 per
byte) or ``plan.json`` (``"units"``).  The folder appears whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_dir, read_format_json
from ..plan.plan import Plan
from .head import new_head
from .model import AdaptedModel, encoder_of
from .targets import MaskTarget

CONFIG = "adapter_config.json"
FORMAT = "attprune.adapted/1"
_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


class AdaptedMismatchError(ValueError):
    """A saved task does not fit the pre-trained model it is applied to, or is damaged."""


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Boolean tensor -> uint8, 8 entries per byte (first entry in the high bit), zero padded.

    >>> pack_bits(torch.tensor([True, False, True]))
    tensor([160], dtype=torch.uint8)
    """
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``pack_bits`` for a mask of ``shape``."""
    n = 1
    for size in shape:
        n *= size
    if packed.dtype != torch.uint8 or packed.numel() != (n + 7) // 8:
        raise AdaptedMismatchError(f"a packed mask of shape {tuple(shape)} needs {(n + 7) // 8} bytes, "
                                   f"found {packed.numel()} ({packed.dtype})")
    bits = (packed[:, None] & _BIT_WEIGHTS).ne(0).flatten()
    return bits[:n].view(shape)


def fingerprint(encoder: nn.Module, targets: list[MaskTarget]) -> str:
    """SHA-256 of the masked pre-trained tensors: a mask only means something on its weights."""
    params = dict(encoder.named_parameters())
    digest = hashlib.sha256()
    for target in targets:
        digest.update(target.param.encode())
        digest.update(params[target.param].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_adapted(result, path: str | Path, tokenizer=None) -> Path:
    """Write ``result`` (an ``Adapted``) to the folder ``path`` (with ``tokenizer`` in
    ``path/tokenizer``); see the module docstring."""
    from safetensors.torch import save_file

    path = Path(path)
    config = {"format": FORMAT, "granularity": result.granularity, "config": result.config,
              "head": result.head.config(), "stats": result.stats,
              "targets": [{"param": t.param, "shape": list(t.shape), "kind": t.kind, "unit_size": t.unit_size,
                           "conv1d": t.conv1d} for t in result.targets],
              "fingerprint": result.stats.get("fingerprint")}
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in result.head.state_dict().items()},
                  str(tmp / "head.safetensors"))
        if result.plan is not None:
            result.plan.save(tmp / "plan.json")
        else:
            save_file({t.param: pack_bits(result.masks[t.param]) for t in result.targets},
                      str(tmp / "masks.safetensors"))
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "tokenizer")
    return path


def _read_config(path: Path) -> dict:
    return read_format_json(path / CONFIG, FORMAT, AdaptedMismatchError,
                            f"{path} is not an adapted task folder (no {CONFIG}); write one with "
                            "attprune.adapt(...).save(path) or attprune adapt --out", "save the task again")


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise AdaptedMismatchError(f"{file} is missing; save the task again")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdaptedMismatchError(f"{file} is truncated or damaged ({err}); save the task again") from err


def apply_adapted(pretrained: nn.Module, path: str | Path, *, check_fingerprint: bool = True) -> AdaptedModel:
    """Put a saved task on ``pretrained`` (shared, never modified): returns its task model.

    >>> base = AutoModel.from_pretrained("all-MiniLM-L6-v2")
    >>> mr, hedge = attprune.apply_adapted(base, "adapted/mr"), attprune.apply_adapted(base, "adapted/hedge")
    >>> mr(**batch).logits                               # both share base's weights

    The masks were learned on particular pre-trained weights: a model whose masked tensors
    differ (another checkpoint, or fine-tuned since) is refused unless
    ``check_fingerprint=False``.
    """
    path = Path(path)
    config = _read_config(path)
    encoder = encoder_of(pretrained)
    params = dict(encoder.named_parameters())
    targets = [MaskTarget(t["param"], tuple(t["shape"]), t["kind"], t["unit_size"], t["conv1d"])
               for t in config["targets"]]
    for target in targets:
        weight = params.get(target.param)
        if weight is None:
            raise AdaptedMismatchError(f"the task masks {target.param}, which {type(encoder).__name__} does not "
                                       "have: it was learned on another architecture")
        if target.kind == "weight":
            fits = tuple(weight.shape) == target.shape
        else:  # one entry per unit of unit_size input columns
            fits = weight.shape[0 if target.conv1d else 1] == target.shape[0] * target.unit_size
        if not fits:
            raise AdaptedMismatchError(f"{target.param}: the task's mask ({target.kind}, {target.shape}) does not fit "
                                       f"the model's weight of shape {tuple(weight.shape)}")
    if check_fingerprint and config.get("fingerprint") and fingerprint(encoder, targets) != config["fingerprint"]:
        raise AdaptedMismatchError(f"{path} was learned on different pre-trained weights (fingerprint mismatch); "
                                   "apply it to the model it was adapted from, or pass check_fingerprint=False")
    head_config = config["head"]
    head = new_head(encoder, head_config["num_labels"], head_config["kind"], head_config["n_layers"],
                    head_config["hidden"])
    head.load_state_dict(_load_tensors(path / "head.safetensors"))
    plan = None
    if config["granularity"] == "units":
        plan = Plan.load(path / "plan.json")
        masks = {}
        for target in targets:
            keep = torch.zeros(target.shape[0], dtype=torch.bool)
            keep[plan.kept(target.param.removesuffix(".weight"))] = True
            masks[target.param] = keep
    else:
        packed = _load_tensors(path / "masks.safetensors")
        missing = [t.param for t in targets if t.param not in packed]
        if missing:
            raise AdaptedMismatchError(f"{path / 'masks.safetensors'} lacks the masks of {missing[:3]}")
        masks = {t.param: unpack_bits(packed[t.param], t.shape) for t in targets}
    device = next(encoder.parameters()).device
    return AdaptedModel(encoder, head.eval(), targets, {k: v.to(device) for k, v in masks.items()}, plan)
