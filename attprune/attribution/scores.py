"""``Scores``: per-unit attribution statistics of every site, mergeable and saved as safetensors.

Per site we keep sums, not means: the signed sum, the sum of absolute values and the sum
of squares of the per-example unit scores, and the example count.  Means, means of
absolutes and spreads follow, and two runs over different data merge exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError, MissingFileError
from ..io import atomic_path
from .config import AttributionConfig
from ..sites import FFN, HEADS, UNIT_KINDS

FORMAT = "attprune.scores/1"
_STATS = ("sum", "sum_abs", "sum_sq")
MEAN_INPUT = "input_mean"


@dataclass
class SiteScores:
    """Running statistics of one site's per-example unit scores (float32, or float64)."""

    kind: str
    sum: torch.Tensor
    sum_abs: torch.Tensor
    sum_sq: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, kind: str, n_units: int, dtype: torch.dtype = torch.float32) -> "SiteScores":
        z = torch.zeros(n_units, dtype=dtype)
        return cls(kind, z.clone(), z.clone(), z.clone(), 0)

    def add(self, per_example: torch.Tensor) -> None:
        """Accumulate a [examples, units] block of scores."""
        per_example = per_example.detach().to("cpu", self.sum.dtype)
        if per_example.dim() != 2 or per_example.shape[1] != self.sum.numel():
            raise InputError(f"expected [examples, {self.sum.numel()}] scores, got {tuple(per_example.shape)}")
        self.sum += per_example.sum(0)
        self.sum_abs += per_example.abs().sum(0)
        self.sum_sq += per_example.square().sum(0)
        self.count += per_example.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.sum_abs / max(self.count, 1)

    @property
    def rms(self) -> torch.Tensor:
        """The root mean square of the per-example scores."""
        return (self.sum_sq / max(self.count, 1)).sqrt()

    @property
    def std(self) -> torch.Tensor:
        n = max(self.count, 1)
        return (self.sum_sq / n - self.mean.square()).clamp_min(0).sqrt()

    def merged(self, other: "SiteScores") -> "SiteScores":
        if other.kind != self.kind or other.sum.shape != self.sum.shape:
            raise InputError("cannot merge scores of different sites")
        return SiteScores(self.kind, self.sum + other.sum, self.sum_abs + other.sum_abs,
                          self.sum_sq + other.sum_sq, self.count + other.count)


@dataclass
class Scores:
    """Attribution scores of every site of a model.

    >>> scores = attprune.attribute(model, batches)
    >>> scores.ffn["bert.encoder.layer.0.output.dense"].shape   # signed mean per neuron
    torch.Size([1536])
    >>> scores.save("scores.safetensors"); attprune.Scores.load("scores.safetensors")
    """

    sites: dict[str, SiteScores]
    meta: dict = field(default_factory=dict)
    #: site path -> its mean input over the attribution data (``baseline="mean"`` computes them;
    #: ``attprune.input_means`` otherwise): where IG's mean path starts, what compaction compensates
    input_means: dict[str, torch.Tensor] | None = None

    def _means(self, kind: str, stat: str = "mean") -> dict[str, torch.Tensor]:
        return {p: getattr(s, stat) for p, s in self.sites.items() if s.kind == kind}

    @property
    def ffn(self) -> dict[str, torch.Tensor]:
        """FFN site path -> signed mean score per neuron."""
        return self._means(FFN)

    @property
    def heads(self) -> dict[str, torch.Tensor]:
        """Attention output projection path -> signed mean score per query head."""
        return self._means(HEADS)

    def mean_abs(self, kind: str) -> dict[str, torch.Tensor]:
        """Site path -> mean over examples of |per-example score|."""
        return self._means(kind, "mean_abs")

    def std(self, kind: str) -> dict[str, torch.Tensor]:
        return self._means(kind, "std")

    @property
    def n_examples(self) -> int:
        return max((s.count for s in self.sites.values()), default=0)

    def merge(self, other: "Scores") -> "Scores":
        """Scores of the union of both runs' examples (same model, same method)."""
        if set(self.sites) != set(other.sites):
            raise InputError("cannot merge scores of different site sets")
        mine, theirs = self.settings(), other.settings()
        for key in mine:
            if mine[key] != theirs.get(key):
                raise InputError(f"cannot merge scores computed with different {key}: {mine[key]!r} vs "
                                 f"{theirs.get(key)!r}")
        sites = {p: s.merged(other.sites[p]) for p, s in self.sites.items()}
        return Scores(sites, dict(self.meta, n_examples=self.n_examples + other.n_examples))

    def join(self, other: "Scores") -> "Scores":
        """Scores of both runs' sites together (other sites of the same model and settings, e.g.
        FFN and heads scored in two runs), as if scored in one run.

        >>> both = ffn_scores.join(head_scores)
        >>> attprune.make_plan(both, ffn=0.3, heads=0.3)
        """
        shared = set(self.sites) & set(other.sites)
        if shared:
            raise InputError(f"cannot join scores that share sites ({sorted(shared)[:3]}); use merge for more examples")
        mine, theirs = self.settings(), other.settings()
        for key in set(mine) - {"units"}:
            if mine[key] != theirs.get(key):
                raise InputError(f"cannot join scores computed with different {key}: {mine[key]!r} vs "
                                 f"{theirs.get(key)!r}")
        meta = dict(self.meta, kv_heads={**self.meta.get("kv_heads", {}), **other.meta.get("kv_heads", {})})
        if "units" in mine:
            meta["units"] = sorted(set(mine["units"]) | set(theirs.get("units", ())))
        means = {**(self.input_means or {}), **(other.input_means or {})}
        return Scores({**self.sites, **other.sites}, meta, means or None)

    def settings(self) -> dict:
        """The recorded settings that decide the scores (``AttributionConfig.result_settings``)."""
        return {k: self.meta[k] for k in AttributionConfig.result_fields() if k in self.meta}

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` file (atomically: a failure leaves no partial file)."""
        path = Path(path)
        tensors = {f"{p}::{stat}": getattr(s, stat).contiguous() for p, s in self.sites.items() for stat in _STATS}
        tensors.update({f"{p}::{MEAN_INPUT}": m.contiguous() for p, m in (self.input_means or {}).items()})
        index = {p: {"kind": s.kind, "count": s.count} for p, s in self.sites.items()}
        metadata = {"format": FORMAT, "sites": json.dumps(index), "meta": json.dumps(self.meta, default=str)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Scores":
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"no scores file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") == FORMAT:
                    index = json.loads(metadata["sites"])
                    sites = {p: SiteScores(info["kind"], *(f.get_tensor(f"{p}::{stat}") for stat in _STATS),
                                           info["count"]) for p, info in index.items()}
                    means = {p: f.get_tensor(f"{p}::{MEAN_INPUT}") for p in index if f"{p}::{MEAN_INPUT}" in f.keys()}
                    meta = json.loads(metadata.get("meta", "{}"))
        except Exception as err:  # safetensors raises its own error types for damaged files
            raise InputError(f"{path} is not a readable attprune scores file ({err}); re-run the scoring") from err
        if metadata.get("format") != FORMAT:
            raise InputError(f"{path} is not an attprune scores file (format {metadata.get('format')!r})")
        for p, s in sites.items():
            if s.kind not in UNIT_KINDS:
                raise InputError(f"{path}: site {p} has unknown kind {s.kind!r}")
        return cls(sites, meta, means or None)

    def summary(self, top: int = 3) -> str:
        """A one-screen text summary: per kind, score spread and the sites with most mass."""
        lines = [f"method={self.meta.get('method')} examples={self.n_examples} sites={len(self.sites)}"]
        for kind in UNIT_KINDS:
            means = self.mean_abs(kind)
            if not means:
                continue
            mass = {p: float(v.sum()) for p, v in means.items()}
            allv = torch.cat([v.flatten() for v in self._means(kind).values()])
            q = torch.quantile(allv.abs().double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
            lines.append(f"{kind}: {len(means)} sites, {allv.numel()} units; |mean score| "
                         f"p10={q[0]:.3g} p50={q[1]:.3g} p90={q[2]:.3g}")
            for p in sorted(mass, key=mass.get, reverse=True)[:top]:
                lines.append(f"  {p}: mean |score| per unit {mass[p] / means[p].numel():.3g}")
        return "\n".join(lines)
