"""BERT, RoBERTa, ELECTRA, XLM-R: heads live in ``attention.self``; the output projection
``attention.output.dense`` is outside it, so a head-less layer keeps it (bias + LayerNorm)."""

from .base import HeadLayout, set_existing


class BertLayout(HeadLayout):
    empty_path = "self"
    empty_out_name = None
    empty_outputs = 2

    def set_heads(self, attention, n_heads, n_kv_heads, head_dim):
        set_existing(attention.self, num_attention_heads=n_heads, all_head_size=n_heads * head_dim)
