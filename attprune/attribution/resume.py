"""Resumable attribution: partial sums, the position in the data, and what they came from.

``attribute(..., resume_dir=DIR, save_every=N)`` writes, every N scored batches,
``DIR/partial-rank{r}-of{w}.safetensors``: the running sums and counts of every site and, in
its metadata, the index of the next batch, the run's settings (those that decide the
scores, and the sites), a digest of the model's weights and a digest of the batches read so
far. A later call finds it, checks all of them (a mismatch is refused, naming what differs),
skips the batches already scored and goes on, so an interrupted run (even SIGKILL) ends with
the same scores as an uninterrupted one. Each save replaces the previous file whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import devices
from ..errors import ResumeMismatchError
from ..io import tensors_digest
from .scores import Scores, SiteScores


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter (offloaded ones read from their store)."""
    def named():
        for prefix, module in model.named_modules():
            for name, _ in module.named_parameters(recurse=False):
                yield f"{prefix}.{name}" if prefix else name, devices.read(module, name)
    return tensors_digest(named())


class DataDigest:
    """A running digest of the batches in the order they are read (every rank reads them all)."""

    def __init__(self):
        self._hash = hashlib.sha256()
        self.batches = 0

    def add(self, batch) -> None:
        items = sorted(batch.items()) if isinstance(batch, dict) else [("batch", batch)]
        for key, value in items:
            self._hash.update(str(key).encode())
            if torch.is_tensor(value):
                self._hash.update(f"{tuple(value.shape)}{value.dtype}".encode())
                self._hash.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            else:
                self._hash.update(repr(value).encode())
        self.batches += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass
class Resumed:
    """What an interrupted run left: its sums, where to go on, and the data it had read."""

    sites: dict[str, SiteScores]
    next_batch: int
    data_digest: str


class PartialRun:
    """The partial sums of one rank of one run.

    ``settings``: what decides the scores (JSON-able); ``model``: whose weights the run reads
    (digested only when a partial file is read or written, not on every fresh run);
    ``n_batches``: the data's length when it has one.
    """

    def __init__(self, folder: str | Path, settings: dict, model: nn.Module, n_batches: int | None,
                 rank: int = 0, world_size: int = 1):
        self.folder, self.model, self.n_batches, self.world_size = Path(folder), model, n_batches, world_size
        self.settings = json.loads(json.dumps(settings, default=str))  # as it reads back
        self.path = self.folder / f"partial-rank{rank}-of{world_size}.safetensors"
        self._weights: str | None = None

    @property
    def weights(self) -> str:
        if self._weights is None:
            self._weights = weights_digest(self.model)
        return self._weights

    def load(self) -> Resumed | None:
        """The interrupted run's state, or None when there is nothing to resume."""
        if not self.path.is_file():
            others = sorted(p.name for p in self.folder.glob("partial-rank*-of*.safetensors"))
            if others:
                self._refuse(f"its number of processes (found {', '.join(others)}; this run has "
                             f"{self.world_size})")
            return None
        partial = Scores.load(self.path)
        meta = partial.meta
        saved = meta.get("settings", {})
        differ = [f"{k}: {saved.get(k)!r} then, {v!r} now" for k, v in self.settings.items() if saved.get(k) != v]
        if differ:
            self._refuse(f"its settings ({'; '.join(differ)})")
        if meta.get("weights") != self.weights:
            self._refuse("the model's weights (another checkpoint, or trained since)")
        then = meta.get("n_batches")
        if then is not None and self.n_batches is not None and then != self.n_batches:
            self._refuse(f"the data's length ({then} batches then, {self.n_batches} now)")
        return Resumed(partial.sites, int(meta["next_batch"]), meta["data"])

    def check_data(self, resumed: Resumed, read: DataDigest) -> None:
        """Refuse to go on when the batches read before the resume point are not those the
        interrupted run scored."""
        if read.batches < resumed.next_batch:
            self._refuse(f"the data ({read.batches} batches now; the run had scored {resumed.next_batch})")
        if read.hexdigest() != resumed.data_digest:
            self._refuse(f"the data (the first {resumed.next_batch} batches hold other values)")

    def _refuse(self, what: str) -> None:
        raise ResumeMismatchError(f"the partial run in {self.folder} differs in {what}; delete it (CLI: run "
                                  "without --resume) or choose another folder")

    def save(self, sites: dict[str, SiteScores], next_batch: int, data: DataDigest) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"settings": self.settings, "weights": self.weights,
                "data": data.hexdigest(), "next_batch": next_batch, "n_batches": self.n_batches}
        Scores(sites, meta).save(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()  # only when empty: other ranks' files stay
        except OSError:
            pass
