"""Llama, Mistral, Qwen2 / Qwen3: grouped KV heads and a gated (SwiGLU) FFN.

Query head h reads KV head h // (n_heads / n_kv_heads), so the kept query heads of each
kept KV group must be equally many (``make_plan`` ensures it); a KV group that serves no
kept query head loses its k / v rows.
"""

from .spec import ArchSpec, AttentionSpec, FFNSpec, HeadLayout, register_architecture


def _head_attributes(n_heads: int, n_kv_heads: int, head_dim: int) -> dict:
    return {"num_key_value_groups": n_heads // n_kv_heads if n_kv_heads else 1, "num_heads": n_heads,
            "num_key_value_heads": n_kv_heads, "hidden_size": n_heads * head_dim}


LLAMA = register_architecture(ArchSpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks=(("layers", "input"),),
    attention=(AttentionSpec(module="self_attn", out="o_proj", q="q_proj", k="k_proj", v="v_proj"),),
    ffn=(FFNSpec(module="mlp", down="down_proj", up=("gate_proj", "up_proj")),),
    head_dim=lambda config: getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
    embeddings=("embed_tokens",),
    heads=HeadLayout(_head_attributes, empty_out="o_proj", empty_outputs=2),
))
