"""Task-specific pruning of a real decoder LLM (SmolLM2-135M-Instruct) on prompt tasks.

    python bench/experiments/llm_pruning.py                 # -> bench/results/llm/
    python bench/experiments/llm_pruning.py --tasks bbc --methods fisher wanda --sparsities 0.1 0.3

1. Dense zero-shot accuracy of every prompt task (``attprune/tasks/prompts.py``) on
   ``--max-test`` test prompts with a 95% bootstrap interval, beside the majority share; a
   task whose interval does not clear the majority share tells nothing about pruning and is
   dropped from the sweep (unless named with ``--tasks``).
2. Per kept task and method: scores from ``--n-attr`` training prompts (gold answer as the
   target), the FFN (and/or heads) sweep: accuracy with its interval and perplexity on
   held-out text (BBC dev articles) of the compacted model; the paired difference of IG
   against every other method at each point (same test prompts, resampled together).
3. One compacted point (IG, ``--compact-ffn``): parameters, memory, CPU prefill latency
   (batch 1 and 8, 128 tokens) and decode tokens/s with the KV cache, dense vs compact;
   compact == mask on the logits; reload with ``attprune.from_pretrained``.

Every finished row is appended to ``rows.jsonl`` and scores are cached under
``<cache>/scores/llm/``: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import attprune
from attprune.attribution.scores import Scores
from attprune.cache import cache_dir
from attprune.compact import mask
from attprune.io import write_json
from attprune.models import load_smollm2
from attprune.plan import make_plan
from attprune.tasks import report
from attprune.tasks.experiment import parameter_count
from attprune.tasks.intervals import Interval, mean_interval, paired_difference
from attprune.tasks.llm import decode_tokens_per_second, evaluate, prompt_run, pruned_copy, score
from attprune.tasks.prompts import PROMPT_TASKS, right_padded
from attprune.timing import forward_latency

RESULTS = Path(__file__).resolve().parents[1] / "results" / "llm"
METHODS = ("ig", "fisher", "grad_x_act", "activation", "wanda", "flap", "magnitude", "random")
#: IG at 4 Gauss-Legendre nodes: steps="auto" escalates SmolLM2's first layers to 64 nodes (bench/README.md)
SETTINGS = {"ig": {"steps": 4, "quadrature": "gausslegendre"}}
LABELS = {"grad_x_act": "taylor (grad_x_act)"}
KINDS = {"ffn": ("ffn",), "heads": ("heads",), "joint": ("ffn", "heads")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=tuple(PROMPT_TASKS), default=None,
                   help="tasks to prune (default: every task whose dense accuracy clears its majority share)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help="attribution methods to compare")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=["ffn"],
                   help="unit kinds to sweep: ffn, heads (by KV group), or joint (the same share of both, from the "
                        "two kinds' scores ranked together)")
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.5],
                   help="shares of the units removed")
    p.add_argument("--n-attr", type=int, default=32, help="training prompts the scores are computed from")
    p.add_argument("--max-test", type=int, default=300, help="test prompts per task")
    p.add_argument("--scope", choices=("global", "layer"), default="global",
                   help="make_plan's scope: one ranking over all layers (normalised per site), or the same share "
                        "removed from every layer")
    p.add_argument("--compact-ffn", type=float, default=0.5, help="FFN sparsity of the timed compact model")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return p.parse_args(argv)


def _done(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    return {r["key"]: r for r in rows}


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _interval(d: dict) -> Interval:
    return Interval(d["value"], d["low"], d["high"])


def dense_table(model, tokenizer, args, done: dict, rows_file: Path) -> dict:
    runs = {}
    for name in PROMPT_TASKS:
        key = f"dense/{name}/{args.max_test}"
        cached = done.get(key)
        recorded = None if cached is None else {"correct": cached["correct"], "perplexity": cached["perplexity"],
                                                 "accuracy": _interval(cached["accuracy"])}
        run = prompt_run(model, tokenizer, name, max_test=args.max_test, dense=recorded)
        runs[name] = run
        if cached is None:
            row = {"key": key, "task": name, "kind": "dense", "accuracy": run.dense["accuracy"].to_dict(),
                   "correct": run.dense["correct"], "perplexity": run.dense["perplexity"], "chance": run.chance}
            _append(rows_file, row)
            done[key] = row
        print(f"dense {name}: accuracy {run.dense['accuracy']:.3f}, majority {run.chance:.3f}", flush=True)
    return runs


def kind_scores(run, method: str, kind: str, n_attr: int, settings: dict) -> tuple[Scores, float]:
    """A method's scores for one sweep kind (joint: the FFN and head scores side by side) and
    the seconds they took."""
    parts = [score(run, method, n_examples=n_attr, units=(unit,), cache=cache_dir() / "scores" / "llm",
                   progress=True, **settings) for unit in KINDS[kind]]
    scores = functools.reduce(Scores.join, [scores for scores, _ in parts])
    return scores, sum(seconds for _, seconds in parts)


def sweep(run, args, done: dict, rows_file: Path) -> None:
    for method in args.methods:
        settings = SETTINGS.get(method, {})
        for kind in args.kinds:
            key_scores = f"{run.name}/{method}/{kind}"
            scores, seconds = kind_scores(run, method, kind, args.n_attr, settings)
            for sparsity in args.sparsities:
                key = f"prune/{key_scores}/{sparsity}/{args.n_attr}/{args.max_test}" + \
                    ("" if args.scope == "global" else f"/{args.scope}")
                if key in done:
                    continue
                started = time.perf_counter()
                result = evaluate(run, make_plan(scores, scope=args.scope, **{k: sparsity for k in KINDS[kind]}))
                row = {"key": key, "task": run.name, "kind": kind, "method": LABELS.get(method, method),
                       "sparsity": sparsity, "scope": args.scope, "accuracy": result["accuracy"].to_dict(),
                       "correct": result["correct"],
                       "perplexity": result["perplexity"], "params": result["params"],
                       "attribution_seconds": round(seconds, 2), "eval_seconds": round(time.perf_counter() - started, 1),
                       "settings": settings}
                _append(rows_file, row)
                done[key] = row
                print(f"{run.name} {method} {kind} {sparsity}: {result['accuracy']:.3f} ppl {result['perplexity']:.2f}"
                      f" ({seconds:.0f} s attribution)", flush=True)


def prune_seconds(run, args, rows: list[dict], sparsity: float = 0.3) -> dict[str, dict]:
    """Time to prune per method of the FFN rows at one FFN sparsity: attribution (as first computed,
    from the cache), make_plan and compact (measured now, on a copy)."""
    out = {}
    swept = {r["method"] for r in rows if r["kind"] == "ffn" and r["task"] == run.name}
    for method in (m for m in METHODS if LABELS.get(m, m) in swept):
        scores, attribution = kind_scores(run, method, "ffn", args.n_attr, SETTINGS.get(method, {}))
        started = time.perf_counter()
        plan = make_plan(scores, ffn=sparsity)
        planned = time.perf_counter()
        pruned_copy(run, plan)
        done = time.perf_counter()
        out[LABELS.get(method, method)] = {"attribution": round(attribution, 1), "plan": round(planned - started, 2),
                                           "compact": round(done - planned, 2),
                                           "total": round(attribution + done - started, 1)}
    return out


def compact_point(run, args) -> dict:
    """Timing, memory, exactness and reload of one compacted model (IG scores, FFN)."""
    scores, _ = score(run, "ig", n_examples=args.n_attr, units=("ffn",), cache=cache_dir() / "scores" / "llm",
                      **SETTINGS["ig"])
    plan = make_plan(scores, ffn=args.compact_ffn)
    model = run.model
    small = pruned_copy(run, plan)
    ids, attention = right_padded([e.prompt for e in run.test[:8]], run.tokenizer.eos_token_id)
    with torch.no_grad(), mask(model, plan):
        masked = model(input_ids=ids, attention_mask=attention).logits
    with torch.no_grad():
        compacted = small(input_ids=ids, attention_mask=attention).logits
    with tempfile.TemporaryDirectory() as folder:
        attprune.save_pretrained(small, folder)
        reloaded = attprune.from_pretrained(folder)
        with torch.no_grad():
            reload_diff = (reloaded(input_ids=ids, attention_mask=attention).logits - compacted).abs().max().item()
    tokens = torch.randint(100, model.config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
    latency = {}
    for batch in (1, 8):
        timings = forward_latency({"dense": model, "compact": small}, {"input_ids": tokens[:batch]}, repeats=9)
        latency[f"prefill_b{batch}_128"] = {k: v.to_dict() for k, v in timings.items()}
    decode = {name: decode_tokens_per_second(m, tokens[:1, :32]) for name, m in (("dense", model), ("compact", small))}
    params = {"dense": parameter_count(model), "compact": parameter_count(small)}
    memory = {name: sum(p.numel() * p.element_size() for p in m.parameters()) for name, m in
              (("dense", model), ("compact", small))}
    return {"task": run.name, "ffn": args.compact_ffn, "params": params, "parameter_bytes": memory,
            "latency": latency, "decode_tokens_per_s": decode,
            "compact_vs_mask_max_abs_logit_diff": (masked - compacted).abs().max().item(),
            "reload_max_abs_logit_diff": reload_diff}


def _name(row: dict) -> str:
    """A method's column: its name, and the plan's scope when it is not the default."""
    return row["method"] + (" (per layer)" if row.get("scope", "global") != "global" else "")


def _point(row: dict) -> tuple:
    return row["task"], row["kind"], row.get("sparsity"), row.get("scope", "global")


def comparisons(rows: list[dict]) -> list[dict]:
    """IG minus every other method at each (task, kind, sparsity, scope): paired bootstrap intervals."""
    out = []
    ig = {_point(r): r for r in rows if r.get("method") == "ig"}
    for r in rows:
        other = ig.get(_point(r)) if r["kind"] != "dense" else None
        if other is None or r["method"] == "ig":
            continue
        diff = paired_difference(other["correct"], r["correct"])
        out.append({"task": r["task"], "kind": r["kind"], "sparsity": r["sparsity"], "versus": _name(r),
                    "ig_minus_other": diff.to_dict(),
                    "verdict": "ig ahead" if diff.low > 0 else "ig behind" if diff.high < 0 else "tie"})
    return out


def markdown(rows: list[dict], compared: list[dict], compact: dict | None, timing: dict | None = None) -> str:
    dense = [r for r in rows if r["kind"] == "dense"]
    md = ["# SmolLM2-135M-Instruct: task-specific pruning on prompt tasks", "",
          "Accuracy on the test prompts with its 95% bootstrap interval; perplexity on held-out BBC dev text.", "",
          "## Dense, zero-shot", "", "| task | accuracy [95% CI] | majority share | above chance |", "|---|---|---|---|"]
    for r in dense:
        a = _interval(r["accuracy"])
        md.append(f"| {r['task']} | {a:.3f} | {r['chance']:.3f} | {'yes' if a.low > r['chance'] else 'no'} |")
    if dense:
        md += ["", f"dense perplexity: {dense[0]['perplexity']:.2f}", ""]
    pruned = [r for r in rows if r["kind"] != "dense"]
    for task in sorted({r["task"] for r in pruned}):
        for kind in sorted({r["kind"] for r in pruned if r["task"] == task}):
            these = [r for r in pruned if r["task"] == task and r["kind"] == kind]
            methods = list(dict.fromkeys(_name(r) for r in these))
            sparsities = sorted({r["sparsity"] for r in these})
            md += [f"## {task}, {kind}: accuracy [95% CI] / perplexity", "",
                   "| sparsity | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
            for s in sparsities:
                cells = []
                for m in methods:
                    r = next((r for r in these if _name(r) == m and r["sparsity"] == s), None)
                    cells.append("-" if r is None else f"{_interval(r['accuracy']):.3f} / {r['perplexity']:.1f}")
                md.append(f"| {s} | " + " | ".join(cells) + " |")
            seconds = {r["method"]: r["attribution_seconds"] for r in these}  # as first computed
            md += ["", "attribution seconds: " + ", ".join(f"{m} {v:.0f}" for m, v in seconds.items()), ""]
    if timing:
        md += ["## Time to prune (FFN 30%, seconds)", "", "| method | attribution | plan | compact | total |",
               "|---|---|---|---|---|"]
        md += [f"| {m} | {t['attribution']} | {t['plan']} | {t['compact']} | {t['total']} |" for m, t in timing.items()]
        md.append("")
    if compared:
        md += ["## IG minus each method (paired 95% CI)", "", "| task | kind | sparsity | versus | difference | verdict |",
               "|---|---|---|---|---|---|"]
        md += [f"| {c['task']} | {c['kind']} | {c['sparsity']} | {c['versus']} | {_interval(c['ig_minus_other']):+.3f} "
               f"| {c['verdict']} |" for c in compared]
    if compact:
        lat = compact["latency"]
        md += ["", f"## Compact model ({compact['task']}, IG, FFN {compact['ffn']:.0%})", "",
               f"parameters {compact['params']['dense']:,} -> {compact['params']['compact']:,}; "
               f"compact vs mask max |logit diff| {compact['compact_vs_mask_max_abs_logit_diff']:.2e}; "
               f"reloaded vs compact {compact['reload_max_abs_logit_diff']:.2e}", "",
               "| measure | dense | compact | ratio |", "|---|---|---|---|"]
        for name, t in lat.items():
            d, c = t["dense"]["median_ms"], t["compact"]["median_ms"]
            md.append(f"| {name} (ms, median) | {d:.1f} | {c:.1f} | {d / c:.2f}x |")
        d, c = compact["decode_tokens_per_s"]["dense"], compact["decode_tokens_per_s"]["compact"]
        md.append(f"| decode tokens/s (batch 1) | {d:.1f} | {c:.1f} | {c / d:.2f}x |")
    return "\n".join(md) + "\n"


def plot(rows: list[dict], out: Path) -> None:
    """Accuracy (95% bands) and perplexity (log scale) vs sparsity, one figure per kind."""
    pruned = [dict(r, accuracy=r["accuracy"]["value"], ci95=[r["accuracy"]["low"], r["accuracy"]["high"]],
                   method=_name(r)) for r in rows if r["kind"] != "dense"]
    dense = {r["task"]: r["accuracy"]["value"] for r in rows if r["kind"] == "dense"}
    dense_ppl = {r["task"]: r["perplexity"] for r in rows if r["kind"] == "dense"}
    for kind in sorted({r["kind"] for r in pruned}):
        where = {"kind": kind}
        report.plot(report.curves(pruned, where=where), out / f"accuracy_{kind}.png",
                    title=f"SmolLM2-135M, {kind} pruning (95% bands)", dense=dense,
                    intervals=report.bands(pruned, where=where))
        ppl = report.curves([dict(r, accuracy=r["perplexity"]) for r in pruned], where=where)
        report.plot(ppl, out / f"perplexity_{kind}.png", title=f"SmolLM2-135M, {kind} pruning: held-out text",
                    dense=dense_ppl, y_label="perplexity", log_y=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    rows_file = args.out / "rows.jsonl"
    done = _done(rows_file)
    model, tokenizer = load_smollm2()
    runs = dense_table(model, tokenizer, args, done, rows_file)
    tasks = args.tasks or [n for n, r in runs.items() if r.dense["accuracy"].low > r.chance]
    print("pruning tasks:", ", ".join(tasks) or "none", flush=True)
    for name in tasks:
        sweep(runs[name], args, done, rows_file)
    compact = None
    if tasks and "ig" in args.methods:
        key = f"compact/{tasks[0]}/{args.compact_ffn}/{args.n_attr}"
        if key not in done:
            done[key] = {"key": key, "kind": "compact", **compact_point(runs[tasks[0]], args)}
            _append(rows_file, done[key])
        compact = done[key]
    rows = [r for r in done.values() if r["kind"] != "compact"]
    compared = comparisons(rows)
    timing = prune_seconds(runs[tasks[0]], args, rows) if tasks else {}
    write_json(args.out / "summary.json", {"config": {k: str(v) for k, v in vars(args).items()},
                                           "rows": [{k: v for k, v in r.items() if k != "correct"} for r in rows],
                                           "comparisons": compared, "compact": compact, "prune_seconds": timing})
    (args.out / "README.md").write_text(markdown(rows, compared, compact, timing))
    plot(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
