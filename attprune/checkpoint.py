"""Compact checkpoints: ``save_pretrained`` / ``from_pretrained``.

A checkpoint is a standard Hugging Face folder (the original ``config.json``, safetensors
weights in their compact shapes) plus ``attprune.json`` (the plan, the model class, the
attprune version; ``plan.json`` repeats the plan for ``Plan.load``).  ``from_pretrained``
builds the original class with its parameters on the meta device (no full-size
allocation), compacts that skeleton with the plan, then assigns the saved tensors, so peak
memory is one copy of the *compact* weights.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn

from .compact import applied_plan, compact
from .io import atomic_dir, read_format_json
from .plan.plan import Plan
from .sites import find_sites

MANIFEST = "attprune.json"
FORMAT = "attprune.checkpoint/1"


class CheckpointError(ValueError):
    """A compact checkpoint is missing, incomplete or does not fit its plan."""


def save_pretrained(model: nn.Module, out_dir: str | Path, *, tokenizer=None, **kwargs) -> Path:
    """Save a (compacted) model so that ``attprune.from_pretrained(out_dir)`` rebuilds it.

    The folder appears whole or not at all: it is written beside, then renamed into place
    (an existing folder is replaced only after the new one is complete).  ``tokenizer`` is
    saved into the same folder first, so it is part of that.

    >>> attprune.compact(model, plan)
    >>> attprune.save_pretrained(model, "minilm-hedge-50")
    """
    from . import __version__

    out_dir = Path(out_dir)
    plan = applied_plan(model)
    if plan is None:
        plan = Plan({}, {}, {}, {"note": "dense model: nothing was compacted"})
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, **kwargs)
        manifest = {"format": FORMAT, "attprune_version": __version__, "model_class": type(model).__name__,
                    "plan": plan.to_dict()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        plan.save(tmp / "plan.json")  # the same plan, readable on its own (Plan.load)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir


@contextlib.contextmanager
def parameters_on_meta():
    """Create modules with parameters on the meta device; buffers stay real (rotary tables,
    position ids are computed, not loaded)."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint folder at {path}")
    return read_format_json(path / MANIFEST, FORMAT, CheckpointError,
                            f"{path} has no {MANIFEST}: it is not an attprune checkpoint (a dense model loads "
                            "with transformers' from_pretrained)", "save the model again")


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    state = {}
    for name in files:
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path} is missing its weights file {name}")
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{file} is truncated or damaged ({err}); save the model again") from err
    return state


def _site_of(key: str, model: nn.Module) -> str:
    """" (site PATH)" for a weight of a site, its producers or its attention module."""
    for site in find_sites(model):
        owners = (site.path, *site.producers, *((site.attention,) if site.attention else ()))
        if any(key.startswith(owner + ".") for owner in owners):
            return f" (site {site.path})"
    return ""


def from_pretrained(path: str | Path, torch_dtype: torch.dtype | None = None,
                    device_map: str | torch.device | None = None) -> nn.Module:
    """Load a compact checkpoint written by ``attprune.save_pretrained``.

    >>> model = attprune.from_pretrained("minilm-hedge-50", torch_dtype=torch.float16, device_map="cuda")

    ``device_map``: a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) for the whole model.
    """
    import transformers
    from transformers import AutoConfig

    path = Path(path)
    manifest = _read_manifest(path)
    if device_map is not None and not isinstance(device_map, (str, torch.device)) or device_map == "auto":
        raise ValueError("device_map takes one device here ('cpu', 'cuda', 'cuda:1'); multi-device dispatch "
                         "is not supported yet")
    device = torch.device(device_map) if device_map is not None else torch.device("cpu")
    config = AutoConfig.from_pretrained(path)
    cls = getattr(transformers, manifest["model_class"], None)
    if cls is None:
        raise CheckpointError(f"transformers has no class {manifest['model_class']!r} (saved by another version?)")
    plan = Plan.from_dict(manifest["plan"])
    with parameters_on_meta():
        model = cls(config)
    if plan.ffn or plan.heads:
        compact(model, plan)
    state = _state_dict(path)
    expected = dict(model.named_parameters())
    expected.update(dict(model.named_buffers()))
    for key, tensor in state.items():
        target = expected.get(key)
        if target is not None and target.shape != tensor.shape:
            raise CheckpointError(f"{key}{_site_of(key, model)} has shape {tuple(tensor.shape)} in the checkpoint "
                                  f"but {tuple(target.shape)} under its plan: weights and plan do not match")
    dtype = torch_dtype
    state = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
             for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{path} holds weights the model does not have: {result.unexpected_keys[:5]}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise CheckpointError(f"{path} is missing weights {missing[:5]}{_site_of(missing[0], model)}")
    model.to(device)
    if dtype is not None:
        model.to(dtype)
    return model.eval()
