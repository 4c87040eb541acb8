"""``find_sites``: every prunable site of a model, from its registered architecture spec."""

from __future__ import annotations

import fnmatch
from typing import Iterable

from torch import nn

from ..architectures import ArchSpec, spec_for
from ..errors import InputError, UnsupportedModelError
from .site import FFN, HEADS, UNIT_KINDS, Site, in_features, out_features


def _find_block_list(model: nn.Module, path: str) -> tuple[str, nn.ModuleList] | None:
    matches = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and (name == path or name.endswith("." + path))
    ]
    if len(matches) > 1:
        names = ", ".join(name for name, _ in matches)
        raise UnsupportedModelError(f"block path {path!r} is ambiguous in {type(model).__name__}: {names}")
    return matches[0] if matches else None


def _match_children(block: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    if pattern == "":
        return [("", block)]
    return [(name, m) for name, m in block.named_modules() if name and fnmatch.fnmatchcase(name, pattern)
            and name.count(".") == pattern.count(".")]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _get(module: nn.Module, path: str | None) -> nn.Module | None:
    if path is None:
        return None
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _modules_with(block_path: str, block: nn.Module, pattern: str, projection: str):
    """(path, module, projection) for each module matching ``pattern`` that has ``projection``."""
    for rel, module in _match_children(block, pattern):
        found = _get(module, projection)
        if found is not None:
            yield _join(block_path, rel), module, found


def _attention_sites(spec: ArchSpec, config, block_path: str, block: nn.Module, stream: str) -> list[Site]:
    head_dim = spec.head_dim(config)
    sites = []
    for att in spec.attention:
        for base, module, out in _modules_with(block_path, block, att.module, att.out):
            n_features = in_features(out)
            if n_features % head_dim:
                raise UnsupportedModelError(
                    f"{_join(base, att.out)} has {n_features} input features, not a multiple of "
                    f"head_dim={head_dim}"
                )
            n_heads = n_features // head_dim
            if att.qkv is not None:
                producers, n_kv = (_join(base, att.qkv),), n_heads
            else:
                k = _get(module, att.k)
                n_kv = out_features(k) // head_dim if k is not None else n_heads
                producers = tuple(_join(base, p) for p in (att.q, att.k, att.v) if _get(module, p) is not None)
            sites.append(Site(
                path=_join(base, att.out), kind=HEADS, block=block_path, stream=stream,
                n_units=n_heads, unit_size=head_dim, producers=producers, attention=base,
                n_kv_heads=n_kv, fused_qkv=att.qkv is not None,
            ))
    return sites


def _ffn_sites(spec: ArchSpec, block_path: str, block: nn.Module, stream: str) -> list[Site]:
    sites = []
    for ffn in spec.ffn:
        for base, module, down in _modules_with(block_path, block, ffn.module, ffn.down):
            producers = tuple(_join(base, p) for p in ffn.up if _get(module, p) is not None)
            sites.append(Site(
                path=_join(base, ffn.down), kind=FFN, block=block_path, stream=stream,
                n_units=in_features(down), unit_size=1, producers=producers,
            ))
    return sites


def find_sites(model: nn.Module, units: Iterable[str] = UNIT_KINDS) -> list[Site]:
    """Every site of ``model`` in execution order (blocks in order; attention before FFN).

    >>> sites = find_sites(model, units=("ffn",))
    >>> sites[0].path, sites[0].n_units
    ('bert.encoder.layer.0.output.dense', 1536)
    """
    units = tuple(units)
    unknown = [u for u in units if u not in UNIT_KINDS]
    if unknown or not units:
        raise InputError(f"units must be a non-empty subset of {UNIT_KINDS}, got {units!r}")
    spec = spec_for(model)
    sites: list[Site] = []
    found_blocks = False
    for list_path, stream in spec.blocks:
        found = _find_block_list(model, list_path)
        if found is None:
            continue
        found_blocks = True
        list_name, block_list = found
        for index, block in enumerate(block_list):
            block_path = f"{list_name}.{index}"
            if HEADS in units:
                sites += _attention_sites(spec, model.config, block_path, block, stream)
            if FFN in units:
                sites += _ffn_sites(spec, block_path, block, stream)
    if not found_blocks:
        raise UnsupportedModelError(
            f"none of the block lists {[p for p, _ in spec.blocks]} of spec {spec.name!r} exist in "
            f"{type(model).__name__}"
        )
    if not sites:
        raise UnsupportedModelError(f"spec {spec.name!r} found no {units} sites in {type(model).__name__}")
    return sites


def first_token_tail(model: nn.Module) -> tuple[str, str] | None:
    """(the last block, the module from which it is position-wise) for a family whose sequence
    classifiers read only the first token (``ArchSpec.first_token_tail``); None otherwise.

    >>> first_token_tail(bert_classifier)
    ('bert.encoder.layer.5', 'bert.encoder.layer.5.attention.output')
    """
    spec = spec_for(model)
    if spec.first_token_tail is None:
        return None
    lists = [found for found in (_find_block_list(model, path) for path, _ in spec.blocks) if found and len(found[1])]
    if not lists:
        return None
    name, blocks = lists[-1]
    block_path = f"{name}.{len(blocks) - 1}"
    if _get(blocks[-1], spec.first_token_tail) is None:
        return None
    return block_path, _join(block_path, spec.first_token_tail)


def find_embeddings(model: nn.Module) -> list[str]:
    """Paths of the input-embedding modules (their outputs are what ``method="conductance"``
    interpolates): every module matching one of the spec's ``embeddings`` suffixes."""
    suffixes = spec_for(model).embeddings
    matches = [n for n, _ in model.named_modules() if any(n == s or n.endswith("." + s) for s in suffixes)]
    if not matches:
        raise UnsupportedModelError(f"no embedding module {suffixes} in {type(model).__name__}")
    return matches
