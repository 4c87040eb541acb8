"""``format="gguf"``: decoder LLMs for llama.cpp (and what embeds it: llama-cpp-python, Ollama,
LM Studio), layers of different widths included, for every family registered with a
``GGUFLayout`` (``ArchSpec.gguf``: the Llama family's is in ``architectures/llama.py``).

Architecture: the layout's ``arch`` when every layer has the same shape, else its
``varied_arch`` (llama.cpp's ``deci``: per-layer arrays of ``feed_forward_length``,
``attention.head_count`` and ``attention.head_count_kv``; the same tensors).  A layer left
without FFN neurons or heads keeps one unit whose weights are zero (an exact no-op):
llama.cpp reads the head size from layer 0's head count, and its ``deci`` graph skips the
residual update of a layer without FFN.  Which dimension of a tensor holds units (rows of up /
q / k / v, columns of down / output projections) comes from the family's site description.
Query and key rows are reordered per head for llama.cpp's rotary layout (pairs of adjacent
values) as its own converter does.  Biases are written where the model has them (llama.cpp
applies ``ffn_down.bias`` and ``attn_output.bias``: a compensated compact model keeps them).

Tokenizer: byte-level BPE (``tokenizer.json`` of a fast tokenizer), written as llama.cpp's
``gpt2`` vocabulary with tokens, types, merges, special ids and the chat template; the
pre-tokenizer name is read from the tokenizer (``tokenizer_pre=`` overrides it).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..architectures import GGUFLayout, spec_for
from ..errors import ExportError, missing_dependency
from .shapes import layer_shapes

DTYPES = ("f32", "f16", "q8_0")
#: Hugging Face pre-tokenizers whose splitting llama.cpp reproduces under that name (verified in tests)
PRE_TOKENIZERS = {json.dumps({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True}, sort_keys=True): "gpt-2"}
#: llama.cpp's name of a byte-level BPE vocabulary (its tokenizer type, not a model family)
BPE_VOCABULARY = "gpt2"
#: the ``attprune export`` flags of this format (option -> argparse keywords)
OPTIONS = {"dtype": dict(choices=DTYPES, default="f16", help="weight type (vectors stay f32)"),
           "tokenizer_pre": dict(default=None, help="llama.cpp's pre-tokenizer name, when attprune cannot tell it "
                                                    "from the tokenizer")}
#: the unit dimension of a block tensor, by the site role of its module (``_roles``)
ROWS, COLUMNS = 0, 1


def _layout(model: nn.Module) -> GGUFLayout:
    spec = spec_for(model)
    if spec.gguf is None:
        raise ExportError(f"format='gguf' exports families registered with a GGUFLayout (ArchSpec(gguf=...), e.g. the "
                          f"Llama family); {spec.name!r} has none: use format='onnx'")
    if not type(model).__name__.endswith("ForCausalLM"):
        raise ExportError(f"format='gguf' exports a causal LM (…ForCausalLM), not {type(model).__name__}")
    if spec.gguf.check is not None:
        spec.gguf.check(model)
    return spec.gguf


def _roles(model: nn.Module) -> dict[str, tuple[str, int]]:
    """Module path relative to a block -> (what its units count: "ffn", "heads" or "kv", the
    dimension holding them), from the family's FFN and attention descriptions."""
    spec = spec_for(model)
    join = lambda *parts: ".".join(p for p in parts if p)  # noqa: E731
    roles = {}
    for ffn in spec.ffn:
        roles[join(ffn.module, ffn.down)] = ("ffn", COLUMNS)
        roles.update({join(ffn.module, up): ("ffn", ROWS) for up in ffn.up})
    for attention in spec.attention:
        roles[join(attention.module, attention.out)] = ("heads", COLUMNS)
        roles.update({join(attention.module, p): (kind, ROWS) for p, kind in
                      ((attention.q, "heads"), (attention.k, "kv"), (attention.v, "kv")) if p})
    return roles


def _rotary_rows(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """HF's rotary layout (halves) to llama.cpp's (adjacent pairs), per head, for q/k rows."""
    shape = weight.shape
    return weight.reshape(-1, 2, head_dim // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def _padded(tensor: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``tensor`` with zeros appended along ``dim`` up to ``size``."""
    missing = size - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim)


def _block_tensors(model: nn.Module, layout: GGUFLayout, block: nn.Module, i: int, shape,
                   roles: dict) -> dict[str, torch.Tensor]:
    """One block's tensors under llama.cpp's names; an empty FFN or attention gets one zero unit."""
    sizes = {"ffn": shape.ffn, "heads": shape.heads * shape.head_dim, "kv": shape.kv_heads * shape.head_dim}
    hidden = model.config.hidden_size
    out = {}
    for name, path in layout.block.items():
        module = block.get_submodule(path) if _has(block, path) else None  # q/k/v of a layer without heads
        role = roles.get(path)
        if module is None and (role is None or role[1] != ROWS):
            raise ExportError(f"format='gguf': block {i} has no {path}")
        tensors = {"weight": module.weight if module is not None else torch.zeros(0, hidden)}
        if module is not None and getattr(module, "bias", None) is not None:
            tensors["bias"] = module.bias
        for kind, tensor in tensors.items():
            if role is not None and (role[1] == ROWS or kind == "weight"):
                tensor = _padded(tensor, sizes[role[0]], role[1])
            if name in layout.rotary:
                tensor = _rotary_rows(tensor, shape.head_dim)
            out[f"blk.{i}.{name}.{kind}"] = tensor
    return out


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _model_tensors(model: nn.Module, layout: GGUFLayout) -> dict[str, torch.Tensor]:
    """The model-level tensors (embeddings, final norm, output head unless tied to the embeddings)."""
    out, seen = {}, set()
    for name, path in layout.tensors.items():
        if not _has(model, path):
            continue
        weight = model.get_submodule(path).weight
        if id(weight) not in seen:
            out[f"{name}.weight"] = weight
            seen.add(id(weight))
    return out


def _tensor_data(tensor: torch.Tensor, dtype: str):
    """(array, raw dtype) as the writer takes them: vectors stay float32, as llama.cpp's converter keeps them."""
    import gguf

    array = tensor.detach().to(torch.float32).cpu().numpy()
    if array.ndim == 1 or dtype == "f32":
        return array, None
    if dtype == "q8_0" and array.shape[-1] % 32 == 0:
        return gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return array.astype(np.float16), None


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ExportError("format='gguf' needs a fast (tokenizers-backed) tokenizer")
    return json.loads(backend.to_str())


def _pre_tokenizer(spec: dict, override: str | None) -> str:
    if override:
        return override
    key = json.dumps(spec.get("pre_tokenizer"), sort_keys=True)
    if key not in PRE_TOKENIZERS:
        raise ExportError(f"format='gguf' does not know llama.cpp's name for the pre-tokenizer {key}; pass "
                          "tokenizer_pre= one of llama.cpp's names (e.g. 'gpt-2', 'llama-bpe', 'qwen2', 'smollm')")
    return PRE_TOKENIZERS[key]


def _add_tokenizer(writer, tokenizer, n_vocab: int, pre: str | None) -> None:
    import gguf

    spec = _tokenizer_json(tokenizer)
    model = spec["model"]
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError("format='gguf' writes byte-level BPE tokenizers (GPT-2 style); this one is "
                          f"{model.get('type')!r}")
    tokens = {i: t for t, i in model["vocab"].items()}
    types = dict.fromkeys(tokens, gguf.TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    if max(tokens) >= n_vocab:
        raise ExportError(f"the tokenizer has ids up to {max(tokens)} but the model only {n_vocab} embeddings")
    for i in range(n_vocab):  # embeddings beyond the tokenizer: unused placeholders, as llama.cpp's converter
        tokens.setdefault(i, f"[PAD{i}]")
        types.setdefault(i, gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(BPE_VOCABULARY)
    writer.add_tokenizer_pre(_pre_tokenizer(spec, pre))
    writer.add_token_list([tokens[i] for i in range(n_vocab)])
    writer.add_token_types([types[i] for i in range(n_vocab)])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            add(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _add_hyperparameters(writer, config, layout: GGUFLayout, shapes: list, uniform: bool) -> None:
    """Sizes, then the layout's own settings (rotary, norm...); per-layer arrays where the layers differ."""
    per_layer = (lambda values: values[0]) if uniform else list
    head_dim = shapes[0].head_dim
    writer.add_block_count(len(shapes))
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(per_layer([s.ffn for s in shapes]))
    writer.add_head_count(per_layer([s.heads for s in shapes]))
    writer.add_head_count_kv(per_layer([s.kv_heads for s in shapes]))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    for key, value in layout.hyperparameters(config).items():
        getattr(writer, f"add_{key}")(value)


def export_gguf(model: nn.Module, out: str | Path, *, tokenizer, dtype: str = "f16",
                tokenizer_pre: str | None = None) -> Path:
    """Write a causal LM of a family with a ``GGUFLayout`` (compacted or dense) as one GGUF
    file for llama.cpp.

    >>> attprune.export(model, "pruned.gguf", format="gguf", tokenizer=tokenizer, dtype="f16")
    >>> llama_cpp.Llama("pruned.gguf").create_completion("The capital of France is")
    """
    try:
        import gguf
    except ImportError:
        raise missing_dependency("gguf", "format='gguf'", "export") from None
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r} for format='gguf'; choose one of {', '.join(DTYPES)}")
    if tokenizer is None:
        raise ExportError("format='gguf' needs tokenizer= (llama.cpp reads the vocabulary from the file)")
    layout = _layout(model)
    config = model.config
    shapes = [replace(s, ffn=max(s.ffn, 1), heads=max(s.heads, 1), kv_heads=max(s.kv_heads, 1))
              for s in layer_shapes(model)]  # an empty layer keeps one zero unit
    _warn_slow_widths(model, shapes)
    uniform = len({(s.ffn, s.heads, s.kv_heads) for s in shapes}) == 1
    if not uniform and layout.varied_arch is None:
        raise ExportError(f"format='gguf': llama.cpp's {layout.arch!r} needs every layer of one shape; make the plan "
                          "with scope='uniform'")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), layout.arch if uniform else layout.varied_arch)
    try:
        writer.add_name(getattr(config, "_name_or_path", "") or type(model).__name__)
        _add_hyperparameters(writer, config, layout, shapes, uniform)
        writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
        _add_tokenizer(writer, tokenizer, config.vocab_size, tokenizer_pre)
        tensors = _model_tensors(model, layout)
        roles = _roles(model)
        for i, shape in enumerate(shapes):
            tensors.update(_block_tensors(model, layout, model.get_submodule(shape.block), i, shape, roles))
        with torch.no_grad():
            for name, tensor in tensors.items():
                array, raw = _tensor_data(tensor, dtype)
                writer.add_tensor(name, array, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()  # a no-op once closed
        tmp.unlink(missing_ok=True)
    return out


def _warn_slow_widths(model: nn.Module, shapes: list) -> None:
    widths = spec_for(model).widths
    dense = getattr(model.config, widths.ffn, None) if widths is not None else None
    if any(s.ffn % 32 and s.ffn != dense for s in shapes):
        warnings.warn("pruned FFN widths that are not multiples of 32 make llama.cpp's prompt processing slower "
                      "than the dense model's (measured: bench/results/export/); make the plan with "
                      "round_to={'ffn': 32}", UserWarning, stacklevel=4)
