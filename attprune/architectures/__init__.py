"""Architecture families: where each keeps its FFN neurons and attention heads, and how it
stores its heads. One file per family (``bert.py``, ``t5.py``...); ``spec.py`` holds the
description types and the registry that ``register_architecture`` adds a family to.
"""

from . import bert, distilbert, gpt2, llama, t5  # noqa: F401  (register the built-in families)
from .spec import (
    ArchSpec,
    AttentionSpec,
    ConfigKeys,
    FFNSpec,
    GGUFLayout,
    HeadLayout,
    NoHeadAttention,
    missing_head_layout,
    register_architecture,
    spec_for,
    unregister_architecture,
)

__all__ = ["ArchSpec", "AttentionSpec", "ConfigKeys", "FFNSpec", "GGUFLayout", "HeadLayout", "NoHeadAttention", "missing_head_layout",
           "register_architecture", "spec_for", "unregister_architecture"]
