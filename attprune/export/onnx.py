"""``format="onnx"``: every supported family, with dynamic batch and sequence axes, runnable
in ONNX Runtime; layers may differ in width (the graph records each layer's shapes).

Exported with torch's TorchScript-based exporter (``dynamo=False``): the dynamo exporter
cannot yet trace a layer whose heads were all removed.  The graph takes the ``example``
batch's inputs by name (``input_ids``, ``attention_mask``, ``token_type_ids``,
``decoder_input_ids``) and returns the model's first output (``logits`` for task models).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..compact.core import conv1d_to_linear
from ..errors import ExportError, InputTypeError, missing_dependency
from ..sites.site import is_conv1d

INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask")
EXAMPLE_TEXT = "An example sentence to trace the model with."
#: the ``attprune export`` flags of this format (option -> argparse keywords)
OPTIONS = {"example_text": dict(default=EXAMPLE_TEXT, help="the text whose tokens trace the graph (any length: the "
                                                           "axes stay dynamic)")}


class _Positional(nn.Module):
    """The model called with named inputs given positionally (as the exporter passes them),
    returning its first output only (no KV cache)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.names, inputs))
        if not self.model.config.is_encoder_decoder:
            kwargs["use_cache"] = False
        out = self.model(**kwargs, return_dict=True)
        return out.logits if "logits" in out else out[0]


def _inputs(model: nn.Module, example: dict | None, tokenizer, example_text: str) -> dict[str, torch.Tensor]:
    if example is None:
        if tokenizer is None:
            raise ExportError("format='onnx' needs example= a batch dict (or tokenizer= to make one from example_text)")
        example = dict(tokenizer(example_text, return_tensors="pt"))
        if model.config.is_encoder_decoder:
            example["decoder_input_ids"] = torch.tensor([[model.config.decoder_start_token_id]])
    if not isinstance(example, dict):
        raise InputTypeError("format='onnx' needs example= a batch dict such as the tokenizer returns")
    inputs = {k: example[k] for k in INPUTS if k in example}
    if "input_ids" not in inputs:
        raise ExportError("format='onnx' needs example['input_ids']")
    if model.config.is_encoder_decoder and "decoder_input_ids" not in inputs:
        if "labels" not in example:
            raise ExportError("an encoder-decoder export needs example['decoder_input_ids'] (or 'labels')")
        inputs["decoder_input_ids"] = model._shift_right(example["labels"])
    return inputs


def export_onnx(model: nn.Module, out: str | Path, *, example: dict | None = None, tokenizer=None,
                example_text: str = EXAMPLE_TEXT, opset: int = 17) -> Path:
    """Write ``model`` (compacted or dense) as one ONNX file at ``out``, traced on ``example``
    (or on ``tokenizer(example_text)``).

    >>> batch = tokenizer(["a sentence"], return_tensors="pt")
    >>> attprune.export(model, "model.onnx", format="onnx", example=batch)
    >>> onnxruntime.InferenceSession("model.onnx").run(None, {k: v.numpy() for k, v in batch.items()})
    """
    try:
        import onnx  # noqa: F401  (torch's exporter writes the file with it)
    except ImportError:
        raise missing_dependency("onnx", "format='onnx'", "export") from None
    out = Path(out)
    inputs = _inputs(model, example, tokenizer, example_text)
    names = tuple(inputs)
    device = next(model.parameters()).device
    # only a model with Conv1D layers is copied (to swap them): the export traces, it does not change weights
    has_conv1d = any(is_conv1d(m) for m in model.modules())
    graph = _Positional(conv1d_to_linear(copy.deepcopy(model)) if has_conv1d else model, names)
    was_training = model.training
    graph.eval()
    axes = {n: {0: "batch", 1: "decoder_sequence" if n.startswith("decoder") else "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(graph, tuple(v.to(device) for v in inputs.values()), str(tmp), input_names=list(names),
                              output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False)
        os.replace(tmp, out)
    finally:
        model.train(was_training)
        tmp.unlink(missing_ok=True)
    return out
