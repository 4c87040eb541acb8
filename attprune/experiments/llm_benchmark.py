"""Pruning a real decoder LLM (SmolLM2-135M-Instruct) on prompt tasks: criteria and arms
compared with intervals that hold the test prompts AND the attribution draws.

    python bench/experiments/llm_pruning.py                       # every criterion, its default arm (recipe)
    python bench/experiments/llm_pruning.py --tasks bbc --methods ig fisher --draws 0 1 2

An ``Arm`` is one arm of the comparison, how one criterion's plan is made: the attribution method and its settings,
how many training prompts, the plan's options and whether compaction compensates the
removed units' mean output.  A point is a (task, kind, sparsity): kind ``ffn`` (FFN neurons),
``heads`` (query heads, by KV group) or ``joint`` (the same share of both, ranked from the two
kinds' scores together).  Every (arm, point) is evaluated once per attribution draw (draw
0: the first ``n`` training prompts; draw k: a seeded shuffle's first ``n``), on the same test
prompts; a method without data (magnitude) has one draw, random pruning one seed per draw.

Intervals: ``stats.draws_interval`` / ``paired_draws`` resample the draws and the test prompts
together (two-level bootstrap), so the spread over attribution sets is inside every interval;
differences pair the same draw index and the same prompts; pooled differences average the
tasks, each resampled on its own.

1. Dense accuracy of every prompt task with its interval beside the majority share: a task
   whose interval does not clear the majority share tells nothing about pruning and is not
   swept (unless named with ``--tasks``).
2. The sweep: rows appended to ``rows.jsonl`` as they finish (per-example results kept), scores
   and outcomes cached (``pipeline``): an interrupted run resumes where it stopped.
3. One compacted point (the first arm, ``--compact-ffn``): parameters, CPU prefill latency and
   KV-cache decoding, dense vs compact; compact == mask; reload with ``attprune.from_pretrained``.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..attribution import Scores
from ..attribution.recipes import CAUSAL_LM, PLAN_FIELDS, unset_fields
from ..batches import padded
from ..cache import cache_dir
from ..compact import mask
from ..io import json_digest, write_json
from ..models import load_smollm2
from ..plan import make_plan
from ..pretrained import from_pretrained, save_pretrained
from ..timing import forward_latency
from . import report
from .llm import LLMTask, decode_tokens_per_second
from .pipeline import evaluate, parameter_count, pruned_copy, score, site_means
from .prompts import PROMPT_TASKS
from .stats import Interval, draws_interval, paired_draws, pooled_draws, verdict

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "llm"
KINDS = {"ffn": ("ffn",), "heads": ("heads",), "joint": ("ffn", "heads")}
DATA_FREE = ("magnitude", "random")


@dataclass(frozen=True)
class Arm:
    """How one criterion's plan is made.

    label: the name in tables; method: the attribution method; settings: its
    ``attprune.attribute`` settings; n: training prompts per draw; plan: ``make_plan`` options;
    compensate: compaction folds the removed units' mean output (over the draw's prompts) into
    the biases.
    """

    label: str
    method: str
    settings: dict = field(default_factory=dict)
    n: int = 32
    plan: dict = field(default_factory=dict)
    compensate: bool = False

    def key(self) -> str:
        """A digest of everything that decides the arm's results (not its label): its fields, and
        the library's causal-LM recipe when the arm leaves a setting to it."""
        fields = [self.method, sorted(self.settings.items()), self.n, sorted(self.plan.items())]
        if unset_fields(self.method, self.settings) or set(PLAN_FIELDS) - set(self.plan):
            fields.append([CAUSAL_LM.name, sorted(CAUSAL_LM.attribution.items()),
                           sorted(CAUSAL_LM.plan_for(self.method).items())])
        return json_digest(fields + (["compensate"] if self.compensate else []))[:12]

    def draws(self, draws: tuple[int, ...]) -> tuple[int, ...]:
        """The draws this arm is evaluated on: one for magnitude (no data, no seed)."""
        return (0,) if self.method == "magnitude" else tuple(draws)


METHODS = ("ig", "fisher", "grad_x_act", "activation", "wanda", "flap", "magnitude", "random")
LABELS = {"grad_x_act": "taylor (grad_x_act)"}


def default_arm(method: str) -> Arm:
    """A criterion as attprune runs it by default on a causal LM (the library's causal-LM recipe)."""
    return Arm(LABELS.get(method, method), method)


class Results:
    """``rows.jsonl``: one JSON row per finished evaluation, appended as it finishes."""

    def __init__(self, path: Path):
        self.path = path
        rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
        self.rows = {r["key"]: r for r in rows}

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def add(self, row: dict) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.rows[row["key"]] = row
        return row


def score_cache() -> Path:
    return cache_dir() / "scores" / "llm"


def eval_cache() -> Path:
    return cache_dir() / "evals" / "llm"


def arm_scores(subject: LLMTask, arm: Arm, kind: str, draw: int) -> tuple[Scores, float]:
    """An arm's scores for one kind (joint: the FFN and head scores side by side, each kind
    scored on its own) at one draw, and the seconds they took (as first computed)."""
    settings = dict(arm.settings, seed=draw) if arm.method == "random" else arm.settings
    n = None if arm.method in DATA_FREE else arm.n
    parts = [score(subject, arm.method, n=n, draw=draw, units=(unit,), cache=score_cache(), **settings)
             for unit in KINDS[kind]]
    return functools.reduce(Scores.join, [s for s, _ in parts]), sum(seconds for _, seconds in parts)


def dense_row(subject: LLMTask, results: Results) -> dict:
    key = f"dense/{subject.name}/{len(subject.test)}"
    row = results.get(key)
    if row is None:
        outcome = evaluate(subject, cache=eval_cache())
        interval = outcome.interval()
        row = results.add({"key": key, "task": subject.name, "kind": "dense", "accuracy": interval.to_dict(),
                           "correct": outcome.correct.tolist(), "perplexity": outcome.perplexity,
                           "chance": subject.chance})
    return row


def point_key(subject: LLMTask, arm: Arm, kind: str, sparsity: float, draw: int) -> str:
    return f"prune/{subject.name}/{kind}/{arm.label}/{arm.key()}/{draw}/{sparsity}/{len(subject.test)}"


def run_point(subject: LLMTask, arm: Arm, kind: str, sparsity: float, draw: int, results: Results) -> dict:
    """One evaluation (cached): the arm's plan at ``sparsity`` of ``kind``, from draw ``draw``."""
    key = point_key(subject, arm, kind, sparsity, draw)
    row = results.get(key)
    if row is not None:
        return row
    scores, seconds = arm_scores(subject, arm, kind, draw)
    plan = make_plan(scores, **{k: sparsity for k in KINDS[kind]}, **arm.plan)
    means = site_means(subject, n=arm.n, draw=draw, cache=score_cache()) if arm.compensate else None
    started = time.perf_counter()
    outcome = evaluate(subject, plan, cache=eval_cache(), compensate=means)
    interval = outcome.interval()
    print(f"{subject.name} {kind} {arm.label} draw {draw} {sparsity:.0%}: {interval:.3f} ppl "
          f"{outcome.perplexity:.1f} ({seconds:.0f} s attribution)", flush=True)
    return results.add({"key": key, "task": subject.name, "kind": kind, "method": arm.label,
                        "arm": arm.key(), "draw": draw, "sparsity": sparsity,
                        "accuracy": interval.to_dict(), "correct": outcome.correct.tolist(),
                        "perplexity": outcome.perplexity, "attribution_seconds": round(seconds, 2),
                        "eval_seconds": round(time.perf_counter() - started, 1),
                        "settings": arm.settings, "plan": arm.plan, "n": arm.n,
                        "compensate": arm.compensate})


def sweep(subjects: dict[str, LLMTask], arms: list[Arm], kinds, sparsities, draws, results: Results) -> None:
    """Every (task, arm, kind, sparsity, draw), draw by draw (the first draw of everything first)."""
    for draw in sorted(set(draws)):
        for subject in subjects.values():
            for arm in arms:
                if draw not in arm.draws(draws):
                    continue
                for kind in kinds:
                    for sparsity in sparsities[kind] if isinstance(sparsities, dict) else sparsities:
                        run_point(subject, arm, kind, sparsity, draw, results)


# -- results -------------------------------------------------------------------------------

def matrix(rows: list[dict], task: str, kind: str, method: str, sparsity: float,
           draws: set[int] | None = None) -> np.ndarray | None:
    """The [draws, prompts] correctness of one (task, kind, method, sparsity), draws in order
    (only ``draws`` when given)."""
    found = sorted((r for r in rows if r.get("kind") == kind and r["task"] == task and r["method"] == method
                    and r["sparsity"] == sparsity and (draws is None or r["draw"] in draws)),
                   key=lambda r: r["draw"])
    return np.array([r["correct"] for r in found], dtype=np.float64) if found else None


def draws_of(rows: list[dict], task: str, kind: str, method: str, sparsity: float) -> set[int]:
    return {r["draw"] for r in rows if r.get("kind") == kind and r["task"] == task and r["method"] == method
            and r["sparsity"] == sparsity}


def paired_matrices(rows, task, kind, first, other, sparsity) -> tuple[np.ndarray, np.ndarray] | None:
    """Both methods' correctness on the draws both have (a method with one draw, e.g. magnitude
    or random, is paired with every draw of the other); None when they share none."""
    a, b = draws_of(rows, task, kind, first, sparsity), draws_of(rows, task, kind, other, sparsity)
    if not a or not b:
        return None
    common = a & b if len(a) > 1 and len(b) > 1 else None
    if common is not None and not common:
        return None
    return matrix(rows, task, kind, first, sparsity, common), matrix(rows, task, kind, other, sparsity, common)


def summary_rows(rows: list[dict]) -> list[dict]:
    """One row per (task, kind, method, sparsity): accuracy over draws and prompts with its
    two-level interval, the draws' accuracies, mean perplexity and attribution seconds."""
    out = []
    points = dict.fromkeys((r["task"], r["kind"], r["method"], r["sparsity"]) for r in rows if r["kind"] != "dense")
    for task, kind, method, s in points:
        found = [r for r in rows if (r["task"], r["kind"], r["method"], r.get("sparsity")) == (task, kind, method, s)]
        interval = draws_interval(matrix(rows, task, kind, method, s))
        out.append({"task": task, "kind": kind, "method": method, "sparsity": s, "draws": len(found),
                    "accuracy": interval.value, "ci95": [interval.low, interval.high],
                    "per_draw": [r["accuracy"]["value"] for r in sorted(found, key=lambda r: r["draw"])],
                    "perplexity": float(np.mean([r["perplexity"] for r in found])),
                    "attribution_seconds": float(np.mean([r["attribution_seconds"] for r in found]))})
    return out


def contrasts(rows: list[dict], first: str, versus: list[str]) -> dict:
    """``first`` minus each method of ``versus`` at every (kind, sparsity) both have: per task
    (``paired_draws``) and pooled over the tasks (``pooled_draws``)."""
    per_task, pooled = [], []
    points = sorted({(r["kind"], r["sparsity"]) for r in rows if r.get("method") == first})
    tasks = sorted({r["task"] for r in rows if r.get("method") == first})
    for other in versus:
        for kind, s in points:
            diffs = []
            for task in tasks:
                pair = paired_matrices(rows, task, kind, first, other, s)
                if pair is None:
                    continue
                a, b = pair
                difference = paired_draws(a, b)
                diffs.append(a - b)
                per_task.append({"task": task, "kind": kind, "sparsity": s, "first": first, "second": other,
                                 "draws": max(a.shape[0], b.shape[0]),
                                 "difference": difference.to_dict(), "verdict": verdict(difference)})
            if diffs:
                difference = pooled_draws(diffs)
                pooled.append({"kind": kind, "sparsity": s, "first": first, "second": other, "tasks": len(diffs),
                               "difference": difference.to_dict(), "verdict": verdict(difference)})
    return {"per_task": per_task, "pooled": pooled}


def _interval(d: dict) -> Interval:
    return Interval(d["value"], d["low"], d["high"])


def dense_markdown(dense: list[dict]) -> list[str]:
    md = ["## Dense", "", "| task | accuracy [95% CI] | majority share | clears it by 10 points (interval) |",
          "|---|---|---|---|"]
    for r in dense:
        a = _interval(r["accuracy"])
        md.append(f"| {r['task']} | {a:.3f} | {r['chance']:.3f} | {'yes' if a.low >= r['chance'] + 0.10 else 'no'} |")
    if dense:
        md += ["", f"dense perplexity (held-out BBC dev text): {dense[0]['perplexity']:.2f}", ""]
    return md


def sweep_markdown(summary: list[dict]) -> list[str]:
    md = []
    for task in dict.fromkeys(r["task"] for r in summary):
        for kind in dict.fromkeys(r["kind"] for r in summary if r["task"] == task):
            these = [r for r in summary if r["task"] == task and r["kind"] == kind]
            methods = list(dict.fromkeys(r["method"] for r in these))
            md += [f"## {task}, {kind}: accuracy [95% CI over draws and prompts] / perplexity", "",
                   "| sparsity | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
            for s in sorted({r["sparsity"] for r in these}):
                cells = []
                for m in methods:
                    r = next((r for r in these if r["method"] == m and r["sparsity"] == s), None)
                    cells.append("-" if r is None else f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
                                                       f" / {r['perplexity']:.1f}")
                md.append(f"| {s:.0%} | " + " | ".join(cells) + " |")
            seconds = {r["method"]: r["attribution_seconds"] for r in these}
            md += ["", "attribution seconds per draw: " + ", ".join(f"{m} {v:.0f}" for m, v in seconds.items()), ""]
    return md


def contrast_markdown(found: dict, title: str) -> list[str]:
    """``contrasts`` as tables (the differences in points, intervals over draws and prompts)."""
    return report.contrast_markdown(found, title, by=("kind",))


def plot(summary: list[dict], dense: list[dict], out: Path, prefix: str = "") -> None:
    """Accuracy (95% bands over draws and prompts) and perplexity (log scale) vs sparsity, per kind."""
    dense_accuracy = {r["task"]: r["accuracy"]["value"] for r in dense}
    dense_ppl = {r["task"]: r["perplexity"] for r in dense}
    for kind in dict.fromkeys(r["kind"] for r in summary):
        where = {"kind": kind}
        report.plot(report.curves(summary, where=where), out / f"{prefix}accuracy_{kind}.png",
                    title=f"SmolLM2-135M, {kind} pruning (95% bands: draws and prompts)", dense=dense_accuracy,
                    intervals=report.bands(summary, where=where))
        ppl = report.curves([dict(r, accuracy=r["perplexity"]) for r in summary], where=where)
        report.plot(ppl, out / f"{prefix}perplexity_{kind}.png", title=f"SmolLM2-135M, {kind} pruning: held-out text",
                    dense=dense_ppl, y_label="perplexity", log_y=True)


# -- cost and the compacted model ------------------------------------------------------------

def prune_seconds(subject: LLMTask, arms: list[Arm], sparsity: float = 0.3) -> dict[str, dict]:
    """Time to prune per arm at one FFN sparsity (draw 0): attribution (as first computed,
    from the cache), make_plan and compact (measured now, on a copy)."""
    out = {}
    for arm in arms:
        scores, attribution = arm_scores(subject, arm, "ffn", 0)
        started = time.perf_counter()
        plan = make_plan(scores, ffn=sparsity, **arm.plan)
        planned = time.perf_counter()
        pruned_copy(subject, plan)
        done = time.perf_counter()
        out[arm.label] = {"attribution": round(attribution, 1), "plan": round(planned - started, 2),
                             "compact": round(done - planned, 2), "total": round(attribution + done - started, 1)}
    return out


def compact_point(subject: LLMTask, arm: Arm, ffn: float) -> dict:
    """Timing, memory, exactness and reload of one compacted model (the arm's FFN plan, draw 0)."""
    scores, _ = arm_scores(subject, arm, "ffn", 0)
    plan = make_plan(scores, ffn=ffn, **arm.plan)
    model = subject.model
    small = pruned_copy(subject, plan)
    ids, attention = padded([e.prompt for e in subject.test[:8]], subject.tokenizer.eos_token_id)
    with torch.no_grad(), mask(model, plan):
        masked = model(input_ids=ids, attention_mask=attention).logits
    with torch.no_grad():
        compacted = small(input_ids=ids, attention_mask=attention).logits
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(small, folder)
        reloaded = from_pretrained(folder)
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
    return {"task": subject.name, "arm": arm.label, "ffn": ffn, "params": params, "parameter_bytes": memory,
            "latency": latency, "decode_tokens_per_s": decode,
            "compact_vs_mask_max_abs_logit_diff": (masked - compacted).abs().max().item(),
            "reload_max_abs_logit_diff": reload_diff}


def compact_markdown(compact: dict) -> list[str]:
    lat = compact["latency"]
    md = [f"## Compact model ({compact['task']}, {compact['arm']}, FFN {compact['ffn']:.0%})", "",
          f"parameters {compact['params']['dense']:,} -> {compact['params']['compact']:,}; "
          f"compact vs mask max |logit diff| {compact['compact_vs_mask_max_abs_logit_diff']:.2e}; "
          f"reloaded vs compact {compact['reload_max_abs_logit_diff']:.2e}", "",
          "| measure | dense | compact | ratio |", "|---|---|---|---|"]
    for name, t in lat.items():
        d, c = t["dense"]["median_ms"], t["compact"]["median_ms"]
        md.append(f"| {name} (ms, median) | {d:.1f} | {c:.1f} | {d / c:.2f}x |")
    d, c = compact["decode_tokens_per_s"]["dense"], compact["decode_tokens_per_s"]["compact"]
    md.append(f"| decode tokens/s (batch 1) | {d:.1f} | {c:.1f} | {c / d:.2f}x |")
    return md + [""]


def timing_markdown(timing: dict) -> list[str]:
    md = ["## Time to prune (FFN 30%, seconds; attribution as first computed)", "",
          "| arm | attribution | plan | compact | total |", "|---|---|---|---|---|"]
    md += [f"| {m} | {t['attribution']} | {t['plan']} | {t['compact']} | {t['total']} |" for m, t in timing.items()]
    return md + [""]


# -- the command line ------------------------------------------------------------------------

def subjects_for(model, tokenizer, names, max_test: int, results: Results) -> dict[str, LLMTask]:
    """Each prompt task encoded, its dense row recorded (printed beside the majority share)."""
    subjects = {}
    for name in names:
        subject = LLMTask.of(model, tokenizer, name, max_test=max_test)
        row = dense_row(subject, results)
        print(f"dense {name}: accuracy {_interval(row['accuracy']):.3f}, majority {row['chance']:.3f}", flush=True)
        subjects[name] = subject
    return subjects


def above_chance(results: Results, subjects: dict[str, LLMTask]) -> list[str]:
    return [n for n, s in subjects.items() if results.get(f"dense/{n}/{len(s.test)}")["accuracy"]["low"] > s.chance]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", choices=tuple(PROMPT_TASKS), default=None,
                   help="tasks to prune (default: every task whose dense accuracy clears its majority share)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="criteria, each with its default arm")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=["ffn", "heads", "joint"],
                   help="unit kinds: ffn, heads (by KV group), joint (the same share of both, ranked together)")
    p.add_argument("--sparsities", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.5],
                   help="shares of the units removed")
    p.add_argument("--draws", nargs="+", type=int, default=[0, 1, 2], help="attribution draws (seeds)")
    p.add_argument("--n-attr", type=int, default=32, help="training prompts per draw")
    p.add_argument("--max-test", type=int, default=300, help="test prompts per task")
    p.add_argument("--compact-ffn", type=float, default=0.5, help="FFN sparsity of the timed compact model")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return p.parse_args(argv)


def write_results(out: Path, results: Results, arms: list[Arm], extra: dict, md_extra: list[str],
                  config: dict) -> dict:
    """summary.json (rows without per-example lists), README.md and the plots."""
    rows = [r for r in results.rows.values() if r["kind"] != "compact"]
    labels = {r.label for r in arms}
    dense = [r for r in rows if r["kind"] == "dense"]
    swept = [r for r in rows if r["kind"] != "dense" and r["method"] in labels]
    summary = summary_rows(swept)
    payload = {"config": config, "dense": [{k: v for k, v in r.items() if k != "correct"} for r in dense],
               "summary": summary, **extra}
    write_json(out / "summary.json", payload)
    md = ["# SmolLM2-135M-Instruct: task-specific pruning on prompt tasks", "",
          "Accuracy on the test prompts, mean over attribution draws, with a 95% interval that resamples the draws "
          "and the prompts together; perplexity on held-out BBC dev text.", ""]
    md += dense_markdown(dense) + md_extra + sweep_markdown(summary)
    (out / "README.md").write_text("\n".join(md) + "\n")
    plot(summary, dense, out)
    return payload


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = Results(args.out / "rows.jsonl")
    model, tokenizer = load_smollm2()
    subjects = subjects_for(model, tokenizer, PROMPT_TASKS, args.max_test, results)
    tasks = args.tasks or above_chance(results, subjects)
    print("pruning tasks:", ", ".join(tasks) or "none", flush=True)
    subjects = {n: subjects[n] for n in tasks}
    arms = [default_arm(m) for m in args.methods]
    sweep(subjects, arms, args.kinds, args.sparsities, tuple(args.draws), results)
    extra, md = {}, []
    if subjects and "ig" in args.methods:
        first = next(iter(subjects.values()))
        key = f"compact/{first.name}/{args.compact_ffn}/{args.n_attr}"
        if results.get(key) is None:
            results.add({"key": key, "kind": "compact", **compact_point(first, default_arm("ig"), args.compact_ffn)})
        extra["compact"] = results.get(key)
        extra["prune_seconds"] = prune_seconds(first, arms)
        compared = contrasts([r for r in results.rows.values() if r["kind"] not in ("dense", "compact")], "ig",
                             [r.label for r in arms if r.label != "ig"])
        extra["contrasts"] = compared
        md = timing_markdown(extra["prune_seconds"]) + contrast_markdown(compared, "IG minus each criterion") + \
            compact_markdown(extra["compact"])
    write_results(args.out, results, arms, extra, md, {k: str(v) for k, v in vars(args).items()})
    return 0

