"""Adapting by pruning: learn a task as a mask over frozen pre-trained weights (method B).

``config`` (``AdaptConfig``: the settings, argument and saved record of a run),
``estimator`` (tempered sigmoid, theta), ``targets`` (what is masked: weights or units),
``head`` (the trained task head), ``model`` (the task model over a shared encoder),
``train`` (``adapt``), ``baselines`` (feature extraction, fine-tuning, random, magnitude,
IMP, GMP), ``store`` (bit-packed save, ``apply_adapted``).

>>> config = attprune.AdaptConfig(sparsity=0.9, decay="auto")
>>> attprune.adapt(model, batches, config).save("adapted/mr")
>>> task_model = attprune.apply_adapted(model, "adapted/mr")
"""

from ..errors import AdaptedMismatchError
from .config import INITS, AdaptConfig
from .estimator import MaskScores, keep_top, tempered_sigmoid
from .head import HEAD_KINDS, LayerWeightedHead
from .model import AdaptedModel
from .store import apply_adapted, pack_bits, unpack_bits
from .targets import GRANULARITIES, MaskTarget, mask_targets
from .train import Adapted, adapt

__all__ = ["AdaptConfig", "Adapted", "AdaptedMismatchError", "AdaptedModel", "GRANULARITIES", "HEAD_KINDS", "INITS",
           "LayerWeightedHead", "MaskScores", "MaskTarget", "adapt", "apply_adapted", "keep_top", "mask_targets",
           "pack_bits", "tempered_sigmoid", "unpack_bits"]
