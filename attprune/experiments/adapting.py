"""Adapting by pruning on the packaged pre-trained all-MiniLM-L6-v2 (not the multi-task model),
at the paper's scale (Gao et al., arXiv 2105.03343):

    python bench/experiments/adapt_by_pruning.py [--tasks mr,hedge,bbc] [--sparsities 0.5,0.7,0.9]   # main()

Every task trains on its full training split in batches of 8 and is tested on its full test
split (accuracy with a 95% bootstrap interval over test examples; dev accuracy beside it).
Methods, all with the same number of epochs over the same batches:

* ``ours``, three labelled variants (``--variants``): ``paper`` (theta ~ N(0.01, 0.001) at
  random, Adam 2e-5, a constant decay of 2e-7 per step, stop once the negative share reaches
  the target; if it never does, the final mask keeps the top (1 - sparsity) theta),
  ``paper-decay-to-target`` (the same, but the per-step decay that reaches the target by
  the last step: ``decay="auto"``), and ``init-magnitude`` (our short-run variant: theta
  handed out in the order of |w|, Adam 1e-4, decay to target);
* feature extraction (head only), full fine-tuning, one-shot magnitude, random (3 seeds),
  iterative magnitude pruning (20% a round, 1 epoch a round, rewound to the pre-trained
  weights), gradual magnitude pruning (cubic schedule); every fixed mask gets the same head
  (layer-weighted first-token vectors -> MLP) trained for the same epochs at ``--lr-head``.

Model selection on the dev split: ``ours (selected on dev)`` is, per task and sparsity, the
variant of ours with the best dev accuracy (once every variant has run), reported on test;
the claims are checked for it beside each variant.

Runs are long on 2 cores (``ours`` on mr: ~0.36 s a step, 350 steps an epoch): rows are
saved as each finishes, in the order of ``--methods``, and a rerun with the same settings
resumes where it stopped.  Writes bench/results/adapting/adapt_by_pruning.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from ..adaptation import AdaptConfig, adapt
from ..adaptation.baselines import fine_tune, fit_head, gmp_masks, imp_masks, magnitude_masks, random_masks
from ..data import accuracy, correctness
from ..io import write_json
from ..timing import forward_latency
from . import report
from .pack import TASKS, load_task
from .stats import mean_interval, paired_difference, verdict

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "adapting"
NAME = "adapt_by_pruning"
MAGNITUDE_BASELINES = ("magnitude", "IMP", "GMP")
#: the variants of ours: AdaptConfig fields on top of the shared settings
VARIANTS = {
    "paper": dict(init="normal", lr_mask=2e-5, decay=2e-7),
    "paper-decay-to-target": dict(init="normal", lr_mask=2e-5, decay="auto"),
    "init-magnitude": dict(init="magnitude", lr_mask=1e-4, decay="auto"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mr,hedge,bbc", help="comma-separated tasks of the offline pack")
    p.add_argument("--sparsities", default="0.5,0.7,0.9", help="comma-separated target sparsities")
    p.add_argument("--n-train", type=int, default=0, help="training examples per task (0: the full split)")
    p.add_argument("--n-test", type=int, default=0, help="test examples per task (0: the full split)")
    p.add_argument("--batch-size", type=int, default=8, help="training batch (the paper's 8)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per example")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every training run (IMP: 1 per round)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"variants of ours: {', '.join(VARIANTS)}")
    p.add_argument("--units-lr-mask", type=float, default=5e-3, help="Adam rate of theta (ours over units)")
    p.add_argument("--lr-head", type=float, default=3e-3, help="Adam rate of the head (every method)")
    p.add_argument("--lr-ft", type=float, default=2e-5, help="encoder rate of fine-tuning, IMP and GMP")
    p.add_argument("--random-seeds", default="0,1,2", help="seeds of random pruning")
    p.add_argument("--methods", default="fe,ft,magnitude,random,ours,gmp,imp",
                   help="methods to run, in this order (also: units = ours over FFN neurons and heads, compacted)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    return p.parse_args(argv)


def load_encoder():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    from ..models import packaged_minilm_path

    logging.set_verbosity_error()
    path = packaged_minilm_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def task_batches(task: str, tokenizer, args) -> tuple[list[dict], list[dict], list[dict]]:
    """Train (seeded order, ``--n-train``), dev and test (``--n-test``) batches."""
    data = load_task(task)
    rows = list(data.train)
    random.Random(0).shuffle(rows)
    max_length = min(args.max_length, TASKS[task].max_length)
    spec = TASKS[task]
    train = spec.batches(rows[: args.n_train or None], tokenizer, args.batch_size, max_length=max_length)
    dev = spec.batches(data.dev, tokenizer, 64, max_length=max_length)
    test = spec.batches(data.test[: args.n_test or None], tokenizer, 64, max_length=max_length)
    return train, dev, test


class Runner:
    """Runs one (task, method, sparsity, seed) at a time; keeps and reloads finished rows."""

    def __init__(self, args, out: Path):
        self.args, self.path = args, out / f"{NAME}.json"
        # what every row depends on; ours' own settings are stored in its rows
        self.config = {k: v for k, v in vars(args).items()
                       if k not in ("threads", "out", "methods", "tasks", "variants", "units_lr_mask", "random_seeds",
                                    "sparsities")}
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        same = previous.get("config") == self.config
        self.rows = previous.get("rows", []) if same else []
        self.compacted = previous.get("compacted", []) if same else []

    def done(self, **key) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.rows)

    def add(self, task_model, data: tuple, started: float, **key) -> None:
        """Evaluate on dev and test and keep the row (test accuracy with its 95% interval)."""
        _, dev, test = data
        correct, _ = correctness(task_model, test)
        interval = mean_interval(correct.numpy())
        dev_correct, _ = correctness(task_model, dev)
        row = dict(key, accuracy=round(interval.value, 4), ci95=[round(interval.low, 4), round(interval.high, 4)],
                   dev_accuracy=round(float(dev_correct.float().mean()), 4), test_examples=len(correct),
                   seconds=round(time.perf_counter() - started, 1),
                   correct="".join(map(str, correct.tolist())))  # per test example, for paired comparisons
        self.rows = [r for r in self.rows if not all(r.get(k) == v for k, v in key.items())] + [row]
        print(f"  {key} test {interval:.3f} dev {row['dev_accuracy']:.3f} ({row['seconds']} s)", flush=True)
        self.save()

    def save(self) -> None:
        write_json(self.path, {"config": self.config, "rows": self.rows, "compacted": self.compacted})


def run_task(task: str, runner: Runner, model, tokenizer, methods: list[str], sparsities: list[float]) -> None:
    args = runner.args
    data = task_batches(task, tokenizer, args)
    train = data[0]
    head = dict(epochs=args.epochs, lr=args.lr_head)
    shared = dict(epochs=args.epochs, lr_head=args.lr_head)
    print(f"{task}: {sum(len(b['labels']) for b in train)} train in {len(train)} batches / "
          f"{sum(len(b['labels']) for b in data[1])} dev / {sum(len(b['labels']) for b in data[2])} test")

    def fixed(method: str, sparsity: float, masks_fn, seed: int = 0) -> None:
        if not runner.done(task=task, method=method, sparsity=sparsity, seed=seed):
            started = time.perf_counter()
            result = fit_head(model, train, masks_fn(), seed=seed, method=method, **head)
            runner.add(result.model(model), data, started, task=task, method=method, sparsity=sparsity, seed=seed)

    def ours(granularity: str, variant: str, s: float) -> None:
        method = "ours" if granularity == "weights" else "ours (units)"
        if runner.done(task=task, method=method, variant=variant, sparsity=s):
            return
        settings = VARIANTS[variant] if granularity == "weights" else dict(init="normal", decay="auto",
                                                                           lr_mask=args.units_lr_mask)
        config = AdaptConfig(granularity=granularity, sparsity=s, **shared, **settings)
        started = time.perf_counter()
        result = adapt(model, train, config, progress=False)
        task_model = result.model(model)
        runner.add(task_model, data, started, task=task, method=method, variant=variant, sparsity=s, seed=0,
                   steps=result.stats["steps"], stopped=result.stats["stopped"],
                   negative_at_stop=result.stats["final_negative"], recovered=result.stats["recovered_share_of_kept"],
                   init=settings["init"], lr_mask=settings["lr_mask"], decay=result.stats["decay"])
        if granularity == "units":
            runner.compacted = [c for c in runner.compacted if (c["task"], c["sparsity"]) != (task, s)]
            runner.compacted.append(compacted_point(task, s, model, task_model, data[2]))
            runner.save()

    for name in methods:
        if name == "fe":
            fixed("feature extraction", 0.0, lambda: None)
        elif name == "ft" and not runner.done(task=task, method="fine-tuning"):
            started = time.perf_counter()
            tuned = fine_tune(model, train, epochs=args.epochs, lr=args.lr_ft, lr_head=args.lr_head)
            runner.add(tuned, data, started, task=task, method="fine-tuning", sparsity=0.0, seed=0)
        elif name == "magnitude":
            for s in sparsities:
                fixed("magnitude", s, lambda s=s: magnitude_masks(model, s))
        elif name == "random":
            for s in sparsities:
                for seed in (int(x) for x in args.random_seeds.split(",")):
                    fixed("random", s, lambda s=s, seed=seed: random_masks(model, s, seed), seed)
        elif name in ("ours", "units"):
            for variant in (args.variants.split(",") if name == "ours" else ["units"]):
                for s in sparsities:
                    ours("weights" if name == "ours" else "units", variant, s)
        elif name == "gmp":
            for s in sparsities:
                fixed("GMP", s, lambda s=s: gmp_masks(model, train, s, epochs=args.epochs, lr=args.lr_ft,
                                                      lr_head=args.lr_head))
        elif name == "imp":
            missing = [s for s in sparsities if not runner.done(task=task, method="IMP", sparsity=s)]
            if missing:
                started = time.perf_counter()
                found = imp_masks(model, train, missing, epochs_per_round=1, lr=args.lr_ft, lr_head=args.lr_head)
                for s in missing:
                    fixed("IMP", s, lambda s=s: found[s])
                print(f"  IMP rounds for {missing}: {time.perf_counter() - started:.0f} s")


def compacted_point(task: str, sparsity: float, model, task_model, test: list[dict]) -> dict:
    from ..adaptation.model import AdaptedModel

    small = task_model.compact()
    dense = AdaptedModel(task_model.encoder, task_model.head, [], {})  # same head, nothing pruned
    batch = {k: v for k, v in test[0].items() if k != "labels"}
    timing = forward_latency({"dense": dense, "compact": small}, batch, repeats=5, warmup=1)
    return {"task": task, "sparsity": sparsity,
            "params_dense": sum(p.numel() for p in model.parameters()),
            "params_compact": sum(p.numel() for p in small.encoder.parameters()),
            "dense_ms": round(timing["dense"].min_ms, 1), "compact_ms": round(timing["compact"].min_ms, 1),
            "masked_accuracy": accuracy(task_model, test), "compact_accuracy": accuracy(small, test),
            "batch_shape": list(batch["input_ids"].shape)}


SELECTED = "selected on dev"


def selected_on_dev(rows: list[dict]) -> list[dict]:
    """Ours per (task, sparsity) as the paper selects it: the variant with the best dev accuracy.

    Only where every variant has run (a selection among some would depend on which finished);
    ties go to the first variant in ``VARIANTS``.  Each returned row is the chosen run, relabelled
    ``variant="selected on dev"``, with the chosen variant in ``"selected"``.
    """
    order = list(VARIANTS)
    found = {}
    for r in rows:
        if r["method"] == "ours" and r["variant"] in order:
            found.setdefault((r["task"], r["sparsity"]), []).append(r)
    chosen = []
    for runs in found.values():
        if len(runs) == len(order):
            best = max(sorted(runs, key=lambda r: order.index(r["variant"])), key=lambda r: r["dev_accuracy"])
            chosen.append(dict(best, variant=SELECTED, selected=best["variant"]))
    return chosen


def _label(row: dict) -> str:
    return f"ours ({row['variant']})" if row["method"] == "ours" else row["method"]


def _rows(rows: list[dict], task: str, label: str, s: float) -> list[dict]:
    return [r for r in rows if r["task"] == task and _label(r) == label and r["sparsity"] == s]


def _cell(found: list[dict]) -> str:
    """One row: accuracy [95% CI]; several (random seeds): mean ± std."""
    if not found:
        return "-"
    if len(found) > 1:
        mean, std = report.mean_std([r["accuracy"] for r in found])
        return f"{mean:.3f} ± {std:.3f}"
    r = found[0]
    return f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def paper_table(rows: list[dict], task: str, sparsities: list[float]) -> list[str]:
    labels = (["random", "magnitude", "IMP", "GMP"] + [f"ours ({v})" for v in [*VARIANTS, SELECTED]]
              + ["ours (units)"])
    labels = [m for m in labels if any(r["task"] == task and _label(r) == m for r in rows)]
    if not any(r["task"] == task for r in rows):
        return [f"**{task}**: not run yet", ""]
    if not labels:  # only the references have finished
        return [f"**{task}**", "", "| reference | test accuracy [95% CI] |", "|---|---|"] + [
            f"| {m} | {_cell(_rows(rows, task, m, 0.0))} |" for m in ("feature extraction", "fine-tuning")] + [""]
    lines = [f"**{task}** (test accuracy [95% CI]; random: mean ± std over seeds)", "",
             "| sparsity | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {s:.0%} | " + " | ".join(_cell(_rows(rows, task, m, s)) for m in labels) + " |" for s in sparsities]
    for reference in ("feature extraction", "fine-tuning"):
        lines.append(f"| {reference} | {_cell(_rows(rows, task, reference, 0.0))} |" + " |" * (len(labels) - 1))
    runs = [r for r in rows if r["task"] == task and r["method"] == "ours" and r["variant"] != SELECTED]
    chosen = {r["sparsity"]: r["selected"] for r in rows if r["task"] == task and r.get("selected")}
    if chosen:
        lines += ["", "ours (selected on dev): the variant with the best dev accuracy at each sparsity: "
                  + ", ".join(f"{s:.0%} {v}" for s, v in sorted(chosen.items()))]
    if runs:
        lines += ["", "| ours | sparsity | steps | stopped | negative theta at the stop | decay per step | "
                      "dev accuracy |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['sparsity']:.0%} | {r['steps']} | {r['stopped']} | "
                  f"{r['negative_at_stop']:.3f} | {r['decay']:.2e} | {r['dev_accuracy']:.3f} |" for r in runs]
    return lines + [""]


def _one(rows: list[dict], task: str, label: str, s: float) -> dict | None:
    found = _rows(rows, task, label, s)
    return found[0] if len(found) == 1 else None


def _paired(a: dict, b: dict):
    """a - b over the same test examples, with its paired 95% bootstrap interval."""
    return paired_difference([int(c) for c in a["correct"]], [int(c) for c in b["correct"]])


def _versus(a: dict, b: dict) -> str:
    diff = _paired(a, b)
    return f"{100 * diff.value:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] points ({verdict(diff)})"


def targets(rows: list[dict], tasks: list[str], sparsities: list[float]) -> list[str]:
    """The paper's two claims, per task and variant of ours, from the table."""
    lines = ["## The paper's claims, here", ""]
    for task in tasks:
        ft, fe = _one(rows, task, "fine-tuning", 0.0), _one(rows, task, "feature extraction", 0.0)
        for variant in [*VARIANTS, SELECTED]:
            label = f"ours ({variant})"
            at50 = _one(rows, task, label, 0.5)
            if at50 and ft:
                diff = _paired(at50, ft)
                answer = ("yes, the whole interval" if diff.low >= -0.03 else "no, the whole interval is below"
                          if diff.high < -0.03 else "undecided: the interval spans -3 points")
                lines.append(f"- {task}, {label}: 50% sparsity within 3 points of fine-tuning? {answer}: "
                             f"{_versus(at50, ft)}")
            measured = [(s, _one(rows, task, label, s)) for s in sparsities if s <= 0.9]
            measured = [(s, r) for s, r in measured if r]
            if fe and measured:
                not_ahead = [f"{s:.0%}" for s, r in measured if verdict(_paired(r, fe)) != "ahead"]
                lines.append(f"- {task}, {label}: ahead of feature extraction ({fe['accuracy']:.3f}) at every "
                             f"sparsity measured up to 90% ({', '.join(f'{s:.0%}' for s, _ in measured)})? "
                             + ("yes" if not not_ahead else "no, not at " + ", ".join(not_ahead))
                             + "; " + "; ".join(f"{s:.0%}: {_versus(r, fe)}" for s, r in measured))
    return lines + [""] + against_baselines(rows, tasks, sparsities)


def against_baselines(rows: list[dict], tasks: list[str], sparsities: list[float]) -> list[str]:
    """Ours as selected on dev minus each magnitude baseline, paired over the same test examples."""
    lines = []
    for task in tasks:
        for s in sparsities:
            ours = _one(rows, task, f"ours ({SELECTED})", s)
            pairs = [(b, _one(rows, task, b, s)) for b in MAGNITUDE_BASELINES]
            pairs = [(b, r) for b, r in pairs if r]
            if ours and pairs:
                lines.append(f"- {task}, {s:.0%}: " + "; ".join(f"vs {b} {_versus(ours, r)}" for b, r in pairs))
    if not lines:
        return []
    return ["## Ours (selected on dev) against the magnitude baselines", ""] + lines + [""]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    tasks = [t for t in args.tasks.split(",") if t]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    runner = Runner(args, out)
    model, tokenizer = load_encoder()
    started = time.perf_counter()
    for task in tasks:
        run_task(task, runner, model, tokenizer, methods, sparsities)
        write_results(runner, out, tasks, sparsities)
    print(f"{NAME}: {time.perf_counter() - started:.0f} s; results in {out}/{NAME}.*")


def write_results(runner: Runner, out: Path, tasks: list[str], sparsities: list[float]) -> None:
    rows = runner.rows + selected_on_dev(runner.rows)
    md = ["# Adapting by pruning: all-MiniLM-L6-v2, weights kept at their pre-trained values", "",
          f"config: {runner.config}", ""]
    for task in tasks:
        md += paper_table(rows, task, sparsities)
    md += targets(rows, tasks, sparsities)
    if runner.compacted:
        md += ["## Structured variant, compacted (CPU, one test batch)", "",
               "| task | sparsity | params dense -> compact | latency dense -> compact | masked acc | compact acc |",
               "|---|---|---|---|---|---|"]
        md += [f"| {c['task']} | {c['sparsity']:.0%} | {c['params_dense'] / 1e6:.1f}M -> "
               f"{c['params_compact'] / 1e6:.1f}M | {c['dense_ms']} -> {c['compact_ms']} ms "
               f"({c['dense_ms'] / c['compact_ms']:.2f}x) | {c['masked_accuracy']:.3f} | {c['compact_accuracy']:.3f} |"
               for c in runner.compacted]
    report.write(out, NAME, {"config": runner.config, "rows": runner.rows, "compacted": runner.compacted},
                 "\n".join(md))
    pruned = [dict(r, method=_label(r)) for r in runner.rows if r["method"] not in ("feature extraction", "fine-tuning")]
    fine_tuned = {r["task"]: r["accuracy"] for r in rows if r["method"] == "fine-tuning"}
    report.plot(report.curves(pruned), out / f"{NAME}.png", title="Adapting by pruning (MiniLM, pre-trained weights)",
                dense=fine_tuned, dense_label="full fine-tuning", intervals=report.bands(pruned))

