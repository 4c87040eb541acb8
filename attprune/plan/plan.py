"""``Plan``: which units of every site a pruned model keeps (JSON on disk)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import MissingFileError, PlanMismatchError
from ..io import write_json
from ..sites import FFN, HEADS, Site, find_sites

FORMAT = "attprune.plan/1"


@dataclass
class Plan:
    """Kept units per site: sorted LongTensors of the indices that stay.

    >>> plan = attprune.make_plan(scores, ffn=0.5, heads=0.25)
    >>> plan.ffn["bert.encoder.layer.0.output.dense"]      # kept neuron indices
    >>> plan.save("plan.json"); attprune.Plan.load("plan.json")
    """

    ffn: dict[str, torch.Tensor]
    heads: dict[str, torch.Tensor]
    sizes: dict[str, int]  # original units per site
    meta: dict = field(default_factory=dict)

    def kept(self, site_path: str) -> torch.Tensor | None:
        return self.ffn.get(site_path, self.heads.get(site_path))

    def __post_init__(self):
        for kind, kept in ((FFN, self.ffn), (HEADS, self.heads)):
            for path, idx in kept.items():
                idx = torch.as_tensor(idx, dtype=torch.long)
                n = self.sizes.get(path)
                if n is None:
                    raise PlanMismatchError(f"plan has no size for {kind} site {path}")
                if idx.dim() != 1 or (idx.numel() and (idx.min() < 0 or idx.max() >= n)) \
                        or not torch.equal(idx, idx.unique()):
                    raise PlanMismatchError(f"{kind} site {path}: kept indices must be sorted, unique and in [0, {n})")
                kept[path] = idx

    # -- checking against a model ----------------------------------------------------------

    def validate(self, model: nn.Module) -> list[Site]:
        """The model's sites this plan touches; a clear error where the plan does not fit."""
        sites = {s.path: s for s in find_sites(model)}
        touched = []
        for kind, kept in ((FFN, self.ffn), (HEADS, self.heads)):
            for path in kept:
                site = sites.get(path)
                if site is None or site.kind != kind:
                    raise PlanMismatchError(
                        f"the plan prunes {kind} site {path}, which {type(model).__name__} does not have; "
                        "was the plan made for another model?")
                if site.n_units != self.sizes[path]:
                    raise PlanMismatchError(
                        f"site {path} has {site.n_units} units in this model but {self.sizes[path]} in the plan; "
                        "was the plan made for another model (or is the model already compacted)?")
                touched.append(site)
        return touched

    # -- files ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"format": FORMAT,
                "ffn": {p: v.tolist() for p, v in self.ffn.items()},
                "heads": {p: v.tolist() for p, v in self.heads.items()},
                "sizes": self.sizes, "meta": self.meta}

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise PlanMismatchError(f"not an attprune plan (format {found!r})")
        return cls({p: torch.tensor(v, dtype=torch.long) for p, v in data["ffn"].items()},
                   {p: torch.tensor(v, dtype=torch.long) for p, v in data["heads"].items()},
                   {p: int(n) for p, n in data["sizes"].items()}, data.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"no plan file at {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise PlanMismatchError(f"{path} is not valid plan JSON ({err}); re-create the plan") from err
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as err:
            raise PlanMismatchError(f"{path} is an incomplete plan (missing {err})") from err

    # -- reporting --------------------------------------------------------------------------

    def kept_fraction(self, kind: str) -> float:
        kept = self.ffn if kind == FFN else self.heads
        total = sum(self.sizes[p] for p in kept)
        return sum(v.numel() for v in kept.values()) / total if total else 1.0

    def summary(self) -> str:
        """Kept units per site (``attprune.compact.cost_summary`` adds parameters and FLOPs)."""
        lines = []
        for kind, kept in ((FFN, self.ffn), (HEADS, self.heads)):
            if kept:
                lines.append(f"{kind}: keep {sum(v.numel() for v in kept.values())}/"
                             f"{sum(self.sizes[p] for p in kept)} units ({self.kept_fraction(kind):.1%})")
                lines += [f"  {p}: {v.numel()}/{self.sizes[p]}" for p, v in kept.items()]
        return "\n".join(lines)
