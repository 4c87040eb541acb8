"""attprune: task-specific compression of transformers by attribution-based pruning.

>>> import attprune
>>> scores = attprune.attribute(model, batches, units=("ffn", "heads"), method="ig")
>>> plan = attprune.make_plan(scores, ffn=0.5, heads=0.25)
>>> attprune.compact(model, plan); attprune.save_pretrained(model, "small/")
>>> task = attprune.adapt(model, batches, sparsity=0.5)        # adapting by pruning (learned masks)

The pipeline, one package per stage: ``architectures`` (where each family keeps its units)
-> ``sites`` -> ``attribution`` -> ``plan`` -> ``compact`` (mask, compact) -> ``pretrained``
(save / load) -> ``export`` (hf, onnx, gguf); ``ops`` holds the IG step kernels, ``adaptation`` method B.
"""

from ._version import __version__
from .adaptation import AdaptConfig, Adapted, AdaptedModel, adapt, apply_adapted
from .architectures import ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, GGUFLayout, HeadLayout, register_architecture
from .attribution import (
    METHODS,
    QUADRATURES,
    AttributionConfig,
    Method,
    Scores,
    SiteScores,
    attribute,
    input_means,
    register_method,
)
from .compact import compact, mask
from .errors import (
    AdaptedMismatchError,
    AttpruneError,
    CheckpointError,
    ExportError,
    InputError,
    PlanMismatchError,
    ResumeMismatchError,
    UnsupportedModelError,
)
from .export import export
from .plan import Plan, make_plan
from .pretrained import from_pretrained, save_pretrained
from .sites import Site, find_sites

__all__ = [
    "__version__", "AdaptConfig", "Adapted", "AdaptedModel", "adapt", "apply_adapted", "ArchSpec", "AttentionSpec",
    "ConfigKeys", "FFNSpec", "GGUFLayout", "HeadLayout", "register_architecture", "METHODS", "QUADRATURES", "AttributionConfig", "Method",
    "Scores", "SiteScores", "attribute", "input_means", "register_method", "compact", "mask", "AdaptedMismatchError",
    "AttpruneError", "CheckpointError", "ExportError", "export", "InputError", "PlanMismatchError", "ResumeMismatchError",
    "UnsupportedModelError", "Plan", "make_plan", "from_pretrained", "save_pretrained", "Site", "find_sites",
]
