"""Compact checkpoints: ``save_pretrained`` / ``from_pretrained``.

A checkpoint is a standard Hugging Face folder (the original ``config.json``, safetensors
weights in their compact shapes) plus ``attprune.json`` (the plan, the model class, the
attprune version; ``plan.json`` repeats the plan for ``Plan.load``).  ``from_pretrained``
builds the original class with its parameters on the meta device (no full-size
allocation), compacts that skeleton with the plan, then assigns the saved tensors, so peak
memory is one copy of the *compact* weights.  With ``device_map="auto"`` the tensors go
straight to the devices accelerate assigns, and disk-offloaded ones stay in the files.
A model compacted with ``compensate=`` lists its compensated sites in the plan's
``meta["compensated"]``: the skeleton gets those bias parameters, the saved tensors fill them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import dispatch_model
from accelerate.utils import set_module_tensor_to_device
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from . import devices
from ._version import __version__
from .compact import applied_plan, compact
from .errors import CheckpointError, InputError, MissingFileError
from .io import atomic_dir, read_format_json
from .plan import Plan
from .sites import find_sites

MANIFEST = "attprune.json"
FORMAT = "attprune.checkpoint/1"


def save_pretrained(model: nn.Module, out_dir: str | Path, *, tokenizer=None, **kwargs) -> Path:
    """Save a (compacted) model so that ``attprune.from_pretrained(out_dir)`` rebuilds it.

    The folder appears whole or not at all: it is written beside, then renamed into place
    (an existing folder is replaced only after the new one is complete).  ``tokenizer`` is
    saved into the same folder first, so it is part of that.

    >>> attprune.compact(model, plan)
    >>> attprune.save_pretrained(model, "minilm-hedge-50")
    """
    out_dir = Path(out_dir)
    plan = applied_plan(model)
    if plan is None:
        plan = Plan({}, {}, {}, {"note": "dense model: nothing was compacted"})
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, **kwargs)
        manifest = {"format": FORMAT, "attprune_version": __version__, "model_class": type(model).__name__,
                    "model_module": type(model).__module__, "plan": plan.to_dict()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        plan.save(tmp / "plan.json")  # the same plan, readable on its own (Plan.load)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir


def _read_manifest(path: Path) -> dict:
    if not path.is_dir():
        raise MissingFileError(f"no checkpoint folder at {path}")
    return read_format_json(path / MANIFEST, FORMAT, CheckpointError,
                            f"{path} has no {MANIFEST}: it is not an attprune checkpoint (a dense model loads "
                            "with transformers' from_pretrained)", "save the model again")


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    names = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() \
        else ["model.safetensors"]
    for name in names:
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is missing its weights file {name}")
    return [path / name for name in names]


@contextlib.contextmanager
def _readable(file: Path):
    try:
        yield
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{file} is truncated or damaged ({err}); save the model again") from err


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = {}
    for file in _weight_files(path):
        with _readable(file):
            state.update(load_file(str(file)))
    return state


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


@dataclass(frozen=True)
class SavedTensor:
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype | None  # floating dtypes only; None: integer / bool


def _saved_tensors(path: Path) -> dict[str, SavedTensor]:
    """Every saved tensor's file, shape and dtype, from the safetensors headers (nothing is loaded)."""
    saved = {}
    for file in _weight_files(path):
        with _readable(file), safe_open(str(file), "pt") as f:
            for key in f.keys():
                header = f.get_slice(key)
                saved[key] = SavedTensor(file, tuple(header.get_shape()), _SAFETENSORS_DTYPES.get(header.get_dtype()))
    return saved


def _site_of(key: str, model: nn.Module) -> str:
    """" (site PATH)" for a weight of a site, its producers or its attention module."""
    for site in find_sites(model):
        owners = (site.path, *site.producers, *((site.attention,) if site.attention else ()))
        if any(key.startswith(owner + ".") for owner in owners):
            return f" (site {site.path})"
    return ""


def _check_shapes(model: nn.Module, saved: dict[str, SavedTensor]) -> None:
    expected = dict(model.named_parameters())
    expected.update(dict(model.named_buffers()))
    for key, tensor in saved.items():
        target = expected.get(key)
        if target is not None and tuple(target.shape) != tensor.shape:
            raise CheckpointError(f"{key}{_site_of(key, model)} has shape {tensor.shape} in the checkpoint "
                                  f"but {tuple(target.shape)} under its plan: weights and plan do not match")


def from_pretrained(path: str | Path, torch_dtype: torch.dtype | None = None,
                    device_map: str | torch.device | dict | None = None, *,
                    max_memory: dict | None = None) -> nn.Module:
    """Load a compact checkpoint written by ``attprune.save_pretrained``.

    >>> model = attprune.from_pretrained("minilm-hedge-50", torch_dtype=torch.float16, device_map="cuda")
    >>> model = attprune.from_pretrained("llama-70b-50", device_map="auto", max_memory={0: "70GiB", "cpu": "200GiB"})

    ``device_map``: one device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) for the whole model, or,
    as in transformers, ``"auto"`` / ``"balanced"`` / ``"sequential"`` / a ``{module: device}``
    dict: the compact model is dispatched over the GPUs, CPU memory and disk with accelerate
    (``max_memory``: {device: budget}); modules that go to ``"disk"`` are read from the
    checkpoint's own safetensors files when they run, nothing is copied.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    dispatch = devices.is_dispatch_map(device_map)
    if device_map is not None and not dispatch and not isinstance(device_map, (str, torch.device)):
        raise InputError(f"device_map must be a device, one of {', '.join(devices.DISPATCH_MAPS)} or a "
                         f"{{module: device}} dict, got {device_map!r}")
    if not dispatch and max_memory is not None:
        raise InputError("max_memory applies to a dispatched model: pass device_map='auto' (or a dict)")
    cls = _model_class(manifest)
    config = cls.config_class.from_pretrained(path)  # the class's own: a user's family needs no Auto mapping
    plan = Plan.from_dict(manifest["plan"])
    model = devices.empty_model(cls, config)
    if plan.ffn or plan.heads:
        compact(model, plan)
    saved = _saved_tensors(path)
    _check_shapes(model, saved)
    if dispatch:
        return _dispatched(model, path, saved, torch_dtype, device_map, max_memory).eval()
    device = torch.device(device_map) if device_map is not None else torch.device("cpu")
    dtype = torch_dtype
    state = {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
             for k, v in _state_dict(path).items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{path} holds weights the model does not have: {result.unexpected_keys[:5]}")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    _check_complete(model, path)
    model.to(device)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _model_class(manifest: dict) -> type:
    """The saved model class: from its module (a user's own family too), else from transformers."""
    import transformers

    name, module = manifest["model_class"], manifest.get("model_module")
    candidates = []
    if module:
        try:
            candidates.append(importlib.import_module(module))
        except ImportError:
            pass
    candidates.append(transformers)
    for source in candidates:
        cls = getattr(source, name, None)
        if isinstance(cls, type):
            return cls
    raise CheckpointError(f"cannot find the model class {name!r} (module {module!r}): saved by another version of "
                          "transformers, or a custom model whose module is not importable here?")


def _check_complete(model: nn.Module, path: Path) -> None:
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise CheckpointError(f"{path} is missing weights {missing[:5]}{_site_of(missing[0], model)}")


def _dispatched(model: nn.Module, path: Path, saved: dict[str, SavedTensor], dtype: torch.dtype | None,
                device_map: str | dict, max_memory: dict | None) -> nn.Module:
    """Place the compact skeleton with accelerate: tensors of GPU / CPU modules are read from
    the checkpoint straight onto their device (one at a time: the model is never whole in CPU
    memory), disk modules keep pointing into the checkpoint's files."""
    target = {key: dtype if dtype is not None and t.dtype is not None else t.dtype for key, t in saved.items()}
    _match_dtypes(model, target)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    expected = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {n for n, _ in model.named_buffers()}
    unexpected = sorted(set(saved) - expected - buffers)
    if unexpected:
        raise CheckpointError(f"{path} holds weights the model does not have: {unexpected[:5]}")
    aliases = _tied_aliases(model, saved)
    missing = sorted(expected - set(saved) - set(aliases))
    if missing:
        raise CheckpointError(f"{path} is missing weights {missing[:5]}{_site_of(missing[0], model)}")
    device_map = devices.device_map_for(model, device_map, max_memory)
    placed = {key: devices.device_of(key, device_map) for key in [*saved, *aliases]}
    for alias, source in aliases.items():
        if placed[alias] != placed[source]:
            raise InputError(f"{alias} is tied to {source} but device_map puts them on {placed[alias]!r} and "
                             f"{placed[source]!r}: give both modules the same device (device_map='auto' does)")
    offload_index = {key: _disk_entry(key, saved[key], target[key])
                     for key in saved if placed[key] == "disk" and key not in buffers}
    # a tied copy on disk reads its source's saved tensor
    offload_index.update({alias: offload_index[source] for alias, source in aliases.items() if source in offload_index})
    for file in sorted({t.file for t in saved.values()}):
        with contextlib.ExitStack() as stack:
            with _readable(file):
                f = stack.enter_context(safe_open(str(file), "pt"))
                keys = [k for k in f.keys() if k not in offload_index]
            for key in keys:
                with _readable(file):
                    value = f.get_tensor(key)
                device = "cpu" if placed[key] == "disk" else placed[key]  # (a buffer of a disk module)
                set_module_tensor_to_device(model, key, device, value=value, dtype=target[key])
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # loading replaced the tied parameter objects
    on_disk = "disk" in set(device_map.values())
    return dispatch_model(model, device_map, offload_index=offload_index if on_disk else None)


def _tied_aliases(model: nn.Module, saved: dict[str, SavedTensor]) -> dict[str, str]:
    """Parameter names that are tied to a saved one (and not saved themselves) -> that name."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    aliases = {}
    for group in names.values():
        source = next((n for n in group if n in saved), None)
        aliases.update({n: source for n in group if source is not None and n not in saved})
    return aliases


def _disk_entry(key: str, tensor: SavedTensor, dtype: torch.dtype | None) -> dict:
    """An accelerate offload-index entry that reads ``key`` from the checkpoint file itself."""
    entry = {"safetensors_file": str(tensor.file), "weight_name": key}
    if dtype is not None:
        entry["dtype"] = str(dtype).replace("torch.", "")
    return entry


def _match_dtypes(model: nn.Module, dtypes: dict[str, torch.dtype | None]) -> None:
    """Give the skeleton's meta parameters the dtypes they will be loaded in (accelerate casts
    every loaded or onloaded tensor to the parameter's dtype)."""
    for name, param in list(model.named_parameters()):
        dtype = dtypes.get(name)
        if dtype is not None and param.dtype != dtype:
            owner, _, leaf = name.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            module._parameters[leaf] = nn.Parameter(param.to(dtype), requires_grad=param.requires_grad)
