"""What every family's compaction shares: per-layer head attributes and head-less attention."""

from __future__ import annotations

from torch import nn


def set_existing(module: nn.Module, **values) -> None:
    """Update the attributes a forward reads (only those this transformers version has)."""
    for name, value in values.items():
        if hasattr(module, name):
            setattr(module, name, value)


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


class HeadLayout:
    """How one family stores heads.  Subclasses say which attributes to update and what a
    head-less attention module looks like."""

    #: path (relative to the site's attention module) replaced when every head goes
    empty_path: str = ""
    #: the output projection's name inside the replaced module (None: it lives outside)
    empty_out_name: str | None = None
    #: number of values the replaced module's forward returns
    empty_outputs: int = 2

    def set_heads(self, attention: nn.Module, n_heads: int, n_kv_heads: int, head_dim: int) -> None:
        raise NotImplementedError

    def remove_all_heads(self, model: nn.Module, attention_path: str) -> None:
        path = ".".join(p for p in (attention_path, self.empty_path) if p)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, name)
        out = getattr(old, self.empty_out_name) if self.empty_out_name else None
        setattr(parent, name, NoHeadAttention(self.empty_out_name, out, self.empty_outputs))

    def finalize(self, model: nn.Module, head_sites: list, kept: dict) -> None:
        """Model-level work after every site was sliced (T5: per-layer position bias)."""
