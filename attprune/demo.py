"""The built-in demo: the packaged MiniLM, a few labelled sentences, attribution, plan preview.

``attprune demo`` fits a sentiment head on the frozen pretrained encoder (seconds), scores
every FFN neuron and attention head with integrated gradients, and prints how a
magnitude-ranked cut would spread over the layers.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .attribution import Scores, attribute
from .io import write_json
from .models import load_minilm_classifier
from .samples import LABELS, SENTENCES
from .sites import UNIT_KINDS


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


def preview_cut(scores: Scores, sparsity: float) -> list[str]:
    """Units each site keeps if the lowest ``sparsity`` fraction of each kind goes, ranked
    globally by |mean score| divided by the site's mean |mean score|."""
    lines = []
    for kind in UNIT_KINDS:
        means = scores.ffn if kind == "ffn" else scores.heads
        if not means:
            continue
        normalized = {p: m.abs() / m.abs().mean().clamp_min(1e-30) for p, m in means.items()}
        flat = torch.cat(list(normalized.values()))
        n_remove = int(round(sparsity * flat.numel()))
        threshold = flat.sort().values[n_remove - 1] if n_remove else -1.0
        for path, value in normalized.items():
            lines.append(f"  {kind:5s} {path}: keep {int((value > threshold).sum())}/{value.numel()}")
    return lines


def run_demo(out: str | Path = "out/demo", steps: int = 20, sparsity: float = 0.5, n_examples: int = 16,
             progress: bool = True) -> Scores:
    torch.manual_seed(0)
    started = time.perf_counter()
    model, tokenizer = load_minilm_classifier(num_labels=2)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch = dict(encoded, labels=torch.tensor(LABELS))
    accuracy = fit_head(model, batch)
    print(f"packaged all-MiniLM-L6-v2 + sentiment head fitted on {len(SENTENCES)} built-in sentences "
          f"(train accuracy {accuracy:.2f})")
    half = {k: v[:n_examples] for k, v in batch.items()}
    scores = attribute(model, [half], units=("ffn", "heads"), method="ig", steps=steps, progress=progress)
    print(scores.summary())
    print(f"preview: the lowest-|IG| {sparsity:.0%} of each kind removed, ranked across layers")
    for line in preview_cut(scores, sparsity):
        print(line)
    out = Path(out)
    scores.save(out / "scores.safetensors")
    write_json(out / "summary.json", dict(scores.meta, head_train_accuracy=accuracy,
                                          total_seconds=round(time.perf_counter() - started, 2)))
    print(f"scores written to {out / 'scores.safetensors'} ({time.perf_counter() - started:.1f} s in all)")
    return scores
