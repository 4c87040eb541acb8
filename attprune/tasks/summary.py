"""The benchmark's targets, checked against the experiments' result files.

Reads ``main_sweep.json``, ``ranking.json``, ``low_resource.json``, ``unsupervised.json`` and
``unseen_domain.json`` from a results folder (whichever exist) and reports, averaged over the
tasks each covers, where attribution-based pruning stands against each target:

* at 50% FFN sparsity, ``ig`` keeps >= 95% of the dense score;
* at 70%, ``ig`` beats the best data-free baseline by >= 10 points and is at least as good
  as ``fisher``, ``grad_x_act`` and ``activation``;
* 32 labelled examples within 2 points of the full attribution set;
* unsupervised (own predictions) within 2 points of supervised;
* scores from the source task within 3 points of scores from the target domain.

``ig`` is reported twice: ranked by mean |per-example IG| (``rank_by="mean_abs"``, the plans'
default, from the ranking experiment) as ``ig``, and by |mean IG| (the main sweep's ranking,
the default before the benchmark showed the difference) as ``ig, rank_by=abs``.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from ..io import atomic_path, write_json

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


def ffn_table(main: dict, ranking: dict | None) -> dict[str, dict[float, dict[str, float]]]:
    """{method: {sparsity: {task: accuracy}}} of the FFN sweeps: ``ig`` from the ranking
    experiment (mean_abs), the main sweep's IG as ``ig, rank_by=abs``."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    if ranking:
        for (task, method, s), acc in _by(ranking["rows"], "task", "method", "sparsity").items():
            if method == "global/mean_abs":
                table["ig"][s][task] = acc
    for (task, method, s), acc in _by([r for r in main["rows"] if r["units"] == "ffn"],
                                      "task", "method", "sparsity").items():
        table["ig, rank_by=abs" if method == "ig" else method][s][task] = acc
    return table


def _mean(values) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize(folder: Path) -> dict:
    main, ranking = _load(folder, "main_sweep"), _load(folder, "ranking")
    out: dict = {"targets": []}
    if main:
        dense = main["dense"]
        heads: dict = defaultdict(dict)
        for (method, s), acc in _by([r for r in main["rows"] if r["units"] == "heads"], "method", "sparsity").items():
            heads[method][s] = acc
        out["heads_mean_accuracy"] = dict(heads)
        table = ffn_table(main, ranking)
        out["ffn_mean_accuracy"] = {m: {s: _mean(list(v.values())) for s, v in per.items()} for m, per in table.items()}
        out["ffn_mean_fraction_of_dense"] = {
            m: {s: _mean([a / dense[t] for t, a in v.items()]) for s, v in per.items()} for m, per in table.items()}
        best_free_70 = max(out["ffn_mean_accuracy"][m][0.7] for m in DATA_FREE)
        for ig in ("ig", "ig, rank_by=abs"):
            if ig not in table:
                continue
            kept = out["ffn_mean_fraction_of_dense"][ig][0.5]
            out["targets"].append(dict(target=f"{ig}: >= 95% of dense at 50% FFN", value=f"{kept:.1%}",
                                       met=kept >= 0.95))
            at70 = out["ffn_mean_accuracy"][ig][0.7]
            gap = at70 - best_free_70
            out["targets"].append(dict(target=f"{ig}: >= 10 points over the best data-free baseline at 70%",
                                       value=f"{100 * gap:+.1f} points", met=gap >= 0.10))
            worst = min(at70 - out["ffn_mean_accuracy"][b][0.7] for b in BASELINES)
            out["targets"].append(dict(target=f"{ig}: >= fisher, grad_x_act, activation at 70%",
                                       value=", ".join(f"{b} {100 * (at70 - out['ffn_mean_accuracy'][b][0.7]):+.1f}"
                                                       for b in BASELINES), met=worst >= 0))
    low = _load(folder, "low_resource")
    if low:
        acc = _by(low["rows"], "task", "examples", "sparsity")
        full = low["config"]["n_full"]
        for s in sorted({k[2] for k in acc}):
            diffs = [acc[(t, 32, s)] - acc[(t, full, s)] for t in low["config"]["tasks"]]
            d = _mean(diffs)
            out["targets"].append(dict(target=f"32 examples within 2 points of {full} at {s:.0%}",
                                       value=f"{100 * d:+.1f} points", met=abs(d) <= 0.02 or d > 0))
    for name, a, b, limit, label in (("unsupervised", "ig target=prediction", "ig target=label", 0.02,
                                      "unsupervised within 2 points of supervised"),
                                     ("unseen_domain", "scores from source task", "scores from target domain", 0.03,
                                      "source-task scores within 3 points of target-domain scores")):
        data = _load(folder, name)
        if not data:
            continue
        acc = _by(data["rows"], "task", "method", "sparsity")
        for s in (0.5, 0.7):
            d = _mean([acc[(t, a, s)] - acc[(t, b, s)] for t in data["dense"] if (t, a, s) in acc])
            out["targets"].append(dict(target=f"{label} at {s:.0%}", value=f"{100 * d:+.1f} points",
                                       met=abs(d) <= limit or d > 0))
    return out


def markdown(summary: dict) -> str:
    lines = ["# Targets", "", "| target | measured (mean over tasks) | met |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |" for t in summary["targets"]]
    if "ffn_mean_accuracy" in summary:
        methods = list(summary["ffn_mean_accuracy"])
        sparsities = sorted({s for m in methods for s in summary["ffn_mean_accuracy"][m]})
        lines += ["", "## FFN sweep, mean over tasks: accuracy (fraction of dense)", "",
                  "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |",
                  "|---|" + "---|" * len(sparsities)]
        for m in methods:
            cells = [f"{summary['ffn_mean_accuracy'][m][s]:.3f} ({summary['ffn_mean_fraction_of_dense'][m][s]:.1%})"
                     if s in summary["ffn_mean_accuracy"][m] else "-" for s in sparsities]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if summary.get("heads_mean_accuracy"):
        heads = summary["heads_mean_accuracy"]
        sparsities = sorted({s for m in heads for s in heads[m]})
        lines += ["", "## Heads sweep, mean accuracy over tasks", "",
                  "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |", "|---|" + "---|" * len(sparsities)]
        lines += [f"| {m} | " + " | ".join(f"{heads[m][s]:.3f}" for s in sparsities) + " |" for m in heads]
    return "\n".join(lines) + "\n"


def write(folder: Path) -> dict:
    summary = summarize(folder)
    write_json(folder / "summary.json", summary)
    with atomic_path(folder / "summary.md") as tmp:
        tmp.write_text(markdown(summary))
    return summary
