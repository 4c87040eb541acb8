"""DistilBERT: ``attention`` holds q_lin / k_lin / v_lin and the output projection ``out_lin``;
a plain config states the FFN width (``hidden_dim``), not removed heads (``dim / n_heads``)."""

from .spec import ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, HeadLayout, register_architecture

DISTILBERT = register_architecture(ArchSpec(
    name="distilbert",
    model_types=("distilbert",),
    blocks=(("transformer.layer", "input"),),
    attention=(AttentionSpec(module="attention", out="out_lin", q="q_lin", k="k_lin", v="v_lin"),),
    ffn=(FFNSpec(module="ffn", down="lin2", up=("lin1",)),),
    head_dim=lambda config: config.dim // config.n_heads,
    embeddings=("embeddings",),
    heads=HeadLayout(lambda n_heads, n_kv_heads, head_dim: {"n_heads": n_heads},
                     empty_out="out_lin", empty_outputs=2),
    widths=ConfigKeys("hidden_dim"),
))
