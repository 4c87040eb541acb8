"""How many IG nodes ranking needs: each quadrature rule against a float64 Gauss-Legendre-64 reference.

    python bench/ig_fidelity.py            # ~7 min on 2 cores; writes bench/results/ig_fidelity_minilm.json

The demo's multi-task MiniLM (``DEMO_TRAINING``, trained and cached on first use), its
``hedge`` view in float64, 16 training sentences, all 12 sites. For each rule: seconds,
the largest error of the units' mean |per-example IG| relative to the site's largest
reference value, the Spearman correlation of those values with the reference (mean over
sites, per kind), and kept@50: the share of the units the reference keeps in a 50% plan
(``make_plan`` defaults) that the rule's plan keeps too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import attprune
from attprune.io import write_json
from attprune.tasks.encode import encode
from attprune.tasks.experiment import attribution_rows
from attprune.tasks.multitask import DEMO_TRAINING, load_or_train
from attprune.tasks.pack import TASKS

RESULTS = Path(__file__).resolve().parent / "results"
RULES = [("riemann_right", 20), ("gausslegendre", 2), ("gausslegendre", 3), ("gausslegendre", 4),
         ("gausslegendre", 6), ("gausslegendre", 8)]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [x.argsort().argsort().double() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def compare(run: attprune.Scores, ref: attprune.Scores) -> dict:
    out = {"max_rel_error": max(float((run.sites[p].mean_abs - s.mean_abs).abs().max() / s.mean_abs.abs().max())
                                for p, s in ref.sites.items())}
    for kind in ("ffn", "heads"):
        paths = [p for p, s in ref.sites.items() if s.kind == kind]
        rank_agreement = [spearman(run.sites[p].mean_abs, ref.sites[p].mean_abs) for p in paths]
        out[f"spearman_{kind}"] = sum(rank_agreement) / len(paths)
        plans = [attprune.make_plan(s, **{kind: 0.5}) for s in (run, ref)]
        kept = [getattr(plan, kind) for plan in plans]
        both = sum(len(set(kept[0][p].tolist()) & set(kept[1][p].tolist())) for p in paths)
        out[f"kept50_{kind}"] = both / sum(kept[1][p].numel() for p in paths)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=16, help="hedge training sentences scored")
    p.add_argument("--reference-steps", type=int, default=64, help="Gauss-Legendre nodes of the reference")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    mt = load_or_train(DEMO_TRAINING)
    model = mt.view("hedge").double()
    spec = TASKS["hedge"]
    batches = encode(attribution_rows("hedge", args.examples), mt.tokenizer, spec.kind, spec.max_length, 16)

    def timed(quadrature, steps):
        started = time.perf_counter()
        scores = attprune.attribute(model, batches, quadrature=quadrature, steps=steps, progress=False)
        return scores, round(time.perf_counter() - started, 1)

    reference, ref_seconds = timed("gausslegendre", args.reference_steps)
    rows = []
    for quadrature, steps in RULES:
        scores, seconds = timed(quadrature, steps)
        rows.append(dict(quadrature=quadrature, steps=steps, seconds=seconds, **compare(scores, reference)))
        print(json.dumps(rows[-1]), flush=True)
    result = {"model": "demo multi-task MiniLM, hedge view, float64", "examples": args.examples,
              "reference": {"quadrature": "gausslegendre", "steps": args.reference_steps, "seconds": ref_seconds},
              "rows": rows}
    write_json(RESULTS / "ig_fidelity_minilm.json", result)
    return result


if __name__ == "__main__":
    main()
