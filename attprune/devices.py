"""Where a module runs and where its weights are: plain models and dispatched ones alike.

A model loaded with ``device_map="auto"`` (accelerate's dispatch) may spread its layers
over several devices and keep some of them *offloaded* to CPU memory or disk: an offloaded
module's parameters sit on the meta device, its real tensors live in its hook's
``weights_map`` and are moved to the hook's ``execution_device`` for each forward.
attprune reads and rewrites weights only through this module, so attribution, masking and
compaction treat both kinds of model the same:

>>> with align_module_device(projection):     # accelerate's: real tensors on the execution device
...     weight = projection.weight.detach()
>>> write(projection, "weight", smaller)      # an offloaded module stays offloaded

Offloaded modules are recognised with accelerate's ``has_offloaded_params``; what accelerate
has no helper for (a module's execution device through nested hooks, reading and replacing
one tensor of an offload store) is done here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import accelerate
import torch
from accelerate import init_empty_weights
from accelerate.utils import get_balanced_memory, has_offloaded_params, offload_state_dict
from torch import nn

from .errors import InputError


def _align_hook(module: nn.Module):
    """The module's accelerate ``AlignDevicesHook`` (alone or inside a ``SequentialHook``)."""
    hook = getattr(module, "_hf_hook", None)
    for candidate in getattr(hook, "hooks", (hook,)):
        if candidate is not None and hasattr(candidate, "execution_device") and hasattr(candidate, "offload"):
            return candidate
    return None


def empty_model(cls: type[nn.Module], config) -> nn.Module:
    """``cls(config)`` with its parameters on the meta device (no memory; buffers stay real:
    rotary tables and position ids are computed, not loaded), tied weights tied as usual."""
    with init_empty_weights():
        model = cls(config)
    if hasattr(model, "tie_weights"):
        model.tie_weights()  # accelerate's context gives every registered parameter a new object
    return model


def _offload_hook(module: nn.Module):
    """The module's offloading hook, when its own parameters live in the hook's store."""
    if has_offloaded_params(module) and module._hf_hook.weights_map is not None:
        return module._hf_hook
    return None


def is_offloaded(module: nn.Module) -> bool:
    """True when the module's own parameters are offloaded (meta here, real in its hook's store)."""
    return _offload_hook(module) is not None


def check_offload_layout(model: nn.Module) -> None:
    """Refuse what attprune cannot read or rewrite: a hook that offloads the weights of its
    submodules (accelerate's ``preload_module_classes``) instead of each module its own."""
    for name, module in model.named_modules():
        hook = _offload_hook(module)
        if hook is not None and getattr(hook, "place_submodules", False) and next(module.children(), None):
            raise InputError(f"{name or type(model).__name__} offloads the weights of its submodules in one hook "
                             "(accelerate's preload_module_classes); attprune needs every offloaded module to hold "
                             "its own: dispatch without preload_module_classes (transformers' device_map does)")


def _as_device(device) -> torch.device:
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def execution_device(model: nn.Module, path: str = "") -> torch.device:
    """The device the module at ``path`` computes on: its (or its nearest ancestor's)
    dispatch hook's execution device, else where its parameters are, else the CPU."""
    module = model.get_submodule(path) if path else model
    parts = path.split(".") if path else []
    for depth in range(len(parts), -1, -1):
        owner = model.get_submodule(".".join(parts[:depth])) if depth else model
        hook = _align_hook(owner)
        if hook is not None and hook.execution_device is not None:
            return _as_device(hook.execution_device)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where a batch goes: the execution device of the model's input embeddings."""
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    path = next((name for name, module in model.named_modules() if module is embeddings), "")
    return execution_device(model, path)


def execution_devices(model: nn.Module) -> set[torch.device]:
    """Every device some part of the model computes on."""
    found = {_as_device(h.execution_device) for m in model.modules()
             if (h := _align_hook(m)) is not None and h.execution_device is not None}
    found.update(t.device for t in (*model.parameters(), *model.buffers()) if t.device.type != "meta")
    return found or {torch.device("cpu")}


def read(module: nn.Module, name: str) -> torch.Tensor:
    """The value of parameter or buffer ``name`` where it is stored (an offloaded one from its
    hook's store, on the CPU; otherwise the tensor itself, meta included)."""
    hook = _offload_hook(module)
    if hook is not None:
        with contextlib.suppress(KeyError):
            return hook.weights_map[name]
    return getattr(module, name)


class _StoreWithOverrides(Mapping):
    """An offload store (read-only, maybe on disk) with some tensors replaced in memory."""

    def __init__(self, base: Mapping):
        self.base = base
        self.overrides: dict[str, torch.Tensor] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.overrides[key] if key in self.overrides else self.base[key]

    def __iter__(self):
        yield from self.overrides
        yield from (k for k in self.base if k not in self.overrides)

    def __len__(self) -> int:
        return len(set(self.base) | set(self.overrides))

    def __getattr__(self, name):  # dataset / prefix of accelerate's PrefixedDataset
        if "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)


def write(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Replace parameter ``name`` with ``value`` (a new ``nn.Parameter``, gradient flag kept).

    An offloaded module stays offloaded: the new tensor goes to its hook's store (in CPU
    memory, beside the disk-backed originals) and the parameter itself to the meta device.
    """
    old = getattr(module, name)
    value = value.detach().contiguous()
    hook = _offload_hook(module)
    if hook is not None:
        if not isinstance(hook.weights_map, _StoreWithOverrides):
            hook.weights_map = _StoreWithOverrides(hook.weights_map)
        hook.weights_map.overrides[name] = value.cpu()
        value = value.to("meta")
    setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))


#: device_map values that dispatch over several devices (as transformers names them)
DISPATCH_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def is_dispatch_map(device_map) -> bool:
    """``"auto"`` / ``"balanced"``... or a {module: device} dict, as opposed to one device."""
    return isinstance(device_map, dict) or (isinstance(device_map, str) and device_map in DISPATCH_MAPS)


def device_map_for(model: nn.Module, device_map: str | dict, max_memory: dict | None = None) -> dict:
    """A {module: device} map for ``"auto"`` / ``"balanced"`` / ``"balanced_low_0"`` /
    ``"sequential"`` (as transformers computes it: whole decoder blocks stay on one device)."""
    if isinstance(device_map, dict):
        if max_memory is not None:
            raise InputError("max_memory sizes an inferred device_map ('auto', 'balanced', 'sequential'); "
                             "with a {module: device} dict it would be ignored: leave it out")
        return device_map
    no_split = getattr(model, "_no_split_modules", None)
    if device_map != "sequential":
        max_memory = get_balanced_memory(model, max_memory, no_split_module_classes=no_split,
                                         low_zero=device_map == "balanced_low_0")
    return accelerate.infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)


def dispatch(model: nn.Module, device_map: str | dict, max_memory: dict | None = None,
             offload_folder: str | None = None) -> nn.Module:
    """Spread an in-memory model over devices with accelerate hooks (what ``device_map="auto"``
    does at load time), for a model that was built in memory (e.g. with a new head).

    >>> model = dispatch(model, "auto", max_memory={0: "20GiB", "cpu": "60GiB"}, offload_folder="offload")
    """
    placement = device_map_for(model, device_map, max_memory)
    on_disk = {k: v for k, v in model.state_dict().items() if device_of(k, placement) == "disk"}
    if on_disk:
        if offload_folder is None:
            raise InputError(f"device_map={device_map!r} puts weights on disk: pass offload_folder (CLI: "
                             "--offload-folder) or a larger max_memory")
        # written here, always: accelerate would reuse any index.json already in the folder
        offload_state_dict(str(offload_folder), on_disk)
    return accelerate.dispatch_model(model, placement, offload_dir=offload_folder)


def device_of(key: str, device_map: dict) -> str | int | torch.device:
    """The device ``device_map`` gives tensor ``key`` (the entry of its longest module prefix)."""
    owners = [m for m in device_map if m == "" or key == m or key.startswith(m + ".")]
    if not owners:
        raise InputError(f"device_map gives no device for {key}")
    return device_map[max(owners, key=len)]
