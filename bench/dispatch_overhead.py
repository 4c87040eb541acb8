"""What offloading costs: IG attribution and a compacted forward on a dispatched model vs
the same model in memory, measured in the same run.

The packaged MiniLM classifier is scored (``--examples`` sentences, ``--steps`` IG steps) in
memory, then dispatched with accelerate: part on CPU and part on disk (``--cpu-memory``),
and all on disk.  An offloaded module reads its weights from the offload store for every
forward, and per-site IG runs one m-step pass per site through the layers above it, so
the overhead grows with depth.  Scores must agree exactly (checked); the ratios are the
result.  On a GPU machine, ``--device cuda`` puts the kept modules on cuda:0 and the others
in CPU memory (the common "GPU + CPU offload" setting).

    python bench/dispatch_overhead.py
    python bench/dispatch_overhead.py --device cuda --cpu-memory 40MB
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import attprune
from attprune import devices
from attprune.models import load_minilm_classifier

RESULTS = Path(__file__).parent / "results"
SENTENCES = ["a gripping, beautifully acted film", "dull, overlong and badly written", "I may be wrong, but",
             "the plot holds together until the last act", "perhaps the best thing this year",
             "it is not clear the data support this", "a flat and lifeless remake", "warm, funny and wise"]


def batches(tokenizer, n: int, batch_size: int, device: str) -> list[dict]:
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(n)]
    out = []
    for start in range(0, n, batch_size):
        chunk = texts[start:start + batch_size]
        batch = dict(tokenizer(chunk, padding=True, return_tensors="pt"))
        batch["labels"] = torch.tensor([i % 2 for i in range(start, start + len(chunk))])
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def placements(model, args, offload: str) -> dict[str, dict]:
    kept = 0 if args.device == "cuda" else "cpu"
    budget = {kept: args.cpu_memory} if args.device == "cpu" else {0: args.cpu_memory, "cpu": "64GB"}
    split = devices.device_map_for(model, "sequential", budget)
    return {"split": split, f"all {offload}": {"": offload}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where modules that are kept run")
    parser.add_argument("--examples", type=int, default=16, help="sentences scored")
    parser.add_argument("--batch-size", type=int, default=8, help="sentences per batch")
    parser.add_argument("--steps", type=int, default=8, help="IG steps")
    parser.add_argument("--cpu-memory", default="80MB",
                        help="memory budget of the kept device in the split placement (the rest is offloaded)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the fastest counts)")
    parser.add_argument("--out", default=None, help="result JSON (default: bench/results/dispatch_<device>.json)")
    args = parser.parse_args()
    torch.manual_seed(0)
    offload = "disk" if args.device == "cpu" else "cpu"
    base, tokenizer = load_minilm_classifier()
    data = batches(tokenizer, args.examples, args.batch_size, args.device)
    score = lambda m: attprune.attribute(m, data, steps=args.steps, progress=False)  # noqa: E731
    in_memory = base.to(args.device)
    rows = []
    seconds, reference = timed(lambda: score(in_memory), args.repeats)
    plan = attprune.make_plan(reference, ffn=0.5, heads=0.25)
    compacted = attprune.compact(load_minilm_classifier()[0].to(args.device), plan)
    forward_s, _ = timed(lambda: compacted(**{k: v for k, v in data[0].items() if k != "labels"}), args.repeats)
    rows.append({"placement": f"in memory ({args.device})", "attribution_s": round(seconds, 3),
                 "compact_forward_ms": round(forward_s * 1e3, 2), "offloaded_sites": 0})
    with tempfile.TemporaryDirectory() as folder:
        for name, placement in placements(load_minilm_classifier()[0], args, offload).items():
            model = devices.dispatch(load_minilm_classifier()[0], placement, offload_folder=f"{folder}/{len(rows)}")
            n_offloaded = sum(devices.is_offloaded(s.module(model)) for s in attprune.find_sites(model))
            seconds, scores = timed(lambda: score(model), args.repeats)
            for path, stats in scores.sites.items():
                if not torch.allclose(stats.sum, reference.sites[path].sum, rtol=1e-5, atol=1e-6):
                    raise AssertionError(f"scores of {path} differ when dispatched ({name})")
            attprune.compact(model, plan)
            forward_s, _ = timed(lambda: model(**{k: v for k, v in data[0].items() if k != "labels"}), args.repeats)
            rows.append({"placement": name, "attribution_s": round(seconds, 3),
                         "compact_forward_ms": round(forward_s * 1e3, 2), "offloaded_sites": n_offloaded})
    base_s, base_ms = rows[0]["attribution_s"], rows[0]["compact_forward_ms"]
    for row in rows:
        row["attribution_ratio"] = round(row["attribution_s"] / base_s, 2)
        row["forward_ratio"] = round(row["compact_forward_ms"] / base_ms, 2)
    result = {"settings": vars(args), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "n_sites": len(reference.sites), "rows": rows}
    out = Path(args.out) if args.out else RESULTS / f"dispatch_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'placement':<22} {'offloaded sites':>15} {'attribution s':>14} {'x':>6} {'compact fwd ms':>15} {'x':>6}")
    for row in rows:
        print(f"{row['placement']:<22} {row['offloaded_sites']:>15} {row['attribution_s']:>14} "
              f"{row['attribution_ratio']:>6} {row['compact_forward_ms']:>15} {row['forward_ratio']:>6}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
