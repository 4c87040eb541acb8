"""Low-precision IG vs float32: do bf16 / fp16 forward-backward passes rank units the same?

The packaged all-MiniLM-L6-v2 with a sentiment head fitted on the built-in sentences (as in
``attprune demo --quick``); IG (steps 20) over every FFN neuron and head in float32, then with
``dtype=torch.bfloat16`` and ``torch.float16`` (autocast forward/backward, float32 score
accumulation). Reports per site the Spearman rank correlation of the unit scores (|mean|, the
default ranking, and the signed mean) and the agreement of the kept sets at 50% sparsity
(global plan over FFN neurons and heads). Targets: Spearman >= 0.99 per site, kept-set
agreement >= 98%.

    python bench/precision_agreement.py [--device cuda] [--n 32]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import attprune
from attprune.experiments.demo import train_classifier
from attprune.models import load_minilm_classifier
from attprune.samples import LABELS, SENTENCES

RESULTS = Path(__file__).parent / "results"


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = (v.double().argsort().argsort().double() for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def kept_agreement(reference: attprune.Plan, other: attprune.Plan) -> dict[str, float]:
    out = {}
    for kind, ref, oth in (("ffn", reference.ffn, other.ffn), ("heads", reference.heads, other.heads)):
        total = sum(v.numel() for v in ref.values())
        same = sum(len(set(ref[p].tolist()) & set(oth[p].tolist())) for p in ref)
        out[kind] = same / total
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--n", type=int, default=32, help="sentences (the built-in set, repeated if needed)")
    p.add_argument("--steps", type=int, default=20, help="IG steps")
    p.add_argument("--dtypes", default="bfloat16,float16", help="low-precision dtypes to compare with float32")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/precision_<device>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = load_minilm_classifier(num_labels=2)
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"), labels=torch.tensor(LABELS))
    train_classifier(model, batch)
    batch = {k: v[:args.n].to(args.device) for k, v in batch.items()}
    model.to(args.device)
    runs = {"float32": attprune.attribute(model, [batch], steps=args.steps, progress=False)}
    for name in args.dtypes.split(","):
        runs[name] = attprune.attribute(model, [batch], steps=args.steps, dtype=getattr(torch, name), progress=False)
    reference = runs["float32"]
    plan_ref = attprune.make_plan(reference, ffn=0.5, heads=0.5)
    report = {"config": vars(args), "torch": torch.__version__, "dtypes": {}}
    for name, scores in runs.items():
        if name == "float32":
            continue
        per_site = {path: {"spearman_abs": spearman(s.mean.abs(), scores.sites[path].mean.abs()),
                           "spearman_signed": spearman(s.mean, scores.sites[path].mean)}
                    for path, s in reference.sites.items()}
        agreement = kept_agreement(plan_ref, attprune.make_plan(scores, ffn=0.5, heads=0.5))
        report["dtypes"][name] = {
            "seconds": scores.meta["seconds"], "float32_seconds": reference.meta["seconds"],
            "min_spearman_abs": min(v["spearman_abs"] for v in per_site.values()),
            "min_spearman_signed": min(v["spearman_signed"] for v in per_site.values()),
            "kept_agreement_at_50": agreement, "per_site": per_site}
    out = Path(args.out) if args.out else RESULTS / f"precision_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("| dtype | min Spearman per site (abs / signed) | kept at 50%: FFN / heads | seconds (fp32) |")
    print("|---|---|---|---|")
    for name, e in report["dtypes"].items():
        a = e["kept_agreement_at_50"]
        print(f"| {name} | {e['min_spearman_abs']:.4f} / {e['min_spearman_signed']:.4f} | "
              f"{a['ffn']:.1%} / {a['heads']:.1%} | {e['seconds']:.1f} ({e['float32_seconds']:.1f}) |")
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
