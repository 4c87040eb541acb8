"""Run a pruned model outside attprune: ``attprune.export(model, out, format=...)``.

One module per format, registered in ``FORMATS``:

- ``"hf"`` (``hf.py``): a plain transformers checkpoint, when every layer has the same shape
  (plans made with ``scope="uniform"``);
- ``"onnx"`` (``onnx.py``): any supported family, layers of any widths, for ONNX Runtime;
- ``"gguf"`` (``gguf.py``): Llama-family decoder LLMs, layers of any widths, for llama.cpp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import InputError
from .gguf import export_gguf
from .hf import export_hf
from .onnx import export_onnx
from .shapes import LayerShape, layer_shapes

FORMATS: dict[str, Callable[..., Path]] = {"hf": export_hf, "onnx": export_onnx, "gguf": export_gguf}


def export(model: nn.Module, out: str | Path, format: str = "hf", **options) -> Path:
    """Write ``model`` (compacted by attprune, or dense) in ``format``; returns the path written.

    >>> attprune.export(model, "plain/", format="hf")                                   # uniform plans
    >>> attprune.export(model, "model.onnx", format="onnx", example=batch)
    >>> attprune.export(model, "model.gguf", format="gguf", tokenizer=tokenizer, dtype="f16")

    ``options`` go to the format's exporter (``export_hf``, ``export_onnx``, ``export_gguf``).
    The file or folder appears whole or not at all.
    """
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[format](model, out, **options)


__all__ = ["FORMATS", "LayerShape", "export", "export_gguf", "export_hf", "export_onnx", "layer_shapes"]
