"""How many IG nodes ranking needs: each rule, and ``steps="auto"``, against a Gauss-Legendre reference.

    python bench/ig_fidelity.py                      # MiniLM, ~8 min on 2 cores -> results/ig_fidelity_minilm.json
    python bench/ig_fidelity.py --model smollm2      # SmolLM2, ~12 min -> results/ig_fidelity_smollm2.json
    python bench/ig_fidelity.py --model smollm2 --baseline mean --rules gl4,auto   # the path from the mean

``minilm``: the demo's multi-task MiniLM (``DEMO_TRAINING``, trained and cached on first use),
its ``hedge`` view in float64, 16 training sentences, all 12 sites, target the gold label.
``smollm2``: SmolLM2-135M-Instruct (``attprune fetch``) in float32, movie-review sentences
as text (target: every next token), all 60 sites. Reference: Gauss-Legendre, 64 nodes
(``--reference-steps``). For each rule: seconds; the largest error of the units' mean
|per-example IG| relative to the site's largest reference value; the Spearman correlation of
those values with the reference (mean over sites, per kind); kept@50, the share of the units
the reference keeps in a 50% plan (``make_plan`` defaults) that the rule's plan keeps too;
for ``auto``, the mean nodes per example and site; last, ``auto`` with the stall threshold
(``AUTO_STALL``) at 0.5 instead of the library's 0.25.  ``--baseline mean``: every path (the
reference's too) starts at the units' mean activation over the examples.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

import attprune
from attprune.attribution.methods import ig
from attprune.io import write_json
from attprune.experiments.pack import TASKS, load_task
from attprune.experiments.pipeline import draw_rows

RESULTS = Path(__file__).resolve().parent / "results"
RULES = [("riemann_right", 20), ("gausslegendre", 2), ("gausslegendre", 3), ("gausslegendre", 4),
         ("gausslegendre", 6), ("gausslegendre", 8)]
TOLERANCES = (3e-2, 1e-2, 3e-3, 1e-3)
#: the stall rule's threshold (``ig.AUTO_STALL``, 0.25) set otherwise, at the default tolerance
OTHER_STALLS = (0.5,)


@contextlib.contextmanager
def stall_rule(threshold: float):
    """``steps="auto"`` with another stall threshold: an ablation of the library's constant."""
    default, ig.AUTO_STALL = ig.AUTO_STALL, threshold
    try:
        yield
    finally:
        ig.AUTO_STALL = default


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


def minilm(examples: int):
    from attprune.experiments.multitask import DEMO_TRAINING, load_or_train

    mt = load_or_train(DEMO_TRAINING)
    rows = draw_rows(load_task("hedge").train, examples)
    return (mt.view("hedge").double(), TASKS["hedge"].batches(rows, mt.tokenizer, 16),
            "demo multi-task MiniLM, hedge view, float64, gold label")


def smollm2(examples: int):
    from attprune.data import text_batches
    from attprune.models import load_smollm2

    model, tokenizer = load_smollm2()
    rows = draw_rows(load_task("mr").train, examples)
    batches = text_batches(rows, tokenizer, task="causal", max_length=16, batch_size=examples)
    return model, batches, "SmolLM2-135M-Instruct, float32, mr sentences as text (<= 16 tokens), next tokens"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("minilm", "smollm2"), default="minilm", help="which real model")
    p.add_argument("--examples", type=int, default=None, help="examples scored (default: 16 MiniLM, 2 SmolLM2)")
    p.add_argument("--reference-steps", type=int, default=64, help="Gauss-Legendre nodes of the reference")
    p.add_argument("--baseline", choices=("zero", "mean"), default="zero", help="where every path starts")
    p.add_argument("--rules", default="all", help="'all', or 'gl4,auto' (GL-4 and steps='auto' at tolerance 1e-2)")
    p.add_argument("--out", default=None, help="results file (default: results/ig_fidelity_<model>[_mean].json)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    examples = args.examples or (16 if args.model == "minilm" else 2)
    model, batches, about = (minilm if args.model == "minilm" else smollm2)(examples)
    reference_steps = args.reference_steps

    def timed(**settings):
        started = time.perf_counter()
        scores = attprune.attribute(model, batches, progress=False, baseline=args.baseline, **settings)
        return scores, round(time.perf_counter() - started, 1)

    reference, ref_seconds = timed(quadrature="gausslegendre", steps=reference_steps)
    if args.rules == "gl4,auto":
        runs = [dict(quadrature="gausslegendre", steps=4), dict(quadrature="gausslegendre", steps="auto", tolerance=1e-2)]
    else:
        runs = [dict(quadrature=q, steps=n) for q, n in RULES]
        runs += [dict(quadrature="gausslegendre", steps="auto", tolerance=tol) for tol in TOLERANCES]
        runs += [dict(quadrature="gausslegendre", steps="auto", tolerance=1e-2, stall=stall) for stall in OTHER_STALLS]
    rows = []
    for settings in runs:
        with stall_rule(settings.get("stall", ig.AUTO_STALL)):
            scores, seconds = timed(**{k: v for k, v in settings.items() if k != "stall"})
        row = dict(settings, seconds=seconds, **compare(scores, reference))
        if settings["steps"] == "auto":
            gaps = scores.meta["completeness"].values()
            row["mean_nodes"] = round(sum(g["mean_nodes"] for g in gaps) / len(gaps), 3)
            row["max_gap"] = max(g["max_gap"] for g in gaps)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"model": about, "examples": examples, "baseline": args.baseline,
              "reference": {"quadrature": "gausslegendre", "steps": reference_steps, "seconds": ref_seconds},
              "rows": rows}
    suffix = "" if args.baseline == "zero" else f"_{args.baseline}"
    write_json(Path(args.out) if args.out else RESULTS / f"ig_fidelity_{args.model}{suffix}.json", result)
    return result


if __name__ == "__main__":
    main()
