"""A transformer family that exists nowhere else: a user's own model, written from scratch.

Its attention keeps a per-layer ``n_heads`` attribute and returns a tuple, its FFN is
``up`` -> GELU -> ``down`` directly in the block: what a user registers with one ArchSpec.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

import attprune


class ToyConfig(PretrainedConfig):
    model_type = "toy_lm"

    def __init__(self, vocab_size=41, dim=20, n_heads=4, ffn=23, n_layers=3, num_labels=2, **kwargs):
        self.vocab_size, self.dim, self.n_heads, self.ffn, self.n_layers = vocab_size, dim, n_heads, ffn, n_layers
        super().__init__(num_labels=num_labels, **kwargs)


class ToyAttention(nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.dim // config.n_heads
        width = self.n_heads * self.head_dim
        self.q, self.k, self.v = (nn.Linear(config.dim, width) for _ in range(3))
        self.out = nn.Linear(width, config.dim)

    def forward(self, x, mask):
        rows, tokens, _ = x.shape
        q, k, v = (p(x).view(rows, tokens, self.n_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q, self.k, self.v))
        scores = q @ k.transpose(-1, -2) / self.head_dim ** 0.5
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(rows, tokens, self.n_heads * self.head_dim)
        return (self.out(context),)


class ToyBlock(nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.attn = ToyAttention(config)
        self.up, self.down = nn.Linear(config.dim, config.ffn), nn.Linear(config.ffn, config.dim)
        self.norm1, self.norm2 = nn.LayerNorm(config.dim), nn.LayerNorm(config.dim)

    def forward(self, x, mask):
        x = self.norm1(x + self.attn(x, mask)[0])
        return self.norm2(x + self.down(nn.functional.gelu(self.up(x))))


class ToyForSequenceClassification(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(ToyBlock(config) for _ in range(config.n_layers))
        self.classifier = nn.Linear(config.dim, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0, 0.3)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.normal_(0, 0.1)

    def forward(self, input_ids, attention_mask=None, labels=None):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, mask)
        logits = self.classifier(x[:, 0])
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


#: everything attprune needs to score, mask, compact and reload the family (the README recipe)
TOY_SPEC = attprune.ArchSpec(
    name="toy",
    model_types=("toy_lm",),
    blocks=(("blocks", "input"),),
    attention=(attprune.AttentionSpec(module="attn", out="out", q="q", k="k", v="v"),),
    ffn=(attprune.FFNSpec(module="", down="down", up=("up",)),),
    head_dim=lambda config: config.dim // config.n_heads,
    embeddings=("embed",),
    heads=attprune.HeadLayout(lambda n_heads, n_kv_heads, head_dim: {"n_heads": n_heads},
                              empty_out="out", empty_outputs=1),
)
