"""Built-in architecture specs: encoders, encoder-decoders and decoder LLMs."""

from __future__ import annotations

from .spec import ArchSpec, AttentionSpec, FFNSpec, register_architecture


def _hidden_over_heads(config) -> int:
    return config.hidden_size // config.num_attention_heads


def _explicit_head_dim(config) -> int:
    return getattr(config, "head_dim", None) or _hidden_over_heads(config)


BERT = register_architecture(ArchSpec(
    name="bert",
    model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert"),
    blocks=(("encoder.layer", "input"),),
    attention=(AttentionSpec(module="attention", out="output.dense",
                             q="self.query", k="self.key", v="self.value"),),
    ffn=(FFNSpec(module="", down="output.dense", up=("intermediate.dense",)),),
    head_dim=_hidden_over_heads,
    embeddings=("embeddings",),
))

DISTILBERT = register_architecture(ArchSpec(
    name="distilbert",
    model_types=("distilbert",),
    blocks=(("transformer.layer", "input"),),
    attention=(AttentionSpec(module="attention", out="out_lin", q="q_lin", k="k_lin", v="v_lin"),),
    ffn=(FFNSpec(module="ffn", down="lin2", up=("lin1",)),),
    head_dim=lambda config: config.dim // config.n_heads,
    embeddings=("embeddings",),
))

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
))

LLAMA = register_architecture(ArchSpec(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    blocks=(("layers", "input"),),
    attention=(AttentionSpec(module="self_attn", out="o_proj", q="q_proj", k="k_proj", v="v_proj"),),
    ffn=(FFNSpec(module="mlp", down="down_proj", up=("gate_proj", "up_proj")),),
    head_dim=_explicit_head_dim,
    embeddings=("embed_tokens",),
))

GPT2 = register_architecture(ArchSpec(
    name="gpt2",
    model_types=("gpt2",),
    blocks=(("h", "input"),),
    attention=(AttentionSpec(module="attn", out="c_proj", qkv="c_attn"),),
    ffn=(FFNSpec(module="mlp", down="c_proj", up=("c_fc",)),),
    head_dim=lambda config: config.n_embd // config.n_head,
    # GPT-2 adds token and position embeddings in its forward; `drop` sees their sum
    embeddings=("drop",),
))
