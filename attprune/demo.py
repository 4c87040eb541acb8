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
from .io import write_json
from .models import load_minilm_classifier
from .plan import make_plan
from .samples import LABELS, SENTENCES


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


def accuracy(model, batch: dict) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float((logits.argmax(-1) == batch["labels"]).float().mean())


def latency_ms(model, batch: dict, repeats: int = 5) -> float:
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        model(**inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - start)
    return 1000 * min(times)


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
    print(f"plan: remove {ffn:.0%} of FFN neurons and {heads:.0%} of heads (global, |IG| per site-normalised)")
    print(plan.summary(model, seq_len=batch["input_ids"].shape[1]))
    dense_ms, dense_accuracy = latency_ms(model, batch), accuracy(model, batch)
    with mask(model, plan):
        masked_accuracy = accuracy(model, batch)
    compact(model, plan)
    save_pretrained(model, out / "model")
    tokenizer.save_pretrained(out / "model")
    reloaded = from_pretrained(out / "model")
    compact_accuracy, compact_ms = accuracy(reloaded, batch), latency_ms(reloaded, batch)
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
