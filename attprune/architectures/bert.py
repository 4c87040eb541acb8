"""BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT.

Sites: ``attention.output.dense`` (heads) and ``output.dense`` (FFN) of every
``encoder.layer``. Heads live in ``attention.self`` (``num_attention_heads``,
``all_head_size``); the output projection ``attention.output.dense`` is outside it, so a
layer that loses every head keeps it (its bias, then the LayerNorm). Sequence classifiers
read the first token of the last layer (the pooler, RoBERTa's and ELECTRA's heads), and
from ``attention.output`` on a layer is position-wise, so IG runs that part of the last
layer on the first token only.
"""

from .spec import ArchSpec, AttentionSpec, FFNSpec, HeadLayout, register_architecture

BERT = register_architecture(ArchSpec(
    name="bert",
    model_types=("bert", "roberta", "xlm-roberta", "electra", "camembert"),
    blocks=(("encoder.layer", "input"),),
    attention=(AttentionSpec(module="attention", out="output.dense",
                             q="self.query", k="self.key", v="self.value"),),
    ffn=(FFNSpec(module="", down="output.dense", up=("intermediate.dense",)),),
    head_dim=lambda config: config.hidden_size // config.num_attention_heads,
    embeddings=("embeddings",),
    heads=HeadLayout(lambda n_heads, n_kv_heads, head_dim: {"num_attention_heads": n_heads,
                                                            "all_head_size": n_heads * head_dim},
                     module="self", empty="self", empty_out=None, empty_outputs=2),
    first_token_tail="attention.output",
))
