"""Llama, Mistral, Qwen2/3: grouped KV heads.  Query head h reads KV head h // groups, so the
kept query heads of each kept KV group must be equally many (``make_plan`` ensures it)."""

from .base import HeadLayout, set_existing


class LlamaLayout(HeadLayout):
    empty_path = ""
    empty_out_name = "o_proj"
    empty_outputs = 2

    def set_heads(self, attention, n_heads, n_kv_heads, head_dim):
        groups = n_heads // n_kv_heads if n_kv_heads else 1
        set_existing(attention, num_key_value_groups=groups, num_heads=n_heads, num_key_value_heads=n_kv_heads,
                     hidden_size=n_heads * head_dim)
