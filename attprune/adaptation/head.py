"""The task head of adapting by pruning: the only weights that train.

``"layer-weighted-mlp"`` (the paper's): a learned softmax-weighted average of every layer's
first-token vector, then an MLP with one hidden layer of the model's width and ReLU.
``"linear"``: the same weighted average, then one Linear layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..batches import IGNORE_INDEX
from ..errors import InputError

#: the kinds of task head (not to be confused with ``attprune.sites.HEADS``, attention heads)
HEAD_KINDS = ("layer-weighted-mlp", "linear")


class LayerWeightedHead(nn.Module):
    """Input: first-token vectors of every layer, [batch, layers, hidden]; output: logits.

    >>> head = LayerWeightedHead(n_layers=6, hidden=384, num_labels=2)
    >>> head(features).shape                     # features: [batch, 6, 384]
    torch.Size([batch, 2])
    """

    def __init__(self, n_layers: int, hidden: int, num_labels: int, kind: str = "layer-weighted-mlp"):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise InputError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
        if num_labels < 2:
            raise InputError(f"a classification head needs at least 2 labels, got {num_labels}")
        self.kind, self.n_layers, self.hidden, self.num_labels = kind, n_layers, hidden, num_labels
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        if kind == "linear":
            self.classifier = nn.Linear(hidden, num_labels)
        else:
            self.classifier = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_labels))

    def config(self) -> dict:
        """The head's shape, as saved beside its weights."""
        return {"kind": self.kind, "n_layers": self.n_layers, "hidden": self.hidden, "num_labels": self.num_labels}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = features.to(self.layer_logits.dtype)  # a float32 head over a bf16/fp16 encoder
        pooled = torch.einsum("l,blh->bh", torch.softmax(self.layer_logits, 0), features)
        return self.classifier(pooled)


def new_head(encoder: nn.Module, num_labels: int, kind: str, n_layers: int, hidden: int) -> LayerWeightedHead:
    """A head on the encoder's device, in its dtype when that is float32/float64 (else float32)."""
    param = next(encoder.parameters())
    dtype = param.dtype if param.dtype in (torch.float32, torch.float64) else torch.float32
    return LayerWeightedHead(n_layers, hidden, num_labels, kind).to(device=param.device, dtype=dtype)


def first_token_features(hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """[batch, layers, hidden] from a model's ``hidden_states`` (embeddings output left out)."""
    return torch.stack([h[:, 0] for h in hidden_states[1:]], dim=1)


def train_head(head: LayerWeightedHead, features: torch.Tensor, labels: torch.Tensor, *, epochs: int,
               lr: float, batch_size: int = 16, seed: int = 0) -> LayerWeightedHead:
    """Adam on cached features [examples, layers, hidden], shuffled minibatches (seeded)."""
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
            loss = F.cross_entropy(head(features[idx]), labels[idx], ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()
