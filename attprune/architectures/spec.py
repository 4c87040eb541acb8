"""Architecture specs: where a family keeps its FFN neurons and attention heads, and how it
stores its heads. One ``register_architecture(ArchSpec(...))`` call is all attprune needs to
score, mask, compact and reload a family; the built-in ones are the other files of this
folder (one per family).

Examples: ``bert.py`` (the simplest family), ``t5.py`` (a layout with model-level work),
and the README's "Extending attprune" for a family written from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import InputError, UnsupportedModelError

STREAMS = ("input", "decoder")


@dataclass(frozen=True)
class FFNSpec:
    """Where an FFN lives inside a block.

    module: path of the FFN relative to the block ("" is the block itself; ``*``
        matches one path component, e.g. ``"layer.*.DenseReluDense"``).
    down: the output projection, relative to ``module`` (the site).
    up: the projections producing the intermediate neurons (those that exist are used).
    """

    module: str
    down: str
    up: tuple[str, ...]


@dataclass(frozen=True)
class AttentionSpec:
    """Where an attention module lives inside a block.

    module: path relative to the block (wildcards as in ``FFNSpec``).
    out: the output projection, relative to ``module`` (the site).
    q, k, v: separate projections, or ``qkv``: one fused q|k|v projection.
    """

    module: str
    out: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None


class NoHeadAttention(nn.Module):
    """An attention module whose every head was pruned.

    Its output is what remains of the output projection (its bias, or zeros), computed by
    that projection on a zero-width input so the checkpoint keeps the projection's name.
    ``out_name=None`` returns the empty context itself (for families whose output
    projection lives outside the attention core, e.g. BERT's ``attention.output.dense``).
    """

    def __init__(self, out_name: str | None = None, out_proj: nn.Module | None = None, n_outputs: int = 2):
        super().__init__()
        self.out_name = out_name
        if out_name is not None:
            self.add_module(out_name, out_proj)
        self.n_outputs = n_outputs

    def forward(self, *args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        out = hidden.new_zeros(*hidden.shape[:-1], 0)
        if self.out_name is not None:
            out = getattr(self, self.out_name)(out)
        return (out,) + (None,) * (self.n_outputs - 1)


HeadAttributes = Callable[[int, int, int], dict]


@dataclass(frozen=True)
class ConfigKeys:
    """The config attributes that state a family's widths, for a plain transformers checkpoint
    (``export(format="hf")``): FFN width, and, where the family can state removed heads, query
    heads, key/value heads and head size.

    ``heads=None``: removed heads cannot be stated (the family derives its head size from
    ``hidden_size / heads``, or, T5, every layer reads layer 0's relative position bias).
    ``ffn_bias`` / ``attention_bias``: the config flags that give the FFN / attention
    projections biases (Llama's ``mlp_bias`` / ``attention_bias``), so that a compacted model
    whose down / output projection carries a compensation bias (``compact(...,
    compensate=...)``) is a plain config too; ``None``: the family cannot state them.
    """

    ffn: str
    heads: str | None = None
    kv_heads: str | None = None
    head_dim: str | None = None
    ffn_bias: str | None = None
    attention_bias: str | None = None


@dataclass(frozen=True)
class GGUFLayout:
    """What llama.cpp needs of a family to run it from one GGUF file (``export(format="gguf")``).

    arch: llama.cpp's architecture when every layer has the same shape (``"llama"``).
    varied_arch: its architecture for layers of different widths (``"deci"``: per-layer
        arrays of FFN width and head counts), or None to refuse such models.
    tensors: model-level GGUF tensor names -> module paths (``"token_embd"`` ->
        ``"model.embed_tokens"``); a path the model lacks is skipped (tied output).
    block: per-block GGUF names -> module paths relative to the block
        (``"ffn_down"`` -> ``"mlp.down_proj"``); each module's ``weight`` (and ``bias``, when
        it has one) is written as ``blk.{i}.{name}.weight`` / ``.bias``.
    rotary: the block names whose rows are permuted from Hugging Face's rotary layout (halves)
        to llama.cpp's (adjacent pairs), per head (q and k).
    hyperparameters: ``config -> {gguf writer key: value}`` beyond the widths (context length,
        rope base, norm epsilon...): ``writer.add_<key>(value)`` for each.
    check: ``model -> None``; raises ``ExportError`` for what llama.cpp cannot run (a sliding
        window, another rope type).
    """

    arch: str
    block: dict[str, str]
    tensors: dict[str, str]
    hyperparameters: Callable[[object], dict]
    varied_arch: str | None = None
    rotary: tuple[str, ...] = ()
    check: Callable[[nn.Module], None] | None = None


class HeadLayout:
    """How a family stores heads: what compaction changes besides the sliced projections.

    Args:
        attributes: ``(n_heads, n_kv_heads, head_dim) -> {attribute: value}``, the per-layer
            attributes the attention forward reads (only those the module has are set, so one
            layout serves several versions of a family).
        module: path, relative to the attention module, of the module holding them.
        empty: path, relative to the attention module, replaced by a ``NoHeadAttention`` when
            every head of a layer goes.
        empty_out: the output projection's name inside that replaced module (``None``: the
            projection lives outside it and stays where it is).
        empty_outputs: how many values the replaced module's forward returns.

    A family with more to do (T5's per-layer position bias) subclasses it and overrides
    ``finalize``.
    """

    def __init__(self, attributes: HeadAttributes, *, module: str = "", empty: str = "",
                 empty_out: str | None = None, empty_outputs: int = 2):
        self.attributes, self.module, self.empty = attributes, module, empty
        self.empty_out, self.empty_outputs = empty_out, empty_outputs

    def set_heads(self, attention: nn.Module, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        """Update the attributes the forward reads (only those this transformers version has)."""
        owner = attention.get_submodule(self.module) if self.module else attention
        for name, value in self.attributes(n_heads, n_kv_heads, head_dim).items():
            if hasattr(owner, name):
                setattr(owner, name, value)

    def remove_all_heads(self, model: nn.Module, attention_path: str) -> None:
        """Put a ``NoHeadAttention`` where the layer's (now empty) attention core was."""
        path = ".".join(p for p in (attention_path, self.empty) if p)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, name)
        out = getattr(old, self.empty_out) if self.empty_out else None
        setattr(parent, name, NoHeadAttention(self.empty_out, out, self.empty_outputs))

    def finalize(self, model: nn.Module, head_sites: list, kept: dict) -> None:
        """Model-level work after every head site was sliced (nothing by default)."""


@dataclass(frozen=True)
class ArchSpec:
    """How to find the sites of one architecture family and how it stores its heads.

    name: a label for messages.
    model_types: ``config.model_type`` values this spec serves.
    blocks: ``(path, stream)`` pairs in execution order; ``path`` is the block list
        (an ``nn.ModuleList``) given by its full path or a dotted suffix of it
        (``"encoder.layer"`` matches ``bert.encoder.layer``); ``stream`` is ``"input"`` or
        ``"decoder"`` (which padding mask applies).
    attention / ffn: where those modules live inside a block.
    head_dim: ``config -> head dimension``.
    embeddings: suffix path(s) of the input-embedding module(s) whose output the
        gradient methods (``"conductance"``, ``"grad_x_act"``, ``"fisher"``) interpolate.
    heads: how the family stores heads (``HeadLayout``), for compaction; ``None`` for a
        family whose heads are scored and masked but never compacted.
    widths: the config attributes that state its widths (``ConfigKeys``), for plain
        transformers checkpoints; None: ``export(format="hf")`` refuses the family.
    gguf: what llama.cpp needs (``GGUFLayout``); None: ``export(format="gguf")`` refuses it.
    max_positions: ``config -> the longest input it has positions for`` (None: no limit);
        default ``config.max_position_embeddings`` for families that are not encoder-decoders.
    first_token_tail: for families whose sequence classifiers read only the first token of
        the last block's output: the path, relative to a block, of the module from which the
        block is position-wise (every tensor it is given can be cut to that token), e.g.
        BERT's ``"attention.output"`` (dense, residual, LayerNorm, then the FFN). Per-site IG
        then runs the last block's tail on one token for every site below that block (checked
        on the first batch of every run); ``None``: no such shortcut.
    """

    name: str
    model_types: tuple[str, ...]
    blocks: tuple[tuple[str, str], ...]
    attention: tuple[AttentionSpec, ...]
    ffn: tuple[FFNSpec, ...]
    head_dim: Callable[[object], int]
    embeddings: tuple[str, ...]
    heads: HeadLayout | None = None
    widths: ConfigKeys | None = None
    gguf: GGUFLayout | None = None
    max_positions: Callable[[object], int | None] | None = None
    first_token_tail: str | None = None

    def max_tokens(self, config) -> int | None:
        """The longest input ``config``'s model has positions for (None: no limit)."""
        if self.max_positions is not None:
            return self.max_positions(config)
        positions = getattr(config, "max_position_embeddings", None)
        if not isinstance(positions, int) or getattr(config, "is_encoder_decoder", False):
            return None
        return positions


_REGISTRY: dict[str, ArchSpec] = {}


def register_architecture(spec: ArchSpec, *, override: bool = False) -> ArchSpec:
    """Make attprune understand a new architecture family (see the module docstring)."""
    for stream in (s for _, s in spec.blocks):
        if stream not in STREAMS:
            raise InputError(f"unknown stream {stream!r} in spec {spec.name!r}; use one of {STREAMS}")
    for model_type in spec.model_types:
        if model_type in _REGISTRY and not override and _REGISTRY[model_type] is not spec:
            raise InputError(
                f"model_type {model_type!r} already has the spec {_REGISTRY[model_type].name!r}; "
                "pass override=True to replace it"
            )
        _REGISTRY[model_type] = spec
    return spec


def unregister_architecture(spec: ArchSpec) -> None:
    """Forget ``spec`` (every model type it serves)."""
    for model_type in spec.model_types:
        if _REGISTRY.get(model_type) is spec:
            del _REGISTRY[model_type]


def spec_for(model: nn.Module) -> ArchSpec:
    """The registered spec of ``model`` (by ``model.config.model_type``)."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in _REGISTRY:
        return _REGISTRY[model_type]
    known = ", ".join(sorted(_REGISTRY))
    raise UnsupportedModelError(
        f"attprune does not know where {type(model).__name__} (model_type={model_type!r}) keeps "
        f"its FFN neurons and attention heads. Known model types: {known}. Describe the "
        "architecture with attprune.ArchSpec(...) and call attprune.register_architecture(spec): "
        "see the 'Your own architecture' section of the README."
    )


def missing_head_layout(spec: ArchSpec) -> UnsupportedModelError:
    """The error for compacting the heads of a family registered without a head layout."""
    return UnsupportedModelError(
        f"the architecture {spec.name!r} was registered without a head layout, so its heads cannot be "
        "compacted; register it with ArchSpec(..., heads=HeadLayout(...)) (README, 'Extending attprune')")
