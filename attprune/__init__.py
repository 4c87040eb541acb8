"""attprune: task-specific compression of transformers by attribution-based pruning.

>>> import attprune
>>> scores = attprune.attribute(model, batches, units=("ffn", "heads"), method="ig", steps=20)
>>> scores.ffn, scores.heads
>>> task = attprune.adapt(model, batches, sparsity=0.5)        # adapting by pruning (learned masks)
"""

from .adaptation import Adapted, AdaptedMismatchError, AdaptedModel, adapt, apply_adapted
from .attribution import METHODS, QUADRATURES, Scores, SiteScores, attribute
from .checkpoint import CheckpointError, from_pretrained, save_pretrained
from .compact import compact, mask
from .plan import Plan, PlanMismatchError, make_plan
from .sites import (
    ArchSpec,
    AttentionSpec,
    FFNSpec,
    Site,
    UnsupportedModelError,
    find_sites,
    register_architecture,
)

__version__ = "0.1.0"

__all__ = [
    "ArchSpec", "AttentionSpec", "FFNSpec", "METHODS", "QUADRATURES", "Scores", "Site", "SiteScores",
    "UnsupportedModelError", "attribute", "find_sites", "register_architecture", "make_plan", "Plan",
    "PlanMismatchError", "mask", "compact", "save_pretrained", "from_pretrained", "CheckpointError",
    "adapt", "apply_adapted", "Adapted", "AdaptedModel", "AdaptedMismatchError",
]
