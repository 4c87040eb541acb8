"""DistilBERT: ``attention`` holds q_lin/k_lin/v_lin and the output projection ``out_lin``."""

from .base import HeadLayout, set_existing


class DistilBertLayout(HeadLayout):
    empty_path = ""
    empty_out_name = "out_lin"
    empty_outputs = 2

    def set_heads(self, attention, n_heads, n_kv_heads, head_dim):
        set_existing(attention, n_heads=n_heads)
