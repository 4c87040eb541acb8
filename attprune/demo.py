"""The built-in demo: the packaged MiniLM, a few labelled sentences, the whole pipeline.

``attprune demo`` fits a sentiment head on the frozen pretrained encoder (seconds), scores
every FFN neuron and attention head with integrated gradients, makes a plan (ranked by
|IG|), masks and compacts the model, saves and reloads the compact checkpoint, and
compares accuracy and CPU latency with the dense model.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .attribution import Scores, attribute
from .checkpoint import from_pretrained, save_pretrained
from .compact import compact, mask
from .data import accuracy
from .io import write_json
from .models import load_minilm_classifier
from .plan import make_plan
from .samples import LABELS, SENTENCES
from .tasks.experiment import latency_ms


def fit_head(model, batch: dict, epochs: int = 300, lr: float = 1e-2) -> float:
    """Train only the classifier of a frozen ``*ForSequenceClassification`` encoder; returns accuracy."""
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


def run_demo(out: str | Path = "out/demo", steps: int = 20, ffn: float = 0.5, heads: float = 0.25,
             n_examples: int = 16, progress: bool = True) -> Scores:
    """Fit a head, score, plan, compact, save, reload, and compare with the dense model."""
    torch.manual_seed(0)
    started = time.perf_counter()
    out = Path(out)
    model, tokenizer = load_minilm_classifier(num_labels=2)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch = dict(encoded, labels=torch.tensor(LABELS))
    train_accuracy = fit_head(model, batch)
    print(f"packaged all-MiniLM-L6-v2 + sentiment head fitted on {len(SENTENCES)} built-in sentences "
          f"(accuracy {train_accuracy:.2f})")
    scores = attribute(model, [{k: v[:n_examples] for k, v in batch.items()}], units=("ffn", "heads"),
                       method="ig", steps=steps, progress=progress)
    print(scores.summary())
    plan = make_plan(scores, ffn=ffn, heads=heads)
    print(f"plan: remove {ffn:.0%} of FFN neurons and {heads:.0%} of heads (global, mean |IG| per site-normalised)")
    print(plan.summary(model, seq_len=batch["input_ids"].shape[1]))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    dense_ms, dense_accuracy = latency_ms(model, inputs), accuracy(model, [batch])
    with mask(model, plan):
        masked_accuracy = accuracy(model, [batch])
    compact(model, plan)
    save_pretrained(model, out / "model", tokenizer=tokenizer)
    reloaded = from_pretrained(out / "model")
    compact_accuracy, compact_ms = accuracy(reloaded, [batch]), latency_ms(reloaded, inputs)
    print(f"accuracy on the {len(SENTENCES)} sentences: dense {dense_accuracy:.2f}, masked {masked_accuracy:.2f}, "
          f"compact (reloaded) {compact_accuracy:.2f}")
    print(f"CPU latency, batch {len(SENTENCES)}: dense {dense_ms:.1f} ms, compact {compact_ms:.1f} ms "
          f"({dense_ms / compact_ms:.2f}x)")
    scores.save(out / "scores.safetensors")
    plan.save(out / "plan.json")
    write_json(out / "summary.json", dict(scores.meta, head_train_accuracy=train_accuracy,
                                          dense_accuracy=dense_accuracy, masked_accuracy=masked_accuracy,
                                          compact_accuracy=compact_accuracy, dense_ms=dense_ms, compact_ms=compact_ms,
                                          total_seconds=round(time.perf_counter() - started, 2)))
    print(f"wrote {out}/: scores.safetensors, plan.json, model/ (attprune.from_pretrained), summary.json "
          f"({time.perf_counter() - started:.1f} s in all)")
    return scores


DEMO_METHODS = ("ig", "activation", "magnitude", "random")
DEMO_SPARSITIES = (0.3, 0.5, 0.7)


def run_task_demo(out: str | Path = "out/demo", tasks: tuple[str, ...] = ("hedge", "mr"), n_attr: int = 32,
                  max_test: int = 500, steps: int = 20, ffn: float = 0.5, full: bool = False,
                  progress: bool = True) -> dict:
    """The main job: prune the multi-task MiniLM for each task and measure what is left."""
    from .tasks import report
    from .tasks.benchmark import EXPERIMENTS, score_cache
    from .tasks.experiment import attribution_rows, compact_point, score, sweep, task_run
    from .tasks.multitask import load_or_train

    started = time.perf_counter()
    out = Path(out)
    mt = load_or_train(progress=progress)
    print(f"multi-task MiniLM ({', '.join(mt.config.tasks)}): trained in {mt.report['train_seconds']} s; "
          "test accuracy " + ", ".join(f"{t} {a:.3f}" for t, a in mt.report["test"].items()))
    rows, compacted, dense = [], {}, {}
    for task in tasks:
        run = task_run(mt, task, max_test)
        dense[task] = run.dense
        attr = attribution_rows(task, n_attr)
        for method in DEMO_METHODS:
            scores, seconds = score(run, method, None if method in ("magnitude", "random") else attr, steps=steps,
                                    cache=score_cache(mt))
            n = 0 if method in ("magnitude", "random") else n_attr
            print(f"{task}: {method} scores of 9,216 FFN neurons from {n} examples in {seconds:.1f} s "
                  "(as first computed; cached after)")
            rows += [dict(task=task, method=method, **r) for r in sweep(run, scores, sparsities=DEMO_SPARSITIES)]
            if method == "ig":  # also ranked by |signed mean|: per-example scores cancel across classes
                rows += [dict(task=task, method="ig, rank_by=abs", **r)
                         for r in sweep(run, scores, sparsities=DEMO_SPARSITIES, rank_by="abs")]
                compacted[task] = compact_point(run, scores, ffn=ffn)
    data = report.curves(rows)
    print(f"\naccuracy after removing FFN neurons (test, <= {max_test} examples; dense in brackets)")
    header = "| task | method | " + " | ".join(f"{s:.0%}" for s in DEMO_SPARSITIES) + " |"
    print(header + "\n|" + "---|" * (len(DEMO_SPARSITIES) + 2))
    for task, lines in data.items():
        for method, values in lines.items():
            print(f"| {task} ({dense[task]:.3f}) | {method} | " +
                  " | ".join(f"{values[s][0]:.3f}" for s in DEMO_SPARSITIES) + " |")
    print(f"\ncompacted at {ffn:.0%} FFN sparsity (IG), CPU, one test batch:")
    for task, c in compacted.items():
        print(f"  {task}: params {c['params_dense']:,} -> {c['params_compact']:,}; latency {c['dense_ms']:.0f} -> "
              f"{c['compact_ms']:.0f} ms ({c['dense_ms'] / c['compact_ms']:.2f}x); accuracy masked "
              f"{c['masked_accuracy']:.3f} == compact {c['compact_accuracy']:.3f}")
    plot = report.plot(data, out / "demo.png", title="FFN pruning of the multi-task MiniLM", dense=dense)
    write_json(out / "demo.json", {"rows": rows, "dense": dense, "compact": compacted, "n_attr": n_attr,
                                   "max_test": max_test, "steps": steps, "multitask": mt.report,
                                   "seconds": round(time.perf_counter() - started, 1)})
    print(f"wrote {out / 'demo.json'}" + (f" and {plot}" if plot else "") +
          f" ({time.perf_counter() - started:.0f} s)")
    if full:
        for name, experiment in EXPERIMENTS.items():
            experiment(mt, out / "benchmark", progress=progress)
        print(f"full benchmark written to {out / 'benchmark'}")
    return {"rows": rows, "dense": dense, "compact": compacted}
