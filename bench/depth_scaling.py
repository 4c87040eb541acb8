"""Seconds of attribution per example against the number of layers: per-site IG's cost is quadratic in depth.

    python bench/depth_scaling.py      # ~10 min on 2 cores -> results/depth_scaling.{json,md,png}

Randomly initialised Llama-style causal LMs at SmolLM2's width (hidden 576, SwiGLU 1536, 9
query / 3 KV heads of 64, vocabulary 49,152) with 4, 8, 16 and 32 layers, and the real
SmolLM2-135M-Instruct (30 layers, when ``attprune fetch`` has put it in the cache); one
example of 32 tokens whose target is its last token (a prompt's answer), float32, all sites.
Settings: the old default (``riemann_right``, 20 nodes), 4 Gauss-Legendre nodes, the new
default (``steps="auto"``) and ``method="fisher"`` (one forward/backward for every site).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers as tf

import attprune
from attprune.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"riemann_right, 20 (old default)": dict(quadrature="riemann_right", steps=20),
            "gausslegendre, 4": dict(quadrature="gausslegendre", steps=4),
            "auto (new default)": dict(),
            "fisher": dict(method="fisher")}


def llama(layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tf.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=9,
                            num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True)
    return tf.LlamaForCausalLM(config).eval()


def example(tokens: int, vocab: int) -> dict:
    ids = torch.randint(100, vocab, (1, tokens), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, -100)
    labels[0, -1] = ids[0, -1]  # the answer: the last token
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def seconds(model, batch, settings: dict) -> float:
    started = time.perf_counter()
    attprune.attribute(model, [batch], progress=False, **settings)
    return round(time.perf_counter() - started, 2)


def plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    random = [r for r in rows if r["model"] == "random llama"]
    for label in SETTINGS:
        ax.plot([r["layers"] for r in random], [r[label] for r in random], marker="o", label=label)
    for r in rows:
        if r["model"] == "SmolLM2-135M":
            ax.scatter([r["layers"]] * len(SETTINGS), [r[label] for label in SETTINGS], marker="x", color="black")
    ax.set(xlabel="layers", ylabel="seconds per example (32 tokens)", yscale="log",
           title="Attribution cost vs depth (x: real SmolLM2)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16, 32], help="depths of the random models")
    p.add_argument("--tokens", type=int, default=32, help="tokens of the example")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    models = [("random llama", n, lambda n=n: llama(n)) for n in args.layers]
    from attprune.models import has_smollm2, load_smollm2
    if has_smollm2():
        models.append(("SmolLM2-135M", 30, lambda: load_smollm2()[0]))
    rows = []
    for name, layers, build in models:
        model = build()
        batch = example(args.tokens, model.config.vocab_size)
        seconds(model, batch, dict(steps=1))  # warm-up
        row = {"model": name, "layers": layers, **{label: seconds(model, batch, s) for label, s in SETTINGS.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json(RESULTS / "depth_scaling.json", {"tokens": args.tokens, "rows": rows})
    header = "| model | layers | " + " | ".join(SETTINGS) + " |"
    lines = [header, "|" + "---|" * (len(SETTINGS) + 2)]
    lines += [f"| {r['model']} | {r['layers']} | " + " | ".join(f"{r[k]:.2f}" for k in SETTINGS) + " |" for r in rows]
    (RESULTS / "depth_scaling.md").write_text("# Seconds per example vs depth\n\n" + "\n".join(lines) + "\n")
    plot(rows, RESULTS / "depth_scaling.png")
    return rows


if __name__ == "__main__":
    main()
