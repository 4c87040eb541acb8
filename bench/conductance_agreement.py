"""How far does conductance (one IG path through the embeddings) agree with per-site IG?

On the packaged MiniLM with the demo's fitted sentiment head and the built-in sentences:
per site, the Spearman rank correlation of |mean score| between ``method="conductance"``
and ``method="ig"``, and the overlap of the units each keeps at 50% per-site sparsity.
Also the wall time of each.  Results: bench/results/conductance_agreement.json.

    python bench/conductance_agreement.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

import attprune
from attprune.experiments.demo import train_classifier
from attprune.models import load_minilm_classifier
from attprune.samples import LABELS, SENTENCES


def ranks(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([ranks(a), ranks(b)]))[0, 1])


def kept_overlap(a: torch.Tensor, b: torch.Tensor, sparsity: float = 0.5) -> float:
    keep = a.numel() - int(round(sparsity * a.numel()))
    top_a, top_b = set(a.topk(keep).indices.tolist()), set(b.topk(keep).indices.tolist())
    return len(top_a & top_b) / keep


def main(steps: int = 20, n: int = 16) -> dict:
    torch.set_num_threads(2)
    model, tok = load_minilm_classifier()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    batch = dict(enc, labels=torch.tensor(LABELS))
    train_classifier(model, batch)
    sub = {k: v[:n] for k, v in batch.items()}
    results, seconds = {}, {}
    for method in ("ig", "conductance"):
        start = time.perf_counter()
        results[method] = attprune.attribute(model, [sub], method=method, steps=steps,
                                             quadrature="riemann_trapezoid" if method == "conductance" else
                                             "riemann_right", progress=False)
        seconds[method] = round(time.perf_counter() - start, 2)
    report = {"steps": steps, "examples": n, "seconds": seconds, "sites": {}}
    for path, s in results["ig"].sites.items():
        a, b = s.mean.abs(), results["conductance"].sites[path].mean.abs()
        report["sites"][path] = {"kind": s.kind, "spearman_abs": round(spearman(a, b), 3),
                                 "kept_overlap_at_50": round(kept_overlap(a, b), 3)}
    for kind in ("ffn", "heads"):
        vals = [v for v in report["sites"].values() if v["kind"] == kind]
        report[f"{kind}_mean_spearman"] = round(sum(v["spearman_abs"] for v in vals) / len(vals), 3)
        report[f"{kind}_mean_kept_overlap_at_50"] = round(sum(v["kept_overlap_at_50"] for v in vals) / len(vals), 3)
    out = Path(__file__).parent / "results" / "conductance_agreement.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "sites"}, indent=2))
    return report


if __name__ == "__main__":
    main()
