"""Resumable attribution: partial sums and the position in the data, saved atomically.

``attribute(..., checkpoint=DIR, checkpoint_every=N)`` writes, every N scored batches,
``DIR/partial-rank{r}-of{w}.safetensors``: the running sums and counts of every site and,
in its metadata, the index of the next batch and a key of the run's settings.  A later call
with the same settings and data finds it, skips the batches already scored and goes on, so
an interrupted run (even SIGKILL) ends with the same scores as an uninterrupted one.
Each save replaces the previous file whole (temporary file, then rename).
"""

from __future__ import annotations

from pathlib import Path

from ..io import json_digest

from .scores import Scores, SiteScores


class CheckpointMismatchError(ValueError):
    """A partial run in the checkpoint folder was made with other settings."""


def run_key(settings: dict) -> str:
    """A short hash of everything that must match for partial sums to be continued."""
    return json_digest(settings)


class PartialRun:
    """The checkpoint of one rank of one run."""

    def __init__(self, folder: str | Path, key: str, rank: int = 0, world_size: int = 1):
        self.folder, self.key = Path(folder), key
        self.path = self.folder / f"partial-rank{rank}-of{world_size}.safetensors"

    def load(self) -> tuple[dict[str, SiteScores], int] | None:
        """(sums per site, index of the next batch), or None when there is nothing to resume."""
        if not self.path.is_file():
            return None
        scores = Scores.load(self.path)
        if scores.meta.get("run_key") != self.key:
            raise CheckpointMismatchError(
                f"{self.path} belongs to a run with other settings (model, method, steps, sites or data "
                "options differ); delete it or choose another checkpoint folder")
        return scores.sites, int(scores.meta["next_batch"])

    def save(self, sites: dict[str, SiteScores], next_batch: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        Scores(sites, {"run_key": self.key, "next_batch": next_batch}).save(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()  # only when empty: other ranks' files stay
        except OSError:
            pass
