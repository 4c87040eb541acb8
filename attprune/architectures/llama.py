"""Llama, Mistral, Qwen2 / Qwen3: grouped KV heads and a gated (SwiGLU) FFN.

Query head h reads KV head h // (n_heads / n_kv_heads), so the kept query heads of each
kept KV group must be equally many (``make_plan`` ensures it); a KV group that serves no
kept query head loses its k / v rows.

A plain config states every width (``intermediate_size``, ``num_attention_heads``,
``num_key_value_heads``, ``head_dim``) and biases on the FFN (``mlp_bias``) and attention
(``attention_bias``) projections.  llama.cpp runs the family as ``llama`` (one shape) or
``deci`` (layers that differ), from the tensors named below.
"""

from ..errors import ExportError
from .spec import ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, GGUFLayout, HeadLayout, register_architecture


def _head_attributes(n_heads: int, n_kv_heads: int, head_dim: int) -> dict:
    return {"num_key_value_groups": n_heads // n_kv_heads if n_kv_heads else 1, "num_heads": n_heads,
            "num_key_value_heads": n_kv_heads, "hidden_size": n_heads * head_dim}


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise ExportError(f"format='gguf' writes plain rotary embeddings; this model uses rope_type {kind!r}")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _gguf_hyperparameters(config) -> dict:
    return {"context_length": config.max_position_embeddings, "rope_freq_base": _rope_theta(config),
            "layer_norm_rms_eps": config.rms_norm_eps}


def _gguf_check(model) -> None:
    config = model.config
    window = getattr(config, "sliding_window", None)
    if window and (config.model_type == "mistral" or getattr(config, "use_sliding_window", False)):
        raise ExportError("format='gguf' does not write a sliding attention window; set config.sliding_window=None "
                          "if the prompts never exceed it")
    _rope_theta(config)


LLAMA_GGUF = GGUFLayout(
    arch="llama", varied_arch="deci",
    tensors={"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"},
    block={"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
           "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
           "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj"},
    rotary=("attn_q", "attn_k"),
    hyperparameters=_gguf_hyperparameters,
    check=_gguf_check,
)

LLAMA = register_architecture(ArchSpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks=(("layers", "input"),),
    attention=(AttentionSpec(module="self_attn", out="o_proj", q="q_proj", k="k_proj", v="v_proj"),),
    ffn=(FFNSpec(module="mlp", down="down_proj", up=("gate_proj", "up_proj")),),
    head_dim=lambda config: getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
    embeddings=("embed_tokens",),
    heads=HeadLayout(_head_attributes, empty_out="o_proj", empty_outputs=2),
    widths=ConfigKeys("intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                      ffn_bias="mlp_bias", attention_bias="attention_bias"),
    gguf=LLAMA_GGUF,
))
