"""The main job, ``attprune demo``: task-specific pruning of a multi-task MiniLM on real data.

``run_task_demo`` trains (once, then cached) a multi-task MiniLM on the six offline tasks,
scores each chosen task's FFN neurons with integrated gradients and with the baselines,
prunes at several sparsities, compacts one point, and reports accuracy, parameters and
latency (a table and a plot). ``run_demo`` (``--quick``) runs the same pipeline in seconds
on a few built-in sentences.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from ..attribution import Scores, attribute
from ..compact import compact, cost_summary, mask
from ..data import accuracy
from ..io import write_json
from ..models import load_minilm_classifier
from ..plan import make_plan
from ..pretrained import from_pretrained, save_pretrained
from ..samples import LABELS, SENTENCES
from ..sites import find_sites
from ..timing import forward_latency

#: the demo's IG: 4 Gauss-Legendre nodes, measured on the demo's model to match a float64
#: GL-64 reference better than 20 Riemann nodes (error 9.0e-3 vs 6.8e-2, kept@50 1.000 vs
#: 0.997) in a sixth of the time (``bench/ig_fidelity.py``; bench/README.md, "IG nodes")
DEMO_IG = {"quadrature": "gausslegendre", "steps": 4}
DEMO_METHODS = ("ig", "activation", "magnitude", "random")
DEMO_SPARSITIES = (0.3, 0.5, 0.7)


def train_classifier(model, batch: dict, epochs: int = 300, lr: float = 1e-2) -> float:
    """Train only the classifier of a frozen ``*ForSequenceClassification`` encoder on one batch;
    returns its accuracy there."""
    base = getattr(model, model.base_model_prefix)
    with torch.no_grad():
        features = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
    head = model.classifier
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(features), batch["labels"])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((head(features).argmax(-1) == batch["labels"]).float().mean())


def run_demo(out: str | Path = "out/demo", ffn: float = 0.5, heads: float = 0.25, n_examples: int = 16,
             progress: bool = True, **ig_settings) -> Scores:
    """Fit a head, score, plan, compact, save, reload, and compare with the dense model."""
    torch.manual_seed(0)
    started = time.perf_counter()
    out = Path(out)
    model, tokenizer = load_minilm_classifier(num_labels=2)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch = dict(encoded, labels=torch.tensor(LABELS))
    train_accuracy = train_classifier(model, batch)
    print(f"packaged all-MiniLM-L6-v2 + sentiment head fitted on {len(SENTENCES)} built-in sentences "
          f"(accuracy {train_accuracy:.2f})")
    scores = attribute(model, [{k: v[:n_examples] for k, v in batch.items()}], units=("ffn", "heads"),
                       method="ig", progress=progress, **dict(DEMO_IG, **ig_settings))
    print(scores.summary())
    plan = make_plan(scores, ffn=ffn, heads=heads)
    print(f"plan: remove {ffn:.0%} of FFN neurons and {heads:.0%} of heads (global, mean |IG| per site-normalised)")
    print(plan.summary())
    print(cost_summary(model, plan, seq_len=batch["input_ids"].shape[1]))
    dense_accuracy = accuracy(model, [batch])
    with mask(model, plan):
        masked_accuracy = accuracy(model, [batch])
    dense = copy.deepcopy(model)
    compact(model, plan)
    save_pretrained(model, out / "model", tokenizer=tokenizer)
    reloaded = from_pretrained(out / "model")
    compact_accuracy = accuracy(reloaded, [batch])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    timing = forward_latency({"dense": dense, "compact": reloaded}, inputs)
    print(f"accuracy on the {len(SENTENCES)} sentences: dense {dense_accuracy:.2f}, masked {masked_accuracy:.2f}, "
          f"compact (reloaded) {compact_accuracy:.2f}")
    print(f"CPU latency, batch {len(SENTENCES)}: dense {timing['dense']}, compact {timing['compact']} "
          f"({timing['dense'].median_ms / timing['compact'].median_ms:.2f}x)")
    scores.save(out / "scores.safetensors")
    plan.save(out / "plan.json")
    write_json(out / "summary.json", dict(scores.meta, head_train_accuracy=train_accuracy,
                                          dense_accuracy=dense_accuracy, masked_accuracy=masked_accuracy,
                                          compact_accuracy=compact_accuracy,
                                          latency={k: v.to_dict() for k, v in timing.items()},
                                          total_seconds=round(time.perf_counter() - started, 2)))
    print(f"wrote {out}/: scores.safetensors, plan.json, model/ (attprune.from_pretrained), summary.json "
          f"({time.perf_counter() - started:.1f} s in all)")
    return scores


def run_task_demo(out: str | Path = "out/demo", tasks: tuple[str, ...] = ("hedge", "mr"), n_attr: int = 32,
                  max_test: int = 400, ffn: float = 0.5, full: bool = False, progress: bool = True) -> dict:
    """The main job: prune the multi-task MiniLM for each task and measure what is left."""
    from . import report
    from .encoder import EncoderTask, compact_point
    from .encoder_benchmark import EXPERIMENTS, score_cache
    from .multitask import DEMO_TRAINING, TrainConfig, load_or_train
    from .pipeline import score, sweep

    started = time.perf_counter()
    out = Path(out)
    mt = load_or_train(DEMO_TRAINING, progress=progress)
    print(f"multi-task MiniLM ({', '.join(mt.config.tasks)}): trained in {mt.report['train_seconds']} s; "
          "test accuracy " + ", ".join(f"{t} {a:.3f}" for t, a in mt.report["test"].items()))
    rows, compacted, dense, cost = [], {}, {}, {}
    for task in tasks:
        run = EncoderTask.of(mt, task, max_test)
        dense[task] = run.dense.accuracy
        for method in DEMO_METHODS:
            data_free = method in ("magnitude", "random")
            scores, seconds = score(run, method, n=None if data_free else n_attr, units=("ffn",),
                                    cache=score_cache(mt), **DEMO_IG)
            cost[f"{task}/{method}"] = round(seconds, 2)
            rows += [dict(task=task, method=method, **r) for r in sweep(run, scores, sparsities=DEMO_SPARSITIES)]
            if method == "ig":
                compacted[task] = compact_point(run, make_plan(scores, ffn=ffn))
        neurons = sum(s.n_units for s in find_sites(run.model, units=("ffn",)))
        print(f"{task}: scored {neurons:,} FFN neurons from {n_attr} examples: "
              + ", ".join(f"{m} {cost[f'{task}/{m}']:.1f} s" for m in DEMO_METHODS) + " (as first computed)")
    data = report.curves(rows)
    _print_table(data, report.bands(rows), dense, max_test)
    print(f"\ncompacted at {ffn:.0%} FFN sparsity (IG), CPU, a batch of 32 x 64 tokens, "
          "median of 15 interleaved runs:")
    for task, c in compacted.items():
        print(f"  {task}: params {c['params_dense']:,} -> {c['params_compact']:,}; latency "
              f"{c['dense_ms']:.0f} -> {c['compact_ms']:.0f} ms ({c['dense_ms'] / c['compact_ms']:.2f}x; IQR dense "
              f"{c['latency']['dense']['p25_ms']:.0f}-{c['latency']['dense']['p75_ms']:.0f}, compact "
              f"{c['latency']['compact']['p25_ms']:.0f}-{c['latency']['compact']['p75_ms']:.0f} ms); accuracy "
              f"masked {c['masked_accuracy']:.3f} == compact {c['compact_accuracy']:.3f}")
    plot = report.plot(data, out / "demo.png", title="FFN pruning of the multi-task MiniLM", dense=dense,
                       intervals=report.bands(rows))
    write_json(out / "demo.json", {"rows": rows, "dense": dense, "compact": compacted, "n_attr": n_attr,
                                   "max_test": max_test, "ig": DEMO_IG, "attribution_seconds": cost,
                                   "multitask": mt.report, "seconds": round(time.perf_counter() - started, 1)})
    print(f"wrote {out / 'demo.json'}" + (f" and {plot}" if plot else "") +
          f" ({time.perf_counter() - started:.0f} s)")
    if full:
        benchmark_model = load_or_train(TrainConfig(), progress=progress)
        for experiment in EXPERIMENTS.values():
            experiment(benchmark_model, out / "benchmark", progress=progress)
        print(f"full benchmark written to {out / 'benchmark'}")
    return {"rows": rows, "dense": dense, "compact": compacted}


def _print_table(data: dict, intervals: dict, dense: dict, max_test: int) -> None:
    print(f"\naccuracy after removing FFN neurons [95% bootstrap interval] (test, <= {max_test} examples; "
          "dense in brackets)")
    print("| task | method | " + " | ".join(f"{s:.0%}" for s in DEMO_SPARSITIES) + " |")
    print("|" + "---|" * (len(DEMO_SPARSITIES) + 2))
    for task, lines in data.items():
        for method, values in lines.items():
            band = intervals[task][method]
            print(f"| {task} ({dense[task]:.3f}) | {method} | " +
                  " | ".join(f"{values[s][0]:.3f} [{band[s][0]:.2f}, {band[s][1]:.2f}]" for s in DEMO_SPARSITIES)
                  + " |")
