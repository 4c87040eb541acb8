"""Which attribution recipe prunes a decoder LLM best: one factor at a time around today's
recipe, for IG and for every other criterion the factor applies to, on SmolLM2-135M-Instruct's
prompt tasks, with intervals over attribution draws and test prompts together.

    python bench/experiments/llm_study.py                             # every factor, bench/results/llm/study/
    python bench/experiments/llm_study.py --factors allocation aggregation --draws 0 1 2

The recipe before the study (``base_arms``, every setting pinned in ``TODAY_SETTINGS`` / ``TODAY_PLAN``):
per-site IG from zero, 4 Gauss-Legendre nodes, the gold answer's log-probability, 32
training prompts; plans rank units by the mean |per-example score|, normalise each site by
its mean and rank all sites of a kind together; no compensation.  Factors (``FACTORS``),
each varied alone:

* allocation: ``normalize`` none / l2, ``scope="layer"`` (every criterion); and, for the
  criteria with per-example scores, fisher's own plan (global ranking by root mean square,
  ``rank_by="rms", normalize="none"``: fisher ranks by the mean square);
* aggregation over examples: ``rank_by`` abs (|mean|) / rms (root mean square) (the criteria
  with per-example scores: IG, Taylor);
* objective: the answer's log-probability normalised over the task's answers, the margin over
  the best wrong answer (the gradient criteria: IG, Taylor, fisher);
* compensation: compaction folds the removed units' mean output into the bias (every criterion);
* the path: all sites of a kind together (IG; from zero and from the mean);
* path start: the unit's mean activation over the attribution prompts (IG);
* attribution prompts: 8 / 128 (every criterion with data).

What it found (bench/results/llm/study, bench/README.md) chose the causal-LM recipe
(``attribution/recipes.py``): plans without per-site normalisation, IG ranked by root mean square.

Every variant is evaluated at ``--sparsities`` of FFN neurons (default 30% and 50%, where the
targets are) on the same draws and prompts as its base, and compared with it by a paired
two-level bootstrap (draws and prompts resampled together), per task and pooled over tasks.
Scores, means and outcomes are cached and rows appended as they finish (resumable).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from ..models import load_smollm2
from ..plan import make_plan
from . import report
from .llm import LLMTask
from .llm_benchmark import (LABELS, RESULTS, Arm, Results, above_chance, arm_scores, contrast_markdown, contrasts,
                            default_arm, prune_seconds, subjects_for, sweep, timing_markdown, write_results)
from .prompts import PROMPT_TASKS

#: the criteria compared; random pruning is the floor
CRITERIA = ("ig", "fisher", "grad_x_act", "wanda", "flap")
GRADIENT = ("ig", "fisher", "grad_x_act")
PER_EXAMPLE = ("ig", "grad_x_act")
WITH_DATA = ("ig", "fisher", "grad_x_act", "wanda", "flap")


def _plan(**options):
    return lambda r: replace(r, plan=dict(r.plan, **options))


def _settings(**options):
    return lambda r: replace(r, settings=dict(r.settings, **options))


#: factor -> (variant, the criteria it applies to, how it changes an arm)
FACTORS = {
    "allocation": (("normalize=none", CRITERIA, _plan(normalize="none")),
                   ("normalize=l2", CRITERIA, _plan(normalize="l2")),
                   ("scope=layer", CRITERIA, _plan(scope="layer")),
                   # fisher's plan from per-example scores: global ranking of the mean square
                   ("rank_by=rms, normalize=none", PER_EXAMPLE, _plan(rank_by="rms", normalize="none"))),
    "aggregation": (("rank_by=abs", PER_EXAMPLE, _plan(rank_by="abs")),
                    ("rank_by=rms", PER_EXAMPLE, _plan(rank_by="rms"))),
    "objective": (("target=normalized", GRADIENT, _settings(target="normalized")),
                  ("target=margin", GRADIENT, _settings(target="margin"))),
    "compensation": (("compensate", CRITERIA, lambda r: replace(r, compensate=True)),),
    "path": (("path=joint", ("ig",), _settings(path="joint")),
             ("path=joint, baseline=mean", ("ig",), _settings(path="joint", baseline="mean"))),
    "start": (("baseline=mean", ("ig",), _settings(baseline="mean")),),
    "examples": (("n=8", WITH_DATA, lambda r: replace(r, n=8)),
                 ("n=128", WITH_DATA, lambda r: replace(r, n=128))),
}


#: the recipe before the study (the encoders'), every setting pinned (the library's defaults may change; the study's base does not)
TODAY_PLAN = {"scope": "global", "normalize": "layer", "rank_by": "mean_abs"}
TODAY_SETTINGS = {"ig": {"steps": 4, "quadrature": "gausslegendre", "target": "label", "baseline": "zero",
                         "path": "site"},
                  "fisher": {"target": "label"}, "grad_x_act": {"target": "label"}}


def base_arms() -> list[Arm]:
    """The recipe before the study for every criterion, and random pruning."""
    return [replace(default_arm(c), settings=TODAY_SETTINGS.get(c, {}), plan=dict(TODAY_PLAN))
            for c in (*CRITERIA, "random")]


def variant_arms(factor: str, only: tuple[str, ...] = CRITERIA, variants: tuple[str, ...] | None = None) -> list[Arm]:
    """The factor's variants (of ``variants``, default all) of every criterion it applies to
    (of ``only``), labelled ``criterion [variant]``."""
    out = []
    for variant, criteria, change in FACTORS[factor]:
        if variants is not None and variant not in variants:
            continue
        for arm in base_arms():
            if arm.method in criteria and arm.method in only:
                out.append(replace(change(arm), label=f"{arm.label} [{variant}]"))
    return out


def paired_with(rows: list[dict], pairs: list[tuple[str, str]]) -> dict:
    """``contrasts`` of each (first, second) pair, collected (paired over draws and prompts)."""
    per_task, pooled = [], []
    for first, second in pairs:
        found = contrasts(rows, first, [second])
        per_task += found["per_task"]
        pooled += found["pooled"]
    return {"per_task": per_task, "pooled": pooled}


def factor_contrasts(rows: list[dict], factor: str) -> dict:
    """Each variant against its criterion's base arm."""
    return paired_with(rows, [(arm.label, arm.label.split(" [")[0]) for arm in variant_arms(factor)])


def rank_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two score vectors (ties broken by position)."""
    ra, rb = (v.double().argsort().argsort().double() for v in (a, b))
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def layer_profile(subject: LLMTask, labels: tuple[str, ...] = ("ig", "fisher", "taylor (grad_x_act)"),
                  sparsity: float = 0.3, draw: int = 0) -> dict:
    """Where the base arms differ on one task (one draw, cached scores): FFN neurons each removes
    per layer at ``sparsity``, and the rank agreement of its unit values (mean |score|) with
    fisher's within each layer."""
    arms = {arm.label: arm for arm in base_arms()}
    plans, values = {}, {}
    for label in labels:
        scores, _ = arm_scores(subject, arms[label], "ffn", draw)
        plans[label] = make_plan(scores, ffn=sparsity, **arms[label].plan)
        values[label] = {path: site.mean_abs for path, site in scores.sites.items()}
    sites = list(plans[labels[0]].ffn)
    return {"task": subject.name, "sparsity": sparsity, "draw": draw,
            "removed": {label: [plans[label].sizes[p] - len(plans[label].ffn[p]) for p in sites] for label in labels},
            "agreement_with_fisher": {label: [rank_agreement(values[label][p], values["fisher"][p]) for p in sites]
                                      for label in labels if label != "fisher"}}


def profile_markdown(profiles: list[dict]) -> list[str]:
    md = ["## Where the criteria differ: FFN neurons removed per layer (base arms, draw 0)", "",
          "Each cell: neurons removed from the layer (of 1536); in brackets the within-layer rank agreement "
          "(Spearman) of the criterion's unit values with fisher's.", ""]
    for p in profiles:
        labels = list(p["removed"])
        md += [f"### {p['task']}, {p['sparsity']:.0%} FFN", "", "| layer | " + " | ".join(labels) + " |",
               "|---" * (len(labels) + 1) + "|"]
        for layer in range(len(p["removed"][labels[0]])):
            cells = [f"{p['removed'][label][layer]}" + (f" ({p['agreement_with_fisher'][label][layer]:.2f})"
                                                         if label in p["agreement_with_fisher"] else "")
                     for label in labels]
            md.append(f"| {layer} | " + " | ".join(cells) + " |")
        md.append("")
    return md


def plot_profiles(profiles: list[dict], out: Path) -> None:
    data = {p["task"]: {label: {layer: [n] for layer, n in enumerate(counts)} for label, counts in p["removed"].items()}
            for p in profiles}
    report.plot(data, out / "removed_per_layer.png", title="FFN neurons removed per layer at 30% (draw 0)",
                x_label="layer", y_label="neurons removed")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=tuple(PROMPT_TASKS), default=None,
                   help="tasks (default: every task whose dense accuracy clears its majority share)")
    p.add_argument("--factors", nargs="*", choices=tuple(FACTORS), default=list(FACTORS),
                   help="factors to vary, in this order (after the base arms)")
    p.add_argument("--criteria", nargs="+", choices=CRITERIA, default=list(CRITERIA),
                   help="the criteria whose variants are measured (every base arm is measured)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="only these variants of the factors, by name (e.g. normalize=none 'scope=layer')")
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.3, 0.5],
                   help="FFN sparsities every variant is evaluated at")
    p.add_argument("--draws", nargs="+", type=int, default=[0, 1, 2], help="attribution draws (seeds)")
    p.add_argument("--max-test", type=int, default=300, help="test prompts per task")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", type=Path, default=RESULTS / "study", help="results folder")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: write the tables from the rows already in --out")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = Results(args.out / "rows.jsonl")
    model, tokenizer = load_smollm2()
    subjects = subjects_for(model, tokenizer, args.tasks or PROMPT_TASKS, args.max_test, results)
    tasks = args.tasks or above_chance(results, subjects)
    subjects = {n: subjects[n] for n in tasks}
    print("study tasks:", ", ".join(tasks) or "none", flush=True)
    base = base_arms()
    arms = base + [arm for factor in args.factors
                   for arm in variant_arms(factor, tuple(args.criteria), args.variants and tuple(args.variants))]
    if args.report_only:
        measured = {r.get("method") for r in results.rows.values()}
        arms = [arm for arm in arms if arm.label in measured]
    else:
        # draw by draw, every arm: a study stopped early has whole draws of every factor
        sweep(subjects, arms, ["ffn"], args.sparsities, tuple(args.draws), results)
    md, extra = [], {"factors": {}}
    for factor in args.factors:
        rows = [r for r in results.rows.values() if r["kind"] == "ffn"]
        found = factor_contrasts(rows, factor)
        extra["factors"][factor] = found
        md += contrast_markdown(found, f"Factor: {factor} (variant minus its criterion's base arm)")
        write_results(args.out, results, arms, extra, md, {k: str(v) for k, v in vars(args).items()})
    rows = [r for r in results.rows.values() if r["kind"] == "ffn"]
    extra["criteria"] = contrasts(rows, "ig", [r.label for r in base if r.label != "ig"])
    measured = {r["method"] for r in rows}
    strongest = [label for label in ("fisher", "fisher [normalize=none]") if label in measured]
    extra["rms_without_normalization"] = paired_with(rows, [(f"{c} [rank_by=rms, normalize=none]", f"{c} [normalize=none]")
                                                           for c in ("ig", LABELS["grad_x_act"])])
    extra["ig_variants_vs_fisher"] = paired_with(rows, [(arm.label, other) for other in strongest for arm in arms
                                                        if arm.method == "ig" and arm.label != "ig"])
    extra["prune_seconds"] = prune_seconds(next(iter(subjects.values())), arms) if subjects else {}
    profiles = [layer_profile(subject) for subject in subjects.values()]
    extra["layer_profiles"] = profiles
    plot_profiles(profiles, args.out)
    md = (timing_markdown(extra["prune_seconds"])
          + contrast_markdown(extra["criteria"], "Base arms: IG minus each criterion")
          + contrast_markdown(extra["ig_variants_vs_fisher"], "Every IG variant minus fisher (today's plan, and "
                                                                "fisher's best: normalize=none)")
          + contrast_markdown(extra["rms_without_normalization"], "Without normalisation: root mean square minus "
                                                                    "mean |score|")
          + md + profile_markdown(profiles))
    write_results(args.out, results, arms, extra, md, {k: str(v) for k, v in vars(args).items()})
    return 0
