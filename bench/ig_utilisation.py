"""How close per-site IG on SmolLM2 comes to what the machine can do: useful FLOPs per second
of an attribution run against a plain float32 matmul measured in the same run.

    python bench/ig_utilisation.py                 # 4 examples, ~6 min on 2 cores
    python bench/ig_utilisation.py --examples 32   # the issue's full budget

Useful FLOPs are counted, not profiled: for each site and quadrature node, the layers above
the site (the site's own projection, for a head site also its layer's FFN, then every later
layer: projections 2 x params x tokens, causal attention 2 x tokens^2 x hidden) plus the LM
head only where a target is read; forward and the input-gradient backward (as much again).
``steps="auto"`` is counted with the nodes it used per site (``scores.meta["completeness"]``).
The clean pass, the completeness checks and the weight-free parts (norms, activations) are
work, but not counted as useful. Examples: real prompts (the mr task through the chat
template, text cut so that prompt + answer <= 64 tokens), 4 per batch (padding is not counted).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import attprune
from attprune.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {"gausslegendre, 4 (the causal-LM recipe)": {}, "auto": {"quadrature": "gausslegendre", "steps": "auto"}}


def matmul_flops_per_second(rows: int, hidden: int, inner: int, repeats: int = 20) -> float:
    a, b = torch.randn(rows, hidden), torch.randn(hidden, inner)
    for _ in range(3):
        a @ b
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - started)
    return 2 * rows * hidden * inner / statistics.median(seconds)


def useful_flops(config, tokens: int, targets: int, nodes: dict[str, float], sites) -> float:
    """Forward + input-gradient FLOPs of the layers above every site, per example."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    attention = 2 * tokens * (2 * h * h + 2 * h * kv) + 2 * tokens * tokens * h  # q,o + k,v; causal QK^T and AV
    ffn = 2 * tokens * 3 * h * i
    head = 2 * targets * h * config.vocab_size
    total = 0.0
    for site in sites:
        layer = int(site.path.split(".layers.")[1].split(".")[0])
        above = (layers - 1 - layer) * (attention + ffn) + head
        own = 2 * tokens * i * h if site.kind == "ffn" else 2 * tokens * h * h + ffn
        total += nodes[site.path] * (own + above)
    return 2 * total  # forward + input-gradient backward


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=4, help="prompts attributed (the target budget is 32)")
    p.add_argument("--tokens", type=int, default=64, help="most tokens of prompt + answer")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    from attprune.models import load_smollm2
    from attprune.experiments.pack import load_task
    from attprune.experiments.prompts import PROMPT_TASKS, attribution_batches, encode_prompts

    model, tokenizer = load_smollm2()
    task = PROMPT_TASKS["mr"]
    examples = [e for e in encode_prompts(load_task("mr").train[:8 * args.examples], tokenizer, task, 24)
                if len(e.prompt) + 1 <= args.tokens][:args.examples]
    batches = attribution_batches(examples, tokenizer, task, batch_size=4)
    sites = attprune.find_sites(model)
    attprune.attribute(model, batches[:1], steps=1, progress=False)  # warm-up
    rows = []
    for label, settings in SETTINGS.items():
        started = time.perf_counter()
        scores = attprune.attribute(model, batches, progress=False, **settings)
        seconds = time.perf_counter() - started
        gaps = scores.meta.get("completeness")
        nodes = {s.path: gaps[s.path]["mean_nodes"] if gaps else scores.meta["steps"] for s in sites}
        flops = sum(useful_flops(model.config, int(mask.sum()), int((labels != -100).sum()), nodes, sites)
                    for b in batches for mask, labels in zip(b["attention_mask"], b["labels"]))
        peak = matmul_flops_per_second(8 * args.tokens, model.config.hidden_size, model.config.intermediate_size)
        n = len(examples)
        row = {"setting": label, "examples": n, "seconds": round(seconds, 1),
               "seconds_per_example": round(seconds / n, 2), "minutes_for_32": round(32 * seconds / n / 60, 1),
               "useful_gflop": round(flops / 1e9, 1), "useful_gflop_per_s": round(flops / seconds / 1e9, 1),
               "matmul_gflop_per_s": round(peak / 1e9, 1), "utilisation": round(flops / seconds / peak, 3),
               "mean_tokens": round(sum(int(b["attention_mask"].sum()) for b in batches) / n, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json(RESULTS / "ig_utilisation.json", {"model": "SmolLM2-135M-Instruct", "rows": rows})
    lines = ["| setting | s / example | minutes for 32 | useful GFLOP/s | matmul GFLOP/s | utilisation |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['seconds_per_example']} | {r['minutes_for_32']} | {r['useful_gflop_per_s']} | "
              f"{r['matmul_gflop_per_s']} | {r['utilisation']:.0%} |" for r in rows]
    (RESULTS / "ig_utilisation.md").write_text("# Per-site IG on SmolLM2: useful FLOPs per second\n\n"
                                               + "\n".join(lines) + "\n")
    return {"rows": rows}


if __name__ == "__main__":
    main()
