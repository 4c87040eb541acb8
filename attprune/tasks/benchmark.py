"""The real-task experiments: each writes ``<out>/<name>.json``, ``.md`` and ``.png``.

* ``main_sweep``: every method, FFN and head sweeps, a joint point, attribution cost and
  the compacted model at 50% FFN;
* ``low_resource``: IG from 8 / 32 / 128 labelled examples (seeded draws) vs the full set;
* ``unsupervised``: IG with ``target="prediction"`` on unlabelled text vs labels;
* ``unseen_domain``: scores from the source task vs from the target domain, evaluated on
  the target domain with the source head;
* ``ranking``: global vs per-layer ranking and ``rank_by`` abs / mean_abs / signed.

The budgets (examples for attribution, test examples) are arguments and recorded in the
JSON: the defaults fit 2 CPU cores.  Scores are cached under ``<cache>/scores/<model key>/``
(see :func:`experiment.score`), so experiments share them and a rerun after an interruption
resumes where it stopped; delete that folder to recompute.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from . import report
from .experiment import (METHODS, SPARSITIES, attribution_rows, compact_point, masked_accuracy, method_label, score,
                         sweep, task_run)
from ..cache import cache_dir
from .multitask import MultiTask
from .pack import TASKS, UNSEEN, load_unseen

DATA_FREE = ("magnitude", "random")


def score_cache(mt: MultiTask) -> Path:
    """Where the experiments keep the scores they computed on ``mt``."""
    return cache_dir() / "scores" / mt.config.key()


def _finish(out: Path, name: str, title: str, rows: list[dict], dense: dict, extra: dict, config: dict,
            panels: list[tuple[str, dict, str]]) -> dict:
    """Write JSON + markdown (+ one PNG per panel spec (suffix, where, x_label))."""
    md = [f"# {title}", "", "dense test accuracy: " + ", ".join(f"{t} {a:.3f}" for t, a in dense.items()), ""]
    for suffix, where, x_label in panels:
        data = report.curves(rows, where=where, x=x_label)
        md += [f"## {suffix}", "", report.markdown_table(data, x_label=x_label)]
        report.plot(data, out / f"{name}{'_' + suffix if suffix else ''}.png", title=f"{title}: {suffix}",
                    x_label=x_label, dense=dense)
    payload = {"config": config, "dense": dense, "rows": rows, **extra}
    report.write(out, name, payload, "\n".join(md))
    return payload


#: the heads sweep and the joint points use these methods (the FFN sweep uses all of METHODS)
HEAD_METHODS = ("ig", "activation", "magnitude", "random")
#: the main sweep ranks every method by |signed mean|, as its committed results were measured
#: (before ``mean_abs`` became make_plan's default; the ranking experiment compares both)
AS_MEASURED = {"rank_by": "abs"}
#: the other experiments use make_plan's defaults
DEFAULT_PLAN = "global, normalize=layer, rank_by=mean_abs"


def main_sweep(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, max_test: int = 300,
               steps: int = 20, random_seeds=(0, 1, 2), sparsities=SPARSITIES, progress: bool = True) -> dict:
    rows, dense, cost, compacted = [], {}, {}, {}
    bar = tqdm(total=len(tasks) * (len(METHODS) + len(random_seeds) - 1), desc="main sweep", disable=not progress)
    for task in tasks:
        run = task_run(mt, task, max_test)
        dense[task] = run.dense
        attr = attribution_rows(task, n_attr)
        for method in METHODS:
            for seed in (random_seeds if method == "random" else (0,)):
                scores, seconds = score(run, method, None if method in DATA_FREE else attr,
                                        units=("ffn", "heads"), steps=steps, seed=seed, cache=score_cache(mt))
                label = method_label(method, seed)
                cost.setdefault(task, {})[label] = {"seconds": round(seconds, 2),
                                                    "examples": 0 if method in DATA_FREE else len(attr)}
                common = {"task": task, "method": method, "seed": seed}
                kinds = ("ffn", "heads") if method in HEAD_METHODS and seed == 0 else ("ffn",)
                for kind in kinds:
                    rows += [dict(common, units=kind, **r)
                             for r in sweep(run, scores, kind=kind, sparsities=sparsities, **AS_MEASURED)]
                if "heads" in kinds:
                    for heads in (0.25, 0.5):  # x = heads removed, with 50% of FFN neurons removed
                        accuracy = masked_accuracy(run, scores, ffn=0.5, heads=heads, **AS_MEASURED)
                        rows.append(dict(common, units="joint", sparsity=heads, accuracy=accuracy))
                if method == "ig":
                    compacted[task] = compact_point(run, scores, ffn=0.5, **AS_MEASURED)
                bar.update(1)
    bar.close()
    config = dict(tasks=list(tasks), n_attr=n_attr, max_test=max_test, steps=steps, random_seeds=list(random_seeds),
                  units="ffn+heads scored together", plan="global, normalize=layer, rank_by=abs")
    return _finish(out, "main_sweep", "Pruning the multi-task MiniLM per task", rows, dense,
                   {"attribution_cost": cost, "compact_at_50": compacted}, config,
                   [("ffn", {"units": "ffn"}, "sparsity"), ("heads", {"units": "heads"}, "sparsity"),
                    ("joint", {"units": "joint"}, "sparsity")])


def low_resource(mt: MultiTask, out: Path, *, tasks=("hedge", "mr"), sizes=(8, 32, 128), n_full: int = 256,
                 seeds=(1, 2), max_test: int = 300, steps: int = 20, sparsities=(0.5, 0.7),
                 progress: bool = True) -> dict:
    rows, dense = [], {}
    bar = tqdm(total=len(tasks) * (len(sizes) * len(seeds) + 1), desc="low resource", disable=not progress)
    for task in tasks:
        run = task_run(mt, task, max_test)
        dense[task] = run.dense
        draws = [(n_full, 0)] + [(n, s) for n in sizes for s in seeds]
        for n, seed in draws:
            scores, _ = score(run, "ig", attribution_rows(task, n, seed), steps=steps, cache=score_cache(mt))
            for r in sweep(run, scores, kind="ffn", sparsities=sparsities):
                rows.append(dict(task=task, examples=n, seed=seed, method=f"{int(r['sparsity'] * 100)}% ffn", **r))
            bar.update(1)
    bar.close()
    config = dict(tasks=list(tasks), sizes=list(sizes), n_full=n_full, seeds=list(seeds), max_test=max_test,
                  plan=DEFAULT_PLAN)
    return _finish(out, "low_resource", "IG from few labelled examples", rows, dense, {}, config,
                   [("", {}, "examples")])


def unsupervised(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, max_test: int = 300,
                 steps: int = 20, sparsities=SPARSITIES, progress: bool = True) -> dict:
    rows, dense = [], {}
    bar = tqdm(total=len(tasks) * 2, desc="unsupervised", disable=not progress)
    for task in tasks:
        run = task_run(mt, task, max_test)
        dense[task] = run.dense
        attr = attribution_rows(task, n_attr)
        for target in ("label", "prediction"):
            scores, _ = score(run, "ig", attr, steps=steps, target=target, cache=score_cache(mt))
            rows += [dict(task=task, method=f"ig target={target}", **r) for r in sweep(run, scores, kind="ffn",
                                                                                       sparsities=sparsities)]
            bar.update(1)
    bar.close()
    config = dict(tasks=list(tasks), n_attr=n_attr, max_test=max_test, steps=steps, plan=DEFAULT_PLAN)
    return _finish(out, "unsupervised", "Supervised vs unsupervised (own predictions) IG", rows, dense, {}, config,
                   [("", {}, "sparsity")])


def unseen_domain(mt: MultiTask, out: Path, *, pairs=tuple(UNSEEN), n_attr: int = 32, max_test: int = 300,
                  steps: int = 20, sparsities=SPARSITIES, progress: bool = True) -> dict:
    rows, dense = [], {}
    bar = tqdm(total=len(pairs) * 2, desc="unseen domain", disable=not progress)
    for pair in pairs:
        source = UNSEEN[pair][0]
        target_rows = load_unseen(pair, n=max_test + n_attr)
        run = task_run(mt, source, rows=target_rows[n_attr:])
        dense[pair] = run.dense
        origins = (("source task", attribution_rows(source, n_attr)), ("target domain", target_rows[:n_attr]))
        for origin, attr in origins:
            scores, _ = score(run, "ig", attr, steps=steps, cache=score_cache(mt))
            rows += [dict(task=pair, method=f"scores from {origin}", **r)
                     for r in sweep(run, scores, kind="ffn", sparsities=sparsities)]
            bar.update(1)
    bar.close()
    config = dict(pairs=list(pairs), n_attr=n_attr, max_test=max_test, steps=steps, plan=DEFAULT_PLAN,
                  note="target-domain scores use the first n_attr target examples; evaluation the rest")
    return _finish(out, "unseen_domain", "Unseen domain: scores from the source task vs the target domain", rows,
                   dense, {}, config, [("", {}, "sparsity")])


def ranking(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, max_test: int = 300,
            steps: int = 20, sparsities=(0.3, 0.5, 0.7), progress: bool = True) -> dict:
    rows, dense = [], {}
    variants = [(scope, rank_by) for scope in ("global", "layer") for rank_by in ("abs", "mean_abs", "signed")]
    bar = tqdm(total=len(tasks), desc="ranking", disable=not progress)
    for task in tasks:
        run = task_run(mt, task, max_test)
        dense[task] = run.dense
        scores, _ = score(run, "ig", attribution_rows(task, n_attr), steps=steps, cache=score_cache(mt))
        for scope, rank_by in variants:
            rows += [dict(task=task, method=f"{scope}/{rank_by}", **r)
                     for r in sweep(run, scores, kind="ffn", sparsities=sparsities, scope=scope, rank_by=rank_by)]
        bar.update(1)
    bar.close()
    config = dict(tasks=list(tasks), n_attr=n_attr, max_test=max_test, steps=steps)
    return _finish(out, "ranking", "Ranking: global vs per-layer, by |mean| / mean |.| / signed", rows, dense, {},
                   config, [("", {}, "sparsity")])


EXPERIMENTS = {"main_sweep": main_sweep, "low_resource": low_resource, "unsupervised": unsupervised,
               "unseen_domain": unseen_domain, "ranking": ranking}
