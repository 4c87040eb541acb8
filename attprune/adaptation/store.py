"""Save an adapted task (1 bit per masked weight) and put it back on a shared pre-trained model.

A task folder holds::

    attprune_adapted.json   {"format", "config": AdaptConfig.to_dict(), "head": the head's shape,
                             "targets": the masked tensors, "stats", "fingerprint"}
    head.safetensors        the head's weights
    masks.safetensors       granularity "weights": each mask packed 8 per byte (first entry in the high bit)
    plan.json               granularity "units": the kept FFN neurons and attention heads, instead of masks
    tokenizer/              optional

The fingerprint is a SHA-256 of the pre-trained tensors the masks were learned on.  The
folder appears whole or not at all.  Folders written before the JSON file was renamed (it
was ``adapter_config.json``, PEFT's reserved name with another schema) still load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import AdaptedMismatchError
from ..io import atomic_dir, tensors_digest
from ..plan import Plan
from .head import LayerWeightedHead, new_head
from .model import AdaptedModel, encoder_of
from .targets import GRANULARITIES, MaskTarget
from .taskfile import FORMAT, TASK_FILE, read_task_file

# ``Adapted`` (``.train``) appears in annotations only, as a string: train imports this module

__all__ = ["AdaptedMismatchError", "FORMAT", "TASK_FILE", "apply_adapted", "fingerprint", "pack_bits",
           "read_task_file", "save_adapted", "unpack_bits"]


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Boolean tensor -> uint8, 8 entries per byte (first entry in the high bit), zero padded.

    >>> pack_bits(torch.tensor([True, False, True]))
    tensor([160], dtype=torch.uint8)
    """
    bits = mask.detach().flatten().bool().cpu().numpy()
    return torch.from_numpy(np.packbits(bits, bitorder="big"))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of ``pack_bits`` for a mask of ``shape``.

    >>> unpack_bits(torch.tensor([160], dtype=torch.uint8), (3,))
    tensor([ True, False,  True])
    """
    n = int(np.prod(shape, dtype=np.int64))
    if packed.dtype != torch.uint8 or packed.numel() != (n + 7) // 8:
        raise AdaptedMismatchError(f"a packed mask of shape {tuple(shape)} needs {(n + 7) // 8} bytes, "
                                   f"found {packed.numel()} ({packed.dtype})")
    bits = np.unpackbits(packed.cpu().numpy(), count=n, bitorder="big")
    return torch.from_numpy(bits.astype(bool)).view(tuple(shape))


def fingerprint(encoder: nn.Module, targets: list[MaskTarget]) -> str:
    """SHA-256 of the masked pre-trained tensors: a mask only means something on its weights."""
    params = dict(encoder.named_parameters())
    return tensors_digest((t.param, params[t.param]) for t in targets)


def _task_json(result: Adapted) -> dict:
    return {"format": FORMAT, "config": result.config.to_dict(), "head": result.head.config(),
            "targets": [{"param": t.param, "shape": list(t.shape), "kind": t.kind, "unit_size": t.unit_size,
                         "conv1d": t.conv1d} for t in result.targets],
            "stats": result.stats, "fingerprint": result.stats.get("fingerprint")}


def save_adapted(result: Adapted, path: str | Path, tokenizer=None) -> Path:
    """Write ``result`` (an ``Adapted``) to the folder ``path`` (with ``tokenizer`` in
    ``path/tokenizer``); see the module docstring."""
    path = Path(path)
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in result.head.state_dict().items()},
                  str(tmp / "head.safetensors"))
        if result.plan is not None:
            result.plan.save(tmp / "plan.json")
        else:
            save_file({t.param: pack_bits(result.masks[t.param]) for t in result.targets},
                      str(tmp / "masks.safetensors"))
        (tmp / TASK_FILE).write_text(json.dumps(_task_json(result), indent=2, default=str) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "tokenizer")
    return path


def _load_tensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise AdaptedMismatchError(f"{file} is missing; save the task again")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdaptedMismatchError(f"{file} is truncated or damaged ({err}); save the task again") from err


def _granularity(data: dict, path: Path) -> str:
    config = data.get("config")
    granularity = config.get("granularity") if isinstance(config, dict) else None
    if granularity not in GRANULARITIES:
        raise AdaptedMismatchError(f"{path}: the task's config has no valid granularity ({granularity!r}); "
                                   "save the task again")
    return granularity


def _check_targets(encoder: nn.Module, targets: list[MaskTarget]) -> None:
    params = dict(encoder.named_parameters())
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


def _load_head(encoder: nn.Module, data: dict, path: Path) -> LayerWeightedHead:
    shape = data["head"]
    head = new_head(encoder, shape["num_labels"], shape["kind"], shape["n_layers"], shape["hidden"])
    head.load_state_dict(_load_tensors(path / "head.safetensors"))
    return head.eval()


def _unit_masks(targets: list[MaskTarget], plan: Plan) -> dict[str, torch.Tensor]:
    masks = {}
    for target in targets:
        keep = torch.zeros(target.shape[0], dtype=torch.bool)
        keep[plan.kept(target.param.removesuffix(".weight"))] = True
        masks[target.param] = keep
    return masks


def _weight_masks(targets: list[MaskTarget], path: Path) -> dict[str, torch.Tensor]:
    packed = _load_tensors(path / "masks.safetensors")
    missing = [t.param for t in targets if t.param not in packed]
    if missing:
        raise AdaptedMismatchError(f"{path / 'masks.safetensors'} lacks the masks of {missing[:3]}")
    return {t.param: unpack_bits(packed[t.param], t.shape) for t in targets}


def apply_adapted(pretrained: nn.Module, path: str | Path, *, check_fingerprint: bool = True) -> AdaptedModel:
    """Put a saved task on ``pretrained`` (shared, never modified): returns its task model.

    >>> base = AutoModel.from_pretrained("all-MiniLM-L6-v2")
    >>> mr, hedge = attprune.apply_adapted(base, "adapted/mr"), attprune.apply_adapted(base, "adapted/hedge")
    >>> mr(**batch).logits                               # both share base's weights

    The masks were learned on particular pre-trained weights: a model whose masked tensors
    differ (another checkpoint, or fine-tuned since) is refused unless
    ``check_fingerprint=False``.  ``AdaptConfig.from_pretrained(path)`` reads the settings.
    """
    path = Path(path)
    data = read_task_file(path)
    granularity = _granularity(data, path)
    encoder = encoder_of(pretrained)
    targets = [MaskTarget(t["param"], tuple(t["shape"]), t["kind"], t["unit_size"], t["conv1d"])
               for t in data["targets"]]
    _check_targets(encoder, targets)
    if check_fingerprint and data.get("fingerprint") and fingerprint(encoder, targets) != data["fingerprint"]:
        raise AdaptedMismatchError(f"{path} was learned on different pre-trained weights (fingerprint mismatch); "
                                   "apply it to the model it was adapted from, or pass check_fingerprint=False")
    head = _load_head(encoder, data, path)
    plan = Plan.load(path / "plan.json") if granularity == "units" else None
    masks = _unit_masks(targets, plan) if plan is not None else _weight_masks(targets, path)
    device = next(encoder.parameters()).device
    return AdaptedModel(encoder, head, targets, {k: v.to(device) for k, v in masks.items()}, plan)
