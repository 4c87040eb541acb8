"""BERT and ELECTRA; RoBERTa, XLM-R and CamemBERT (the same layout, positions offset).

Sites: ``attention.output.dense`` (heads) and ``output.dense`` (FFN) of every
``encoder.layer``. Heads live in ``attention.self`` (``num_attention_heads``,
``all_head_size``); the output projection ``attention.output.dense`` is outside it, so a
layer that loses every head keeps it (its bias, then the LayerNorm). Sequence classifiers
read the first token of the last layer (the pooler, RoBERTa's and ELECTRA's heads), and
from ``attention.output`` on a layer is position-wise, so IG runs that part of the last
layer on the first token only.

A plain config states the FFN width (``intermediate_size``) but not removed heads: the head
size is ``hidden_size / num_attention_heads``. RoBERTa's position table holds
``padding_idx + 1`` rows before the first position.
"""

from dataclasses import replace

from .spec import ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, HeadLayout, register_architecture

BERT = register_architecture(ArchSpec(
    name="bert",
    model_types=("bert", "electra"),
    blocks=(("encoder.layer", "input"),),
    attention=(AttentionSpec(module="attention", out="output.dense",
                             q="self.query", k="self.key", v="self.value"),),
    ffn=(FFNSpec(module="", down="output.dense", up=("intermediate.dense",)),),
    head_dim=lambda config: config.hidden_size // config.num_attention_heads,
    embeddings=("embeddings",),
    heads=HeadLayout(lambda n_heads, n_kv_heads, head_dim: {"num_attention_heads": n_heads,
                                                            "all_head_size": n_heads * head_dim},
                     module="self", empty="self", empty_out=None, empty_outputs=2),
    widths=ConfigKeys("intermediate_size"),
    first_token_tail="attention.output",
))


def _roberta_positions(config) -> int:
    return config.max_position_embeddings - ((getattr(config, "pad_token_id", 1) or 1) + 1)


ROBERTA = register_architecture(replace(BERT, name="roberta", model_types=("roberta", "xlm-roberta", "camembert"),
                                        max_positions=_roberta_positions))
