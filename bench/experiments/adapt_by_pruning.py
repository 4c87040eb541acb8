"""Adapting by pruning on the packaged pre-trained all-MiniLM-L6-v2 (not the multi-task model).

    python bench/experiments/adapt_by_pruning.py [--tasks mr,hedge,bbc] [--n-train 320]

For every task: feature extraction (head only), full fine-tuning, and at each sparsity
random pruning (3 seeds), one-shot magnitude, iterative magnitude pruning (20% a round,
rewound to the pre-trained weights), gradual magnitude pruning (cubic schedule), ours
(learned weight masks) and ours over units (FFN neurons + heads, compacted: parameters and
CPU latency).  Every mask is evaluated on the pre-trained weights with the same head
(layer-weighted first-token vectors -> MLP), trained for the same epochs at the same rate.

CPU budget (2 cores): training data is a seeded subsample (``--n-train``) truncated to
``--max-length`` tokens; a run with the defaults takes about 40 minutes.  Rows are saved as
they finish: an interrupted run resumes where it stopped (same arguments).  Writes
bench/results/adapting/adapt_by_pruning.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from attprune.adaptation import INITS, AdaptConfig, adapt
from attprune.adaptation.baselines import fine_tune, fit_head, gmp_masks, imp_masks, magnitude_masks, random_masks
from attprune.data import accuracy
from attprune.io import write_json
from attprune.tasks import report
from attprune.tasks.encode import encode
from attprune.timing import forward_latency
from attprune.tasks.pack import TASKS, load_task

RESULTS = Path(__file__).resolve().parents[1] / "results" / "adapting"
NAME = "adapt_by_pruning"
MAGNITUDE_BASELINES = ("magnitude", "IMP", "GMP")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mr,hedge,bbc", help="comma-separated tasks of the offline pack")
    p.add_argument("--sparsities", default="0.2,0.5,0.7,0.9,0.95,0.99", help="comma-separated target sparsities")
    p.add_argument("--n-train", type=int, default=320, help="training examples per task (seeded subsample)")
    p.add_argument("--n-test", type=int, default=300, help="test examples per task")
    p.add_argument("--max-length", type=int, default=64, help="tokens per example")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every training run (IMP: per round: 1)")
    p.add_argument("--lr-mask", type=float, default=1e-4, help="Adam rate of theta (ours, weights)")
    p.add_argument("--init", choices=INITS, default="magnitude",
                   help="ours (weights): theta's N(0.01, 0.001) draws at random (the paper) or in the order of |w|")
    p.add_argument("--units-lr-mask", type=float, default=5e-3, help="Adam rate of theta (ours, units)")
    p.add_argument("--units-init", choices=INITS, default="normal",
                   help="ours (units): theta's initialisation (magnitude: by the norm of each unit's weights)")
    p.add_argument("--lr-head", type=float, default=3e-3, help="Adam rate of the head (every method)")
    p.add_argument("--lr-ft", type=float, default=5e-5, help="encoder rate of fine-tuning, IMP and GMP")
    p.add_argument("--random-seeds", default="0,1,2", help="seeds of random pruning")
    p.add_argument("--methods", default="fe,ft,random,magnitude,imp,gmp,ours,units", help="methods to run")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    return p.parse_args()


def load_encoder():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    from attprune.models import packaged_minilm_path

    logging.set_verbosity_error()
    path = packaged_minilm_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def task_batches(task: str, tokenizer, args) -> tuple[list[dict], list[dict]]:
    data = load_task(task)
    rows = list(data.train)
    random.Random(0).shuffle(rows)
    max_length = min(args.max_length, TASKS[task].max_length)
    train = encode(rows[: args.n_train], tokenizer, "sequence", max_length, batch_size=16)
    test = encode(data.test[: args.n_test], tokenizer, "sequence", max_length, batch_size=64)
    return train, test


class Runner:
    """Runs one (task, method, sparsity, seed) at a time; keeps and reloads finished rows."""

    def __init__(self, args, out: Path):
        self.args, self.path = args, out / f"{NAME}.json"
        # what every row depends on; ours' own settings are stored in its rows
        self.config = {k: v for k, v in vars(args).items()
                       if k not in ("threads", "out", "methods", "tasks", "lr_mask", "init", "units_lr_mask",
                                    "units_init", "random_seeds")}
        previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        same = previous.get("config") == self.config
        self.rows = previous.get("rows", []) if same else []
        self.compacted = previous.get("compacted", []) if same else []

    def done(self, **key) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.rows)

    def add(self, accuracy: float, started: float, **key) -> None:
        self.rows.append(dict(key, accuracy=round(accuracy, 4), seconds=round(time.perf_counter() - started, 1)))
        print(f"  {key} accuracy {accuracy:.3f} ({self.rows[-1]['seconds']} s)", flush=True)
        self.save()

    def save(self) -> None:
        write_json(self.path, {"config": self.config, "rows": self.rows, "compacted": self.compacted})


def run_task(task: str, runner: Runner, model, tokenizer, methods: set[str], sparsities: list[float]) -> None:
    args = runner.args
    train, test = task_batches(task, tokenizer, args)
    head = dict(epochs=args.epochs, lr=args.lr_head)
    ours = {"weights": AdaptConfig(epochs=args.epochs, lr_head=args.lr_head, decay="auto", lr_mask=args.lr_mask,
                                   init=args.init),
            "units": AdaptConfig(granularity="units", epochs=args.epochs, lr_head=args.lr_head, decay="auto",
                                 lr_mask=args.units_lr_mask, init=args.units_init)}
    print(f"{task}: {sum(len(b['labels']) for b in train)} train / {sum(len(b['labels']) for b in test)} test")

    def fixed(method: str, sparsity: float, masks_fn, seed: int = 0) -> None:
        if not runner.done(task=task, method=method, sparsity=sparsity, seed=seed):
            started = time.perf_counter()
            result = fit_head(model, train, masks_fn(), seed=seed, method=method, **head)
            runner.add(accuracy(result.model(model), test), started, task=task, method=method, sparsity=sparsity,
                       seed=seed)

    if "fe" in methods:
        fixed("feature extraction", 0.0, lambda: None)
    if "ft" in methods and not runner.done(task=task, method="fine-tuning"):
        started = time.perf_counter()
        tuned = fine_tune(model, train, epochs=args.epochs, lr=args.lr_ft, lr_head=args.lr_head)
        runner.add(accuracy(tuned, test), started, task=task, method="fine-tuning", sparsity=0.0, seed=0)
    for s in sparsities:
        if "random" in methods:
            for seed in (int(x) for x in args.random_seeds.split(",")):
                fixed("random", s, lambda s=s, seed=seed: random_masks(model, s, seed), seed)
        if "magnitude" in methods:
            fixed("magnitude", s, lambda s=s: magnitude_masks(model, s))
        if "gmp" in methods:
            fixed("GMP", s, lambda s=s: gmp_masks(model, train, s, epochs=args.epochs, lr=args.lr_ft,
                                                  lr_head=args.lr_head))
        for granularity in ("weights", "units"):
            method = "ours" if granularity == "weights" else "ours (units)"
            config = ours[granularity].replace(sparsity=s)
            own = {"lr_mask": config.lr_mask, "init": config.init}
            if ("ours" if granularity == "weights" else "units") not in methods or \
                    runner.done(task=task, method=method, sparsity=s, **own):
                continue
            started = time.perf_counter()
            result = adapt(model, train, config, progress=False)
            task_model = result.model(model)
            runner.rows = [r for r in runner.rows if not (r["task"] == task and r["method"] == method
                                                          and r["sparsity"] == s)]
            runner.add(accuracy(task_model, test), started, task=task, method=method, sparsity=s, seed=0,
                       steps=result.stats["steps"], stopped=result.stats["stopped"],
                       recovered=result.stats["recovered_share_of_kept"], decay=result.stats["decay"], **own)
            if granularity == "units":
                runner.compacted = [c for c in runner.compacted if (c["task"], c["sparsity"]) != (task, s)]
                runner.compacted.append(compacted_point(task, s, model, task_model, test))
                runner.save()
    if "imp" in methods:
        missing = [s for s in sparsities if not runner.done(task=task, method="IMP", sparsity=s)]
        if missing:
            started = time.perf_counter()
            found = imp_masks(model, train, missing, epochs_per_round=1, lr=args.lr_ft, lr_head=args.lr_head)
            for s in missing:
                fixed("IMP", s, lambda s=s: found[s])
            print(f"  IMP rounds for {missing}: {time.perf_counter() - started:.0f} s")


def compacted_point(task: str, sparsity: float, model, task_model, test: list[dict]) -> dict:
    from attprune.adaptation.model import AdaptedModel

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


def paper_table(rows: list[dict], task: str, sparsities: list[float]) -> list[str]:
    def cell(method: str, s: float) -> str:
        values = [r["accuracy"] for r in rows if r["task"] == task and r["method"] == method and r["sparsity"] == s]
        if not values:
            return "-"
        mean = statistics.fmean(values)
        return f"{mean:.3f}" + (f" ± {statistics.pstdev(values):.3f}" if len(values) > 1 else "")

    methods = ["random", "magnitude", "IMP", "GMP", "ours", "ours (units)"]
    lines = [f"**{task}**", "", "| sparsity | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    lines += [f"| {s:.0%} | " + " | ".join(cell(m, s) for m in methods) + " |" for s in sparsities]
    for reference in ("feature extraction", "fine-tuning"):
        lines.append(f"| {reference} | {cell(reference, 0.0)} |" + " |" * (len(methods) - 1))
    return lines + [""]


def targets(rows: list[dict], tasks: list[str]) -> list[str]:
    def acc(task, method, s):
        values = [r["accuracy"] for r in rows if r["task"] == task and r["method"] == method and r["sparsity"] == s]
        return statistics.fmean(values) if values else None

    lines = ["## Targets", ""]
    if "mr" in tasks and acc("mr", "ours", 0.5) is not None and acc("mr", "fine-tuning", 0.0) is not None:
        diff = 100 * (acc("mr", "ours", 0.5) - acc("mr", "fine-tuning", 0.0))
        lines.append(f"- mr: ours at 50% within 3 points of full fine-tuning: ours - fine-tuning = {diff:+.1f} "
                     f"points ({'met' if diff >= -3 else 'missed'})")
    for task in tasks:
        ours = acc(task, "ours", 0.9)
        others = {m: acc(task, m, 0.9) for m in MAGNITUDE_BASELINES if acc(task, m, 0.9) is not None}
        if ours is not None and others:
            best = max(others, key=others.get)
            lines.append(f"- {task}, 90%: ours {ours:.3f} vs best magnitude baseline {best} {others[best]:.3f} "
                         f"({'ahead' if ours > others[best] else 'not ahead'})")
        fe = acc(task, "feature extraction", 0.0)
        below = [s for s in sorted({r["sparsity"] for r in rows if r["method"] == "ours" and r["task"] == task})
                 if s <= 0.9 and fe is not None and acc(task, "ours", s) <= fe]
        if fe is not None:
            lines.append(f"- {task}: above feature extraction ({fe:.3f}) up to 90%: "
                         + ("yes" if not below else "no, at " + ", ".join(f"{s:.0%}" for s in below)))
    return lines + [""]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    tasks = [t for t in args.tasks.split(",") if t]
    sparsities = [float(s) for s in args.sparsities.split(",")]
    methods = set(args.methods.split(","))
    runner = Runner(args, out)
    model, tokenizer = load_encoder()
    started = time.perf_counter()
    for task in tasks:
        run_task(task, runner, model, tokenizer, methods, sparsities)
    rows = runner.rows
    md = ["# Adapting by pruning: all-MiniLM-L6-v2, weights kept at their pre-trained values", "",
          f"config: {runner.config}", ""]
    for task in tasks:
        md += paper_table(rows, task, sparsities)
    md += targets(rows, tasks)
    if runner.compacted:
        md += ["## Structured variant, compacted (CPU, one test batch)", "",
               "| task | sparsity | params dense -> compact | latency dense -> compact | masked acc | compact acc |",
               "|---|---|---|---|---|---|"]
        md += [f"| {c['task']} | {c['sparsity']:.0%} | {c['params_dense'] / 1e6:.1f}M -> "
               f"{c['params_compact'] / 1e6:.1f}M | {c['dense_ms']} -> {c['compact_ms']} ms "
               f"({c['dense_ms'] / c['compact_ms']:.2f}x) | {c['masked_accuracy']:.3f} | {c['compact_accuracy']:.3f} |"
               for c in runner.compacted]
    report.write(out, NAME, {"config": runner.config, "rows": rows, "compacted": runner.compacted}, "\n".join(md))
    curves = report.curves([r for r in rows if r["method"] not in ("feature extraction", "fine-tuning")])
    fine_tuned = {r["task"]: r["accuracy"] for r in rows if r["method"] == "fine-tuning"}
    report.plot(curves, out / f"{NAME}.png", title="Adapting by pruning (MiniLM, pre-trained weights)",
                dense=fine_tuned, dense_label="full fine-tuning")
    print(f"{NAME}: {time.perf_counter() - started:.0f} s; results in {out}/{NAME}.*")


if __name__ == "__main__":
    main()
