"""The benchmark's targets, checked against the experiments' result files.

Reads ``main_sweep.json``, ``low_resource.json``, ``unsupervised.json`` and
``unseen_domain.json`` from a results folder (whichever exist) and reports, over the tasks
each covers, where attribution-based pruning stands against each target:

* at 50% FFN sparsity, ``ig`` keeps >= 95% of the dense score (its interval: ``kept_of_dense``);
* at 70%, ``ig`` beats the best data-free baseline by >= 10 points and is at least as good
  as ``fisher``, ``grad_x_act`` and ``activation``;
* 32 labelled examples within 2 points of the full attribution set;
* unsupervised (own predictions) within 2 points of supervised;
* scores from the source task within 3 points of scores from the target domain.

Every target is read from a paired comparison: the mean over tasks of a per-task difference
(IG minus a method; 32 examples minus 256; ...), with a 95% interval from a bootstrap over
the same test examples stratified by task.  A target is "met" when the whole interval meets
it, "missed" when the whole interval misses it, and "undecided" otherwise.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..io import atomic_path, write_json
from .stats import mean_of_groups

BASELINES = ("fisher", "grad_x_act", "activation")
DATA_FREE = ("magnitude", "random")


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _by(rows, *keys) -> dict:
    """{(key values...): mean accuracy} (means over seeds / repeats)."""
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r["accuracy"])
    return {k: statistics.fmean(v) for k, v in groups.items()}


def _mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def _dense_accuracy(dense: dict) -> dict[str, float]:
    """{task: dense accuracy} from a results file (a row with its interval, or a bare number)."""
    return {t: d["accuracy"] if isinstance(d, dict) else d for t, d in dense.items()}


def check(value: dict, threshold: float) -> str:
    """met / missed / undecided: where the interval {value, low, high} lies against ``threshold``
    (the target: value >= threshold)."""
    low, high = value["low"], value["high"]
    return "met" if low >= threshold else "missed" if high < threshold else "undecided"


def kept_of_dense(main: dict, units: str = "ffn", sparsity: float = 0.5, method: str = "ig") -> dict:
    """The mean over tasks of ``method``'s accuracy (mean over its draws) over the dense
    accuracy, at ``units`` / ``sparsity``, with a 95% interval: {value, low, high, interval}.

    Where the main sweep's file carries per-example results (``correct``, optionally
    ``labelled``, on the dense row and on every row of the method there), the interval is a
    paired bootstrap over the same test examples, stratified by task (``mean_of_groups`` of
    the draw-averaged correct over the dense correct: each task's ratio resampled as one).
    Otherwise it is built conservatively from each row's ``ci95``: every task at the worst
    corner of both intervals at once (lowest pruned over highest dense, and the reverse), a
    box far wider than the ratio's own interval, since pruned and dense are right on mostly
    the same examples.  A task with no interval makes the whole interval unbounded.
    """
    dense = main["dense"]
    found: dict = defaultdict(list)
    for r in main["rows"]:
        if r["units"] == units and r["method"] == method and r["sparsity"] == sparsity and r["task"] in dense:
            found[r["task"]].append(r)
    tasks = sorted(found)
    value = _mean([statistics.fmean(r["accuracy"] for r in found[t]) / _dense_accuracy(dense)[t] for t in tasks])
    per_example = all(isinstance(dense[t], dict) and "correct" in dense[t] and all("correct" in r for r in found[t])
                      for t in tasks)
    if per_example:
        groups = []
        for t in tasks:
            pruned = np.mean([np.asarray(r["correct"], dtype=np.float64) for r in found[t]], axis=0)
            groups.append((pruned, np.asarray(dense[t]["correct"], dtype=np.float64)))
        interval = mean_of_groups(groups)
        return dict(value=interval.value, low=interval.low, high=interval.high,
                    interval="paired bootstrap over test examples")
    lows, highs = [], []
    for t in tasks:
        d, rows = dense[t], found[t]
        if not (isinstance(d, dict) and "ci95" in d and all("ci95" in r for r in rows)):
            return dict(value=value, low=-math.inf, high=math.inf, interval="no interval recorded")
        low = statistics.fmean(r["ci95"][0] for r in rows)
        high = statistics.fmean(r["ci95"][1] for r in rows)
        lows.append(low / d["ci95"][1] if d["ci95"][1] > 0 else 0.0)
        highs.append(high / d["ci95"][0] if d["ci95"][0] > 0 else math.inf)
    return dict(value=value, low=_mean(lows), high=_mean(highs), interval="conservative, from each row's 95% interval")


def _points(value: dict) -> str:
    return f"{100 * value['value']:+.1f} [{100 * value['low']:+.1f}, {100 * value['high']:+.1f}]"


def main_targets(main: dict) -> list[dict]:
    pooled = {(c["units"], c["sparsity"], c["versus"]): c for c in main.get("pooled_comparisons", [])}
    out = []
    if any(r["units"] == "ffn" and r["method"] == "ig" and r["sparsity"] == 0.5 and r["task"] in main["dense"]
           for r in main["rows"]):
        kept = kept_of_dense(main)
        out.append(dict(target="ig: >= 95% of dense at 50% FFN (mean over tasks and draws)",
                        value=f"{kept['value']:.1%} [{kept['low']:.1%}, {kept['high']:.1%}] ({kept['interval']})"
                        if math.isfinite(kept["low"] + kept["high"]) else f"{kept['value']:.1%} ({kept['interval']})",
                        status=check(kept, 0.95)))
    free = [pooled[("ffn", 0.7, m)] for m in DATA_FREE if ("ffn", 0.7, m) in pooled]
    if free:
        closest = min(free, key=lambda c: c["ig_minus_other"]["value"])
        out.append(dict(target="ig: >= 10 points over the best data-free baseline at 70% FFN",
                        value=f"vs {closest['versus']}: {_points(closest['ig_minus_other'])} points",
                        status=check(closest["ig_minus_other"], 0.10)))
    for s in (0.5, 0.7):
        found = [pooled[("ffn", s, b)] for b in BASELINES if ("ffn", s, b) in pooled]
        if found:
            behind = [c for c in found if c["verdict"] == "behind"]
            tied = [c for c in found if c["verdict"] == "tied"]
            status = "missed" if behind else "undecided" if tied else "met"
            out.append(dict(target=f"ig: >= {', '.join(BASELINES)} at {s:.0%} FFN",
                            value="; ".join(f"{c['versus']} {_points(c['ig_minus_other'])} ({c['verdict']})"
                                            for c in found), status=status))
    return out


#: (experiment, first, second (None: "<n_full> examples"), the points first may be behind, the target)
CONTRASTED = (("low_resource", "32 examples", None, 0.02, "32 examples within 2 points of {second}"),
              ("unsupervised", "ig target=prediction", "ig target=label", 0.02,
               "unsupervised within 2 points of supervised"),
              ("unseen_domain", "scores from source task", "scores from target domain", 0.03,
               "source-task scores within 3 points of target-domain scores"))


def other_targets(folder: Path) -> list[dict]:
    """The "within N points" targets, from each experiment's pooled paired contrasts: met when
    the whole interval of first - second lies above -N (first no more than N points behind)."""
    out = []
    for name, first, second, limit, label in CONTRASTED:
        data = _load(folder, name)
        if not data:
            continue
        second = second or f"{data['config']['n_full']} examples"
        for c in data.get("contrasts", {}).get("pooled", []):
            if (c["first"], c["second"]) == (first, second) and c["sparsity"] in (0.5, 0.7):
                out.append(dict(target=f"{label.format(second=second)} at {c['sparsity']:.0%}",
                                value=f"{_points(c['difference'])} points ({c['tasks']} tasks, {c['verdict']})",
                                status=check(c["difference"], -limit)))
    return out


def summarize(folder: Path) -> dict:
    main = _load(folder, "main_sweep")
    out: dict = {"targets": []}
    if main:
        dense = _dense_accuracy(main["dense"])
        out["test_examples"] = {t: d.get("examples") for t, d in main["dense"].items() if isinstance(d, dict)}
        for units in ("ffn", "heads"):
            rows = [r for r in main["rows"] if r["units"] == units and r.get("draw", 0) == 0]
            table: dict = defaultdict(lambda: defaultdict(dict))
            for (task, method, s), acc in _by(rows, "task", "method", "sparsity").items():
                table[method][s][task] = acc
            out[f"{units}_mean_accuracy"] = {m: {s: _mean(list(v.values())) for s, v in per.items()}
                                             for m, per in table.items()}
            out[f"{units}_mean_fraction_of_dense"] = {
                m: {s: _mean([a / dense[t] for t, a in v.items()]) for s, v in per.items()} for m, per in table.items()}
        out["pooled_comparisons"] = main.get("pooled_comparisons", [])
        out["targets"] += main_targets(main)
    out["targets"] += other_targets(folder)
    return out


def markdown(summary: dict) -> str:
    lines = ["# Targets", "",
             "Every target is read from a mean over tasks of paired differences (IG minus a method; 32 examples "
             "minus 256; ...), in points, with its 95% interval (bootstrap over the same test examples, stratified "
             "by task); met / missed when the whole interval is on one side of the target, else undecided. "
             "\"Within N points\": the whole interval above -N.", "",
             "| target | measured | status |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {t['status']} |" for t in summary["targets"]]
    if summary.get("test_examples"):
        lines += ["", "Test examples per task: " + ", ".join(f"{t} {n}" for t, n in summary["test_examples"].items())]
    if summary.get("pooled_comparisons"):
        lines += ["", "## IG against each method, mean over tasks", "",
                  "| units | sparsity | versus | IG - other, points [95% CI] | verdict |", "|---|---|---|---|---|"]
        lines += [f"| {c['units']} | {c['sparsity']:.0%} | {c['versus']} | {_points(c['ig_minus_other'])} | "
                  f"IG {c['verdict']} |" for c in summary["pooled_comparisons"]]
    for units, title in (("ffn", "FFN"), ("heads", "Heads")):
        table = summary.get(f"{units}_mean_accuracy")
        if not table:
            continue
        fractions = summary[f"{units}_mean_fraction_of_dense"]
        sparsities = sorted({s for m in table for s in table[m]})
        lines += ["", f"## {title} sweep (first attribution draw), mean over tasks: accuracy (fraction of dense)", "",
                  "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |", "|---|" + "---|" * len(sparsities)]
        for m in table:
            cells = [f"{table[m][s]:.3f} ({fractions[m][s]:.1%})" if s in table[m] else "-" for s in sparsities]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(folder: Path) -> dict:
    summary = summarize(folder)
    write_json(folder / "summary.json", summary)
    with atomic_path(folder / "summary.md") as tmp:
        tmp.write_text(markdown(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    """``bench/experiments/summarize.py``: write and print the summary of a results folder."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(Path(__file__).resolve().parents[2] / "bench" / "results" / "tasks"),
                   help="the experiments' results folder")
    folder = Path(p.parse_args(argv).results)
    print(markdown(write(folder)), end="")
