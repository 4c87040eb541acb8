"""``AdaptConfig``: the settings of one adapting-by-pruning run, in one frozen object.

It is the argument of ``adapt``, what ``Adapted.config`` holds, the ``"config"`` entry of
the saved task's ``attprune_adapted.json``, and what ``AdaptConfig.from_pretrained`` reads
back (as PEFT's ``LoraConfig``, but the task folder keeps a single JSON file).

>>> config = AdaptConfig(granularity="units", sparsity=0.7, epochs=2)
>>> result = attprune.adapt(model, batches, config)
>>> result.save("adapted/mr")
>>> AdaptConfig.from_pretrained("adapted/mr") == config
True

The config holds what was asked for: ``decay="auto"`` and ``num_labels=None`` stay as
given, so a loaded config reruns the same way; the numbers they resolved to are recorded
beside it (``Adapted.stats["decay"]``, ``Adapted.head.num_labels``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import AdaptedMismatchError, InputError
from ..settings import Settings, check_int, option
from .head import HEAD_KINDS
from .taskfile import read_task_file
from .targets import GRANULARITIES, check_embeddings

#: initialisations of theta: random N(init_mean, init_std^2) draws (the paper's), or the same
#: draws handed out in the order of |w|
INITS = ("normal", "magnitude")


def _decay(text: str) -> float | str:
    return text if text == "auto" else float(text)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_sparsity(sparsity: float) -> None:
    """``sparsity`` must be a fraction of connections to remove, in [0, 1)."""
    if not _is_number(sparsity) or not 0 <= sparsity < 1:
        raise InputError(f"sparsity must be a fraction of connections to remove in [0, 1), got {sparsity!r}")


def _check_at_least(name: str, value, minimum: float, strict: bool = False) -> None:
    if not _is_number(value) or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise InputError(f"{name} must be a number {bound}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class AdaptConfig(Settings):
    """The settings of ``adapt``; every field is checked on creation (``InputError``).

    >>> AdaptConfig(sparsity=0.9, decay="auto").replace(epochs=5).to_dict()["epochs"]
    5
    """

    granularity: str = option("weights", "mask single weights (unstructured) or FFN neurons and attention heads "
                                         "(compactable)", choices=GRANULARITIES)
    sparsity: float = option(0.5, "fraction of connections to remove, in [0, 1)")
    head: str = option("layer-weighted-mlp", "task head over the softmax-weighted first-token vectors of every "
                                             "layer", choices=HEAD_KINDS)
    epochs: int = option(3, "passes over the data (training stops earlier once the sparsity is reached)")
    lr_mask: float = option(2e-5, "Adam step size of the mask scores theta")
    lr_head: float = option(2e-5, "Adam step size of the head")
    decay: float | str = option(2e-7, "constant push of every theta toward pruning, per step; 'auto': the push "
                                      "that reaches the sparsity near the last step (for short runs)", parse=_decay)
    t_forward: float = option(1e5, "sigmoid temperature in the forward pass")
    t_backward: float = option(1.0, "sigmoid temperature in the derivative")
    init: str = option("normal", "theta's N(init_mean, init_std^2) draws at random (the paper) or handed out in "
                                 "the order of |w| (the untrained mask is then magnitude pruning)", choices=INITS)
    init_mean: float = option(0.01, "mean of theta's initial normal draws")
    init_std: float = option(0.001 ** 0.5, "standard deviation of theta's initial normal draws")
    embeddings: bool = option(False, "also mask the embedding tables (weights only)")
    num_labels: int | None = option(None, "classes of the task head (default: the largest label + 1, or a "
                                          "classifier's own count if larger)")
    seed: int = option(0, "seed of theta's initialisation and the head")

    def check(self) -> None:
        check_sparsity(self.sparsity)
        check_int("epochs", self.epochs)
        if self.decay != "auto":
            if not _is_number(self.decay) or self.decay < 0:
                raise InputError(f"decay must be a number >= 0 or 'auto', got {self.decay!r}")
        for name in ("lr_mask", "lr_head", "init_std"):
            _check_at_least(name, getattr(self, name), 0)
        for name in ("t_forward", "t_backward"):
            _check_at_least(name, getattr(self, name), 0, strict=True)
        if not _is_number(self.init_mean):
            raise InputError(f"init_mean must be a number, got {self.init_mean!r}")
        if not isinstance(self.embeddings, bool):
            raise InputError(f"embeddings must be True or False, got {self.embeddings!r}")
        check_embeddings(self.granularity, self.embeddings)
        if self.num_labels is not None:  # None: inferred from the labels
            check_int("num_labels", self.num_labels, 2)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise InputError(f"seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "AdaptConfig":
        """The config a saved task was adapted with (``Adapted.save``'s folder).

        >>> AdaptConfig.from_pretrained("adapted/mr").sparsity
        0.5
        """
        data = read_task_file(Path(path))
        try:
            return cls.from_dict(data["config"])
        except (AttributeError, KeyError, TypeError, InputError) as err:
            raise AdaptedMismatchError(f"{path} holds no valid adapting config ({err}); save the task again") \
                from err
