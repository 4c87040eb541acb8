"""``format="gguf"``: Llama-family decoder LLMs for llama.cpp (and what embeds it: llama-cpp-python,
Ollama, LM Studio), layers of different widths included.

Architecture: ``llama`` when every layer has the same shape, else llama.cpp's ``deci`` (its
architecture for models whose layers differ: per-layer arrays of ``feed_forward_length``,
``attention.head_count`` and ``attention.head_count_kv``; the same tensors as ``llama``).
A layer left without FFN neurons or heads keeps one unit whose weights are zero (an exact
no-op): llama.cpp reads the head size from layer 0's head count, and its ``deci`` graph
skips the residual update of a layer without FFN.  Query and key rows are reordered per
head for llama.cpp's rotary layout (pairs of adjacent values) as its own converter does.

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

from ..errors import ExportError, missing_dependency
from .shapes import layer_shapes

FAMILIES = ("llama", "mistral", "qwen2")
DTYPES = ("f32", "f16", "q8_0")
#: Hugging Face pre-tokenizers whose splitting llama.cpp reproduces under that name (verified in tests)
PRE_TOKENIZERS = {json.dumps({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True}, sort_keys=True): "gpt-2"}


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
        raise ExportError(f"format='gguf' writes plain rotary embeddings; this model uses rope_type {kind!r}")
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_model(model: nn.Module) -> None:
    config = model.config
    if config.model_type not in FAMILIES:
        raise ExportError(f"format='gguf' exports the Llama family ({', '.join(FAMILIES)}), not "
                          f"{config.model_type!r}; use format='onnx'")
    if not type(model).__name__.endswith("ForCausalLM"):
        raise ExportError(f"format='gguf' exports a causal LM (…ForCausalLM), not {type(model).__name__}")
    window = getattr(config, "sliding_window", None)
    if window and (config.model_type == "mistral" or getattr(config, "use_sliding_window", False)):
        raise ExportError("format='gguf' does not write a sliding attention window; set config.sliding_window=None "
                          "if the prompts never exceed it")


def _rotary_rows(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """HF's rotary layout (halves) to llama.cpp's (adjacent pairs), per head, for q/k rows."""
    shape = weight.shape
    return weight.reshape(-1, 2, head_dim // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def _padded_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    return weight if weight.shape[0] >= rows else torch.cat([weight, weight.new_zeros(rows - weight.shape[0],
                                                                                      *weight.shape[1:])])


def _padded_cols(weight: torch.Tensor, cols: int) -> torch.Tensor:
    return weight if weight.shape[1] >= cols else torch.cat([weight, weight.new_zeros(weight.shape[0],
                                                                                      cols - weight.shape[1])], 1)


def _layer_tensors(model: nn.Module, i: int, shape, head_dim: int) -> dict[str, torch.Tensor]:
    """One block's tensors under llama.cpp's names; an empty FFN or attention gets one zero unit."""
    layer = model.model.layers[i]
    hidden = model.config.hidden_size
    out = {f"blk.{i}.attn_norm.weight": layer.input_layernorm.weight,
           f"blk.{i}.ffn_norm.weight": layer.post_attention_layernorm.weight}
    n_ff = max(shape.ffn, 1)
    mlp = layer.mlp
    out[f"blk.{i}.ffn_gate.weight"] = _padded_rows(mlp.gate_proj.weight, n_ff)
    out[f"blk.{i}.ffn_up.weight"] = _padded_rows(mlp.up_proj.weight, n_ff)
    out[f"blk.{i}.ffn_down.weight"] = _padded_cols(mlp.down_proj.weight, n_ff)
    attention = layer.self_attn
    n_q, n_kv = max(shape.heads, 1), max(shape.kv_heads, 1)
    projections = {"attn_q": ("q_proj", n_q), "attn_k": ("k_proj", n_kv), "attn_v": ("v_proj", n_kv)}
    for name, (proj, heads) in projections.items():
        module = getattr(attention, proj, None)
        weight = module.weight if module is not None else torch.zeros(0, hidden)
        tensors = {"weight": _padded_rows(weight, heads * head_dim)}
        if module is not None and module.bias is not None:
            tensors["bias"] = _padded_rows(module.bias, heads * head_dim)
        for kind, t in tensors.items():
            out[f"blk.{i}.{name}.{kind}"] = _rotary_rows(t, head_dim) if name != "attn_v" else t
    o_proj = attention.o_proj
    out[f"blk.{i}.attn_output.weight"] = _padded_cols(o_proj.weight, n_q * head_dim)
    if o_proj.bias is not None:
        out[f"blk.{i}.attn_output.bias"] = o_proj.bias
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
    writer.add_tokenizer_model("gpt2")
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


def _add_hyperparameters(writer, config, shapes: list, uniform: bool) -> None:
    """Sizes, rotary and norm settings; per-layer arrays where the layers differ (``deci``)."""
    per_layer = (lambda values: values[0]) if uniform else list
    head_dim = shapes[0].head_dim
    writer.add_block_count(len(shapes))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(per_layer([s.ffn for s in shapes]))
    writer.add_head_count(per_layer([s.heads for s in shapes]))
    writer.add_head_count_kv(per_layer([s.kv_heads for s in shapes]))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)


def export_gguf(model: nn.Module, out: str | Path, *, tokenizer, dtype: str = "f16",
                tokenizer_pre: str | None = None) -> Path:
    """Write a Llama-family causal LM (compacted or dense) as one GGUF file for llama.cpp.

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
    _check_model(model)
    config = model.config
    shapes = [replace(s, ffn=max(s.ffn, 1), heads=max(s.heads, 1), kv_heads=max(s.kv_heads, 1))
              for s in layer_shapes(model)]  # an empty layer keeps one zero unit
    head_dim = shapes[0].head_dim
    if any(s.ffn % 32 and s.ffn != config.intermediate_size for s in shapes):
        warnings.warn("pruned FFN widths that are not multiples of 32 make llama.cpp's prompt processing slower "
                      "than the dense model's (measured: bench/results/export/); make the plan with "
                      "round_to={'ffn': 32}", UserWarning, stacklevel=3)
    uniform = len({(s.ffn, s.heads, s.kv_heads) for s in shapes}) == 1

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama" if uniform else "deci")
    try:
        writer.add_name(getattr(config, "_name_or_path", "") or type(model).__name__)
        _add_hyperparameters(writer, config, shapes, uniform)
        writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
        _add_tokenizer(writer, tokenizer, config.vocab_size, tokenizer_pre)
        tensors = {"token_embd.weight": model.model.embed_tokens.weight, "output_norm.weight": model.model.norm.weight}
        if not config.tie_word_embeddings:
            tensors["output.weight"] = model.lm_head.weight
        for i, shape in enumerate(shapes):
            tensors.update(_layer_tensors(model, i, shape, head_dim))
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
