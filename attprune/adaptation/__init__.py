"""Adapting by pruning: learn a task as a mask over frozen pre-trained weights (method B).

``estimator`` (tempered sigmoid, theta), ``targets`` (what is masked: weights or units),
``head`` (the trained task head), ``model`` (the task model over a shared encoder),
``train`` (``adapt``), ``baselines`` (feature extraction, fine-tuning, random, magnitude,
IMP, GMP), ``store`` (bit-packed save, ``apply_adapted``).
"""

from .estimator import MaskScores, keep_top, tempered_sigmoid
from .head import LayerWeightedHead
from .model import AdaptedModel
from .store import AdaptedMismatchError, apply_adapted, pack_bits, unpack_bits
from .targets import GRANULARITIES, MaskTarget, mask_targets
from .train import Adapted, adapt

__all__ = ["Adapted", "AdaptedMismatchError", "AdaptedModel", "GRANULARITIES", "LayerWeightedHead", "MaskScores",
           "MaskTarget", "adapt", "apply_adapted", "keep_top", "mask_targets", "pack_bits", "tempered_sigmoid",
           "unpack_bits"]
