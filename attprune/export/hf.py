"""``format="hf"``: a plain transformers checkpoint, loadable with ``AutoModel*.from_pretrained``
by the unmodified library, when every layer has the same shape.

A family's config states one FFN width and one head count for all layers; its
``ArchSpec.widths`` (``ConfigKeys``) says which config attributes those are (``heads=None``:
removed heads cannot be stated, since the family derives its head size from
``hidden_size / num_heads``, or, T5, every layer reads layer 0's relative position bias).

Compensation biases (``compact(..., compensate=...)``) on projections the family builds
without one: the config flag ``ConfigKeys.ffn_bias`` / ``attention_bias`` names (Llama's
``mlp_bias`` / ``attention_bias``) is set, and the other projections that flag gives a bias
(gate / up; q / k / v) are written with explicit zero biases; checked against the model
transformers builds from that config.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .. import devices
from ..architectures import ConfigKeys, spec_for
from ..errors import ExportError
from ..io import atomic_dir
from ..sites import FFN, find_sites
from .shapes import ffn_widths, head_shapes

_UNIFORM_HINT = "make the plan with scope='uniform' (the same shape in every layer), or export format='onnx'"


def plain_config(model: nn.Module):
    """A copy of ``model.config`` that states the compacted widths; ``ExportError`` when the
    model's layers differ or the family cannot state its widths."""
    config = model.config
    spec = spec_for(model)
    if spec.widths is None:
        raise ExportError(f"format='hf' needs the config keys of the family {spec.name!r} (ArchSpec(widths="
                          "ConfigKeys(...))); it was registered without them. Use format='onnx'")
    out = copy.deepcopy(config)
    _state_ffn_width(model, out, spec.widths)
    _state_heads(model, out, spec.widths)
    _state_biases(model, out, spec.widths)
    return out


def _biases(model: nn.Module) -> dict[str, tuple]:
    """Bias parameter name -> (shape, dtype) of every bias the model has."""
    return {name: (tuple(p.shape), p.dtype) for name, p in model.named_parameters()
            if name.rpartition(".")[2] == "bias"}


def _plain_biases(model: nn.Module, config) -> dict[str, tuple]:
    """The biases of the model transformers builds from ``config`` (on the meta device: no memory)."""
    return _biases(devices.empty_model(type(model), config))


def _state_biases(model: nn.Module, out, keys: ConfigKeys) -> None:
    """Set the config flags that give the FFN / attention projections the (compensation) biases
    the model carries and its config does not build."""
    ours = set(_biases(model))
    extra = sorted(ours - set(_plain_biases(model, out)))
    if not extra:
        return
    kinds = {f"{site.path}.bias": site.kind for site in find_sites(model)}
    family = spec_for(model).name
    for name in extra:
        kind = kinds.get(name)
        if kind is None:
            raise ExportError(f"format='hf': the model has {name}, which a plain {family} config does not build: "
                              "export format='onnx'")
        field = "ffn_bias" if kind == FFN else "attention_bias"
        flag = getattr(keys, field)
        if flag is None:
            raise ExportError(f"format='hf': {name} (a compensation bias: compact(..., compensate=...)) cannot be "
                              f"stated by a plain {family} config (its ConfigKeys name no {field} flag): export "
                              "format='onnx', or compact without compensate")
        setattr(out, flag, True)
    still = sorted(ours - set(_plain_biases(model, out)))
    if still:
        raise ExportError(f"format='hf': transformers' {type(model).__name__} has no {still[0]} even with the config's "
                          f"{keys.ffn_bias} / {keys.attention_bias} flags set, so a plain checkpoint cannot hold the "
                          "compensation bias (compact(..., compensate=...)): export format='onnx' or 'gguf'")


def _zero_biases(model: nn.Module, config) -> dict[str, torch.Tensor]:
    """Explicit zeros for the biases the plain config's model has and ``model`` lacks (the
    gate / up or q / k / v biases a bias flag adds): a plain load then finds every tensor."""
    ours = _biases(model)
    weights = dict(model.named_parameters())
    return {name: torch.zeros(shape, dtype=weights[name.removesuffix("bias") + "weight"].dtype)
            for name, (shape, _) in _plain_biases(model, config).items() if name not in ours}


def _state_ffn_width(model: nn.Module, out, keys: ConfigKeys) -> None:
    widths = ffn_widths(model)
    if len(widths) > 1:
        raise ExportError(f"format='hf' needs the same FFN width in every layer, this model has {sorted(widths)}: "
                          f"{_UNIFORM_HINT}")
    if widths == {0}:
        raise ExportError("format='hf' cannot express layers without an FFN: make the plan with min_keep >= 1")
    if widths:
        setattr(out, keys.ffn, widths.pop())


def _state_heads(model: nn.Module, out, keys: ConfigKeys) -> None:
    config = model.config
    heads = head_shapes(model)
    if len(heads) > 1:
        raise ExportError(f"format='hf' needs the same number of heads in every layer, this model has "
                          f"{sorted(heads)} (query, key/value): {_UNIFORM_HINT}")
    if not heads:
        return
    n_heads, n_kv = heads.pop()
    if n_heads == 0:
        raise ExportError("format='hf' cannot express layers without attention heads: make the plan with "
                          "min_keep >= 1")
    if keys.heads is None:
        if n_heads != config.num_attention_heads:
            raise ExportError(f"format='hf' cannot express removed heads for {config.model_type} (its head size is "
                              "hidden_size / heads, or T5's position bias is shared by all layers): prune FFN "
                              "neurons only, or export format='onnx'")
        return
    if config.hidden_size % n_heads:  # transformers' config validation refuses it, head_dim or not
        raise ExportError(f"format='hf': transformers needs hidden_size ({config.hidden_size}) divisible by "
                          f"the number of heads ({n_heads}); choose another head sparsity or format='onnx'")
    setattr(out, keys.heads, n_heads)
    if keys.kv_heads:
        setattr(out, keys.kv_heads, n_kv)
    setattr(out, keys.head_dim, spec_for(model).head_dim(config))


def export_hf(model: nn.Module, out: str | Path, *, tokenizer=None, **save_kwargs) -> Path:
    """Save ``model`` as a plain transformers folder (config states the compacted widths).

    >>> plan = attprune.make_plan(scores, ffn=0.3, heads=0.3, scope="uniform")
    >>> attprune.export(attprune.compact(model, plan), "plain/", format="hf")
    >>> AutoModelForCausalLM.from_pretrained("plain/")          # no attprune needed
    """
    config = plain_config(model)
    zeros = _zero_biases(model, config)
    if zeros:
        save_kwargs["state_dict"] = {**model.state_dict(), **zeros}
    original = model.config
    with atomic_dir(Path(out)) as tmp:
        model.config = config
        try:
            model.save_pretrained(tmp, safe_serialization=True, **save_kwargs)
        finally:
            model.config = original
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out)
