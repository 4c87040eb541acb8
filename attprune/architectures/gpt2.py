"""GPT-2: one fused ``c_attn`` Conv1D projects [q | k | v] and the forward splits it by
``split_size``; weights are stored [in, out] (``Conv1D``). A layer that loses every head
keeps ``c_proj`` (its bias). A plain config states the FFN width (``n_inner``)."""

from .spec import ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, HeadLayout, register_architecture

GPT2 = register_architecture(ArchSpec(
    name="gpt2",
    model_types=("gpt2",),
    blocks=(("h", "input"),),
    attention=(AttentionSpec(module="attn", out="c_proj", qkv="c_attn"),),
    ffn=(FFNSpec(module="mlp", down="c_proj", up=("c_fc",)),),
    head_dim=lambda config: config.n_embd // config.n_head,
    # GPT-2 adds token and position embeddings in its forward; `drop` sees their sum
    embeddings=("drop",),
    heads=HeadLayout(lambda n_heads, n_kv_heads, head_dim: {"num_heads": n_heads, "split_size": n_heads * head_dim},
                     empty_out="c_proj", empty_outputs=2),
    widths=ConfigKeys("n_inner"),
))
