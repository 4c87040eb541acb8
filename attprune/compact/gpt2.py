"""GPT-2: one fused ``c_attn`` Conv1D projects [q | k | v]; its forward splits by ``split_size``."""

from .base import HeadLayout, set_existing


class GPT2Layout(HeadLayout):
    empty_path = ""
    empty_out_name = "c_proj"
    empty_outputs = 2

    def set_heads(self, attention, n_heads, n_kv_heads, head_dim):
        set_existing(attention, num_heads=n_heads, split_size=n_heads * head_dim)
