"""T5 and mT5: where its sites are, and where a head is removed from T5.

Sites: the self-attention ``o`` and cross-attention ``o`` (heads) and ``DenseReluDense.wo`` (FFN,
dense ``wi`` or gated ``wi_0`` / ``wi_1``) of every encoder and decoder block.

Heads: rows of ``q``/``k``/``v``, columns of ``o`` (generic slicing), plus the per-layer
attributes ``n_heads`` and ``inner_dim``.  The relative position bias is the T5-specific
part: block 0's ``relative_attention_bias`` (an Embedding [buckets, heads]) computes a
[1, heads, q, k] bias that ``T5Stack`` hands to every later layer.  Once layers keep
different heads, one shared bias cannot fit them all, so every self-attention layer of a
compacted stack gets its own table (block 0's columns of the heads it keeps: a few hundred
numbers per layer) and computes its own bias; a pre-hook drops the bias handed down the
stack.  Cross-attention has no relative bias (zeros of its own head count).  A plain config
states the FFN width (``d_ff``) only: its layers would share one position table.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import devices
from .spec import ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, HeadLayout, register_architecture


def _table(attention: nn.Module) -> torch.Tensor:
    """The [buckets, heads] relative-position table (read from its offload store if offloaded)."""
    return devices.read(attention.relative_attention_bias, "weight").detach()


def _own_position_bias(module, args, kwargs):
    kwargs["position_bias"] = None
    return args, kwargs


class T5Heads(HeadLayout):
    """``n_heads`` / ``inner_dim`` per layer, and a relative-position table per self-attention layer."""

    def __init__(self):
        super().__init__(lambda n_heads, n_kv_heads, head_dim: {"n_heads": n_heads, "inner_dim": n_heads * head_dim},
                         empty_out="o", empty_outputs=3)

    def finalize(self, model: nn.Module, head_sites: list, kept: dict) -> None:
        stacks: dict[str, list] = {}
        for name, module in model.named_modules():
            if type(module).__name__ == "T5Attention":
                stacks.setdefault(name.split(".block.")[0], []).append((name, module))
        for stack, attentions in stacks.items():
            if not any(site.attention.startswith(stack + ".block.") for site in head_sites):
                continue
            shared = next((_table(m) for n, m in attentions
                           if n.endswith("SelfAttention") and m.has_relative_attention_bias), None)
            for name, module in attentions:
                heads = kept.get(name + ".o")
                device = devices.execution_device(model, name) if shared is not None and not shared.is_meta else None
                if getattr(module, "_attprune_own_bias", False):  # compacted before: slice its own table
                    if heads is not None and name.endswith("SelfAttention"):
                        self._give_table(module, _table(module), heads, device)
                    continue
                if name.endswith("SelfAttention") and shared is not None:
                    self._give_table(module, shared, torch.arange(shared.shape[1]) if heads is None else heads,
                                     device)
                module.register_forward_pre_hook(_own_position_bias, with_kwargs=True)
                module._attprune_own_bias = True

    @staticmethod
    def _give_table(module: nn.Module, table: torch.Tensor, heads: torch.Tensor,
                    device: torch.device | None) -> None:
        """The layer's own relative-position table: ``table``'s columns of its kept heads, on
        ``device`` (the layer's execution device; None: where the table is)."""
        device = table.device if device is None else device
        embedding = nn.Embedding(table.shape[0], heads.numel(), device=device, dtype=table.dtype)
        columns = table.index_select(1, heads.to(table.device))
        embedding.weight = nn.Parameter(columns.to(device).contiguous())
        module.relative_attention_bias = embedding
        module.has_relative_attention_bias = True


T5 = register_architecture(ArchSpec(
    name="t5",
    model_types=("t5", "mt5"),
    blocks=(("encoder.block", "input"), ("decoder.block", "decoder")),
    attention=(
        AttentionSpec(module="layer.*.SelfAttention", out="o", q="q", k="k", v="v"),
        AttentionSpec(module="layer.*.EncDecAttention", out="o", q="q", k="k", v="v"),
    ),
    # dense (wi) and gated (wi_0, wi_1) FFNs
    ffn=(FFNSpec(module="layer.*.DenseReluDense", down="wo", up=("wi", "wi_0", "wi_1")),),
    head_dim=lambda config: config.d_kv,
    # transformers 5 ties separate embed_tokens modules; 4.x calls the shared one
    embeddings=("encoder.embed_tokens", "decoder.embed_tokens", "shared"),
    heads=T5Heads(),
    # later layers read layer 0's relative position bias for *their* kept heads: heads are no plain config
    widths=ConfigKeys("d_ff"),
))
