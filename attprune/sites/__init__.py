"""Sites: where the prunable units (FFN neurons, attention heads) of a model live."""

from . import families as _families  # noqa: F401  (registers the built-in specs)
from .site import FFN, HEADS, UNIT_KINDS, Site, weight_out_in
from .spec import (
    ArchSpec,
    AttentionSpec,
    FFNSpec,
    UnsupportedModelError,
    find_embeddings,
    find_sites,
    register_architecture,
    spec_for,
)

__all__ = [
    "FFN", "HEADS", "UNIT_KINDS", "Site", "weight_out_in", "ArchSpec", "AttentionSpec", "FFNSpec",
    "UnsupportedModelError", "find_embeddings", "find_sites", "register_architecture", "spec_for",
]
