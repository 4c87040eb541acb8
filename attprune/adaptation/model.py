"""The task model of adapting by pruning: a shared pre-trained encoder, a mask, a head.

The encoder is never modified: every forward runs it through ``torch.func.functional_call``
with the masked weights substituted (and every parameter detached), so one pre-trained
model serves any number of tasks at once, each holding only its masks and head.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .. import devices
from ..compact import compact
from ..errors import InputError
from ..plan import Plan
from .head import LayerWeightedHead, first_token_features
from .targets import MaskTarget, masked_weights

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


def encoder_of(model: nn.Module) -> nn.Module:
    """The bare encoder of a Hugging Face model (``model.base_model``), or the model itself."""
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(f"{type(model).__name__} is an encoder-decoder model; adapting by pruning reads the "
                         "first-token vector of every layer of an encoder (BERT-like) or decoder-only model")
    if any(devices.is_offloaded(m) for m in model.modules()):
        raise InputError("adapting by pruning needs the model's weights in memory, but this model has offloaded "
                         "modules (device_map with CPU or disk offload); load it on one device")
    return getattr(model, "base_model", model)


def _config_int(encoder: nn.Module, keys: tuple[str, ...], what: str) -> int:
    config = getattr(encoder, "config", None)
    for key in keys:
        if config is not None and isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    raise InputError(f"cannot tell {what} of {type(encoder).__name__} (none of {', '.join(keys)} in its config)")


def n_layers(encoder: nn.Module) -> int:
    return _config_int(encoder, ("num_hidden_layers", "n_layer", "num_layers", "n_layers"), "the number of layers")


def hidden_size(encoder: nn.Module) -> int:
    return _config_int(encoder, ("hidden_size", "n_embd", "d_model", "dim"), "the hidden size")


def encoder_features(encoder: nn.Module, weights: dict[str, torch.Tensor] | None, batch: dict) -> torch.Tensor:
    """First-token vectors of every layer, [batch, layers, hidden].

    ``weights``: tensors substituted for the encoder's own, every other parameter used
    detached, so no gradient reaches the pre-trained model.  ``None``: the encoder runs as
    it is, its own parameters trainable (fine-tuning baselines).
    """
    inputs = {k: v for k, v in batch.items() if k in ENCODER_INPUTS}
    kwargs = dict(inputs, output_hidden_states=True, return_dict=True)
    if weights is None:
        return first_token_features(encoder(**kwargs).hidden_states)
    params = {name: p.detach() for name, p in encoder.named_parameters()}
    params.update(weights)
    return first_token_features(torch.func.functional_call(encoder, params, args=(), kwargs=kwargs).hidden_states)


@torch.no_grad()
def frozen_features(encoder: nn.Module, targets: list[MaskTarget], masks: dict[str, torch.Tensor],
                    batches: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """First-token features of every layer for every example (masked weights), and the labels."""
    weights = masked_weights(encoder, targets, masks)
    features = [encoder_features(encoder, weights, batch) for batch in batches]
    return torch.cat(features), torch.cat([b["labels"] for b in batches])


class AdaptedModel(nn.Module):
    """A task model: ``encoder`` (shared, untouched) x boolean ``masks`` + a trained ``head``.

    >>> task_model = attprune.apply_adapted(pretrained, "adapted/mr")
    >>> task_model(**batch).logits
    """

    def __init__(self, encoder: nn.Module, head: LayerWeightedHead, targets: list[MaskTarget],
                 masks: dict[str, torch.Tensor], plan: Plan | None = None):
        super().__init__()
        self.encoder, self.head, self.targets, self.plan = encoder, head, list(targets), plan
        for i, target in enumerate(self.targets):
            self.register_buffer(f"mask_{i}", masks[target.param].bool(), persistent=False)

    @property
    def config(self):
        return self.encoder.config

    def masks(self) -> dict[str, torch.Tensor]:
        return {t.param: getattr(self, f"mask_{i}") for i, t in enumerate(self.targets)}

    def forward(self, labels: torch.Tensor | None = None, **batch):
        from transformers.modeling_outputs import SequenceClassifierOutput

        features = encoder_features(self.encoder, masked_weights(self.encoder, self.targets, self.masks()), batch)
        logits = self.head(features)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def compact(self) -> AdaptedModel:
        """A physically smaller copy (``granularity="units"`` only): the plan's units removed
        from a copy of the encoder; same outputs as this masked model."""
        if self.plan is None:
            raise InputError("only granularity='units' results compact into smaller dense layers; a weight mask "
                             "is unstructured (store it bit-packed, apply it with apply_adapted)")
        small = compact(copy.deepcopy(self.encoder), self.plan)
        return AdaptedModel(small, self.head, [], {})
