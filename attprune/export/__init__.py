"""Run a pruned model outside attprune: ``attprune.export(model, out, format=...)``.

One module per format, each registered in ``FORMATS`` as an ``ExportFormat`` (the writer, a
line of help, and the options the ``attprune export`` command offers for it):

- ``"hf"`` (``hf.py``): a plain transformers checkpoint, when every layer has the same shape
  (plans made with ``scope="uniform"``);
- ``"onnx"`` (``onnx.py``): any supported family, layers of any widths, for ONNX Runtime;
- ``"gguf"`` (``gguf.py``): decoder LLMs of families with a ``GGUFLayout`` (Llama), layers of
  any widths, for llama.cpp.

Every writer takes ``(model, out, *, tokenizer=None, **options)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import InputError
from . import gguf, hf, onnx
from .gguf import export_gguf
from .hf import export_hf
from .onnx import export_onnx
from .shapes import LayerShape, layer_shapes


@dataclass(frozen=True)
class ExportFormat:
    """One export format: ``write(model, out, *, tokenizer=None, **options) -> Path``, what it
    is for, and its options as command-line flags (option name -> argparse keywords)."""

    name: str
    write: Callable[..., Path]
    help: str
    options: dict[str, dict] = field(default_factory=dict)


FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add (or replace) an export format."""
    FORMATS[fmt.name] = fmt
    return fmt


register_format(ExportFormat("hf", export_hf, "a plain transformers folder; every layer must have the same shape "
                                              "(prune with --scope uniform)"))
register_format(ExportFormat("onnx", export_onnx, "one ONNX file for ONNX Runtime (every family; dynamic batch and "
                                                  "sequence axes)", onnx.OPTIONS))
register_format(ExportFormat("gguf", export_gguf, "one GGUF file for llama.cpp (Llama-family LLMs; layers of "
                                                  "different widths use llama.cpp's 'deci' architecture)",
                             gguf.OPTIONS))


def export(model: nn.Module, out: str | Path, format: str = "hf", **options) -> Path:
    """Write ``model`` (compacted by attprune, or dense) in ``format``; returns the path written.

    >>> attprune.export(model, "plain/", format="hf")                                   # uniform plans
    >>> attprune.export(model, "model.onnx", format="onnx", example=batch)
    >>> attprune.export(model, "model.gguf", format="gguf", tokenizer=tokenizer, dtype="f16")

    ``options`` go to the format's writer (``export_hf``, ``export_onnx``, ``export_gguf``).
    The file or folder appears whole or not at all.
    """
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[format].write(model, out, **options)


__all__ = ["ExportFormat", "FORMATS", "LayerShape", "export", "export_gguf", "export_hf", "export_onnx",
           "layer_shapes", "register_format"]
