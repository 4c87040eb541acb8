"""The multi-task MiniLM experiments: each writes ``<out>/<name>.json``, ``.md`` and ``.png``.

* ``main_sweep``: every method, FFN and head sweeps, a joint point, three seeded draws of
  attribution examples, IG against each method by paired bootstrap, attribution cost and
  the compacted model at 50% FFN;
* ``low_resource``: IG from 8 / 32 / 128 labelled examples (seeded draws) vs the full set;
* ``unsupervised``: IG with ``target="prediction"`` on unlabelled text vs labels;
* ``unseen_domain``: scores from the source task vs from the target domain, evaluated on
  the target domain with the source head;
* ``ranking``: global vs per-layer ranking and ``rank_by`` abs / mean_abs / signed.

Every experiment evaluates on the full test split by default (``max_test`` caps it), plans
with make_plan's defaults and attributes with the library's defaults; every accuracy row
carries its 95% bootstrap interval over test examples (``ci95``).  The budgets are arguments
and recorded in the JSON.  Scores are cached under ``<cache>/scores/<model key>/`` and
per-example test results under ``<cache>/evals/<model key>/`` (``pipeline.score`` /
``pipeline.evaluate``), so experiments share them and a rerun after an interruption resumes
where it stopped; delete those folders to recompute.

    python bench/experiments/main_sweep.py --tasks mr,hedge      # main(): one experiment's command line
"""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..cache import cache_dir
from ..io import write_json
from ..plan import make_plan
from . import report
from .encoder import EncoderTask, compact_point
from .multitask import MultiTask, load_or_train
from .pack import TASKS, UNSEEN, load_unseen
from .pipeline import attribution_rows, evaluate, point_row, score
from .stats import contrast, contrasts, draw_spread

#: methods compared in the sweeps; "random" is run with several seeds
METHODS = ("ig", "conductance", "grad_x_act", "fisher", "activation", "magnitude", "random")
DATA_FREE = ("magnitude", "random")
#: attribution as the library does it by default (``AttributionConfig``)
DEFAULT_STEPS, DEFAULT_QUADRATURE = "auto", "gausslegendre"
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "tasks"


def score_cache(mt: MultiTask) -> Path:
    """Where the experiments keep the scores they computed on ``mt``."""
    return cache_dir() / "scores" / mt.config.key()


def _finish(out: Path, name: str, title: str, rows: list[dict], dense: dict, extra: dict, config: dict,
            panels: list[tuple[str, dict, str]], md_extra: list[str] = ()) -> dict:
    """Write JSON + markdown (+ one PNG per panel spec (suffix, where, x_label)); ``dense``:
    {task: row with accuracy and ci95}.  Tables and plots carry each point's 95% interval."""
    md = [f"# {title}", "", "Accuracy [95% bootstrap interval over test examples].", "",
          "dense test accuracy: " + ", ".join(f"{t} {_cell(d)} (n={d.get('examples', '?')})" for t, d in dense.items()),
          ""]
    for suffix, where, x_label in panels:
        data = report.curves(rows, where=where, x=x_label)
        intervals = report.bands(rows, where=where, x=x_label)
        md += [f"## {suffix}" if suffix else "## accuracy", "",
               report.markdown_table(data, x_label=x_label, intervals=intervals)]
        report.plot(data, out / f"{name}{'_' + suffix if suffix else ''}.png", title=f"{title}: {suffix}",
                    x_label=x_label, dense={t: d["accuracy"] for t, d in dense.items()}, intervals=intervals)
    payload = {"config": config, "dense": dense, "rows": rows, **extra}
    report.write(out, name, payload, "\n".join(md + list(md_extra)))
    return payload


def _cell(row: dict) -> str:
    return f"{row['accuracy']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}]"


#: the heads sweep and the joint points use these methods (the FFN sweep uses all of METHODS)
HEAD_METHODS = ("ig", "activation", "magnitude", "random")
#: every experiment plans with make_plan's defaults
DEFAULT_PLAN = "global, normalize=layer, rank_by=mean_abs"
#: the main sweep's sparsities, and those where every draw is evaluated and IG is compared
MAIN_SPARSITIES, COMPARED = (0.3, 0.5, 0.7, 0.9), (0.5, 0.7)


def eval_cache(mt: MultiTask) -> Path:
    """Where the experiments keep per-example test results (``experiment.evaluate``)."""
    return cache_dir() / "evals" / mt.config.key()


def dense_row(subject: EncoderTask, mt: MultiTask) -> dict:
    """The unpruned model's accuracy on the subject's test examples, with its interval and their count."""
    outcome = evaluate(subject, cache=eval_cache(mt))
    return point_row(outcome, examples=len(outcome.correct))


def _draws(method: str, draws, random_seeds) -> tuple[int, ...]:
    """Attribution draws (data-dependent methods), seeds (random) or the one data-free ranking."""
    return tuple(random_seeds) if method == "random" else (0,) if method in DATA_FREE else tuple(draws)


def main_sweep(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, draws=(0, 1, 2),
               max_test: int | None = None, steps: int | str = DEFAULT_STEPS, random_seeds=(0, 1, 2),
               sparsities=MAIN_SPARSITIES, compared=COMPARED, progress: bool = True) -> dict:
    """Every method at every sparsity (FFN, heads, joint) on the full test sets with 95% intervals.

    Draw 0 (the first ``n_attr`` training examples) is evaluated at every sparsity; the other
    seeded draws of ``n_attr`` examples (random pruning: seeds) at ``compared``, where IG is set
    against each method by a paired bootstrap over the same test examples.
    """
    rows, dense, cost, compacted, outcomes = [], {}, {}, {}, {}
    total = sum(len(_draws(m, draws, random_seeds)) for m in METHODS) * len(tasks)
    bar = tqdm(total=total, desc="main sweep", disable=not progress)
    for task in tasks:
        run = EncoderTask.of(mt, task, max_test)
        dense[task] = dense_row(run, mt)
        for method in METHODS:
            for draw in _draws(method, draws, random_seeds):
                scores, seconds = score(run, method, n=None if method in DATA_FREE else n_attr, draw=draw,
                                        units=("ffn", "heads"), steps=steps, quadrature=DEFAULT_QUADRATURE,
                                        seed=draw if method == "random" else 0, cache=score_cache(mt))
                cost.setdefault(task, {}).setdefault(method, []).append(round(seconds, 2))
                common = {"task": task, "method": method, "draw": draw}
                xs = sparsities if draw == 0 else compared
                for kind in ("ffn", "heads") if method in HEAD_METHODS else ("ffn",):
                    for s in xs:
                        outcome = evaluate(run, make_plan(scores, **{kind: s}), cache=eval_cache(mt))
                        outcomes[(task, kind, method, draw, s)] = outcome
                        rows.append(point_row(outcome, **common, units=kind, sparsity=s))
                    if kind == "heads" and draw == 0:
                        for heads in (0.25, 0.5):  # x = heads removed, with 50% of FFN neurons removed
                            outcome = evaluate(run, make_plan(scores, ffn=0.5, heads=heads), cache=eval_cache(mt))
                            rows.append(point_row(outcome, **common, units="joint", sparsity=heads))
                if method == "ig" and draw == 0:
                    compacted[task] = compact_point(run, make_plan(scores, ffn=0.5))
                bar.update(1)
    bar.close()
    config = dict(tasks=list(tasks), n_attr=n_attr, draws=list(draws), max_test=max_test, steps=steps,
                  quadrature=DEFAULT_QUADRATURE, random_seeds=list(random_seeds), sparsities=list(sparsities),
                  compared=list(compared), units="ffn+heads scored together", plan=DEFAULT_PLAN,
                  intervals="95% percentile bootstrap over test examples (2000 resamples; pos: sentences)")
    spread = draw_spread(rows)
    compared_rows = comparisons(outcomes, tasks, compared)
    extra = {"draw_spread": spread, "comparisons": compared_rows["per_task"],
             "pooled_comparisons": compared_rows["pooled"], "attribution_seconds": cost, "compact_at_50": compacted}
    md_extra = report.comparison_markdown(spread, compared_rows)
    return _finish(out, "main_sweep", "Pruning the multi-task MiniLM per task", rows, dense, extra, config,
                   [("ffn", {"units": "ffn", "draw": 0}, "sparsity"), ("heads", {"units": "heads", "draw": 0}, "sparsity"),
                    ("joint", {"units": "joint"}, "sparsity")], md_extra)


def comparisons(outcomes: dict, tasks, compared) -> dict:
    """IG minus each other method at ``compared`` sparsities, per task and pooled over tasks
    (``contrast``; fields ``versus`` and ``ig_minus_other``)."""
    per_task, pooled = [], []
    keys = sorted({(k[1], k[2], k[4]) for k in outcomes if k[2] != "ig" and k[4] in compared})
    for units, method, s in keys:
        rows, total = contrast(outcomes, tasks, units, "ig", method, s)
        per_task += [_versus_ig(r) for r in rows]
        pooled += [_versus_ig(total)] if total else []
    return {"per_task": per_task, "pooled": pooled}


def _versus_ig(row: dict) -> dict:
    """A ``contrast`` row of IG against another method, in the main sweep's field names."""
    rest = {k: v for k, v in row.items() if k not in ("first", "second", "difference")}
    return dict(rest, versus=row["second"], ig_minus_other=row["difference"])


def ffn_points(run, mt: MultiTask, scores, outcomes: dict, key: tuple[str, str, int], sparsities,
               **plan_options) -> list[dict]:
    """Evaluate FFN plans at ``sparsities``: one row each (sparsity, accuracy, ci95); every outcome
    kept as ``outcomes[(task, "ffn", method, draw, sparsity)]`` (``key``: task, method, draw) for
    ``contrasts``."""
    task, method, draw = key
    rows = []
    for s in sparsities:
        outcome = evaluate(run, make_plan(scores, ffn=s, **plan_options), cache=eval_cache(mt))
        outcomes[(task, "ffn", method, draw, s)] = outcome
        rows.append(point_row(outcome, sparsity=s))
    return rows


def low_resource(mt: MultiTask, out: Path, *, tasks=("hedge", "mr"), sizes=(8, 32, 128), n_full: int = 256,
                 seeds=(1, 2), max_test: int | None = None, steps: int | str = DEFAULT_STEPS, sparsities=(0.5, 0.7),
                 progress: bool = True) -> dict:
    """IG from ``sizes`` labelled examples (seeded draws) against ``n_full``, paired per task and
    pooled (``contrasts``: "<n> examples" minus "<n_full> examples")."""
    rows, dense, outcomes = [], {}, {}
    bar = tqdm(total=len(tasks) * (len(sizes) * len(seeds) + 1), desc="low resource", disable=not progress)
    for task in tasks:
        run = EncoderTask.of(mt, task, max_test)
        dense[task] = dense_row(run, mt)
        draws = [(n_full, 0)] + [(n, s) for n in sizes for s in seeds]
        for n, seed in draws:
            scores, _ = score(run, "ig", n=n, draw=seed, steps=steps, quadrature=DEFAULT_QUADRATURE,
                              cache=score_cache(mt))
            for r in ffn_points(run, mt, scores, outcomes, (task, f"{n} examples", seed), sparsities):
                rows.append(dict(task=task, examples=n, seed=seed, method=f"{int(r['sparsity'] * 100)}% ffn", **r))
            bar.update(1)
    bar.close()
    found = contrasts(outcomes, tasks, [(f"{n} examples", f"{n_full} examples") for n in sizes], sparsities)
    config = dict(tasks=list(tasks), sizes=list(sizes), n_full=n_full, seeds=list(seeds), max_test=max_test,
                  plan=DEFAULT_PLAN)
    return _finish(out, "low_resource", "IG from few labelled examples", rows, dense, {"contrasts": found}, config,
                   [("", {}, "examples")], report.contrast_markdown(found))


def unsupervised(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, max_test: int | None = None,
                 steps: int | str = DEFAULT_STEPS, sparsities=MAIN_SPARSITIES, progress: bool = True) -> dict:
    rows, dense, outcomes = [], {}, {}
    bar = tqdm(total=len(tasks) * 2, desc="unsupervised", disable=not progress)
    for task in tasks:
        run = EncoderTask.of(mt, task, max_test)
        dense[task] = dense_row(run, mt)
        for target in ("label", "prediction"):
            scores, _ = score(run, "ig", n=n_attr, steps=steps, quadrature=DEFAULT_QUADRATURE, target=target,
                              cache=score_cache(mt))
            method = f"ig target={target}"
            rows += [dict(task=task, method=method, **r)
                     for r in ffn_points(run, mt, scores, outcomes, (task, method, 0), sparsities)]
            bar.update(1)
    bar.close()
    found = contrasts(outcomes, tasks, [("ig target=prediction", "ig target=label")], sparsities)
    config = dict(tasks=list(tasks), n_attr=n_attr, max_test=max_test, steps=steps, plan=DEFAULT_PLAN)
    return _finish(out, "unsupervised", "Supervised vs unsupervised (own predictions) IG", rows, dense,
                   {"contrasts": found}, config, [("", {}, "sparsity")], report.contrast_markdown(found))


def unseen_domain(mt: MultiTask, out: Path, *, pairs=tuple(UNSEEN), n_attr: int = 32, max_test: int = 1000,
                  steps: int | str = DEFAULT_STEPS, sparsities=MAIN_SPARSITIES, progress: bool = True) -> dict:
    rows, dense, outcomes = [], {}, {}
    bar = tqdm(total=len(pairs) * 2, desc="unseen domain", disable=not progress)
    for pair in pairs:
        source = UNSEEN[pair][0]
        target_rows = load_unseen(pair, n=max_test + n_attr)
        run = EncoderTask.of(mt, source, rows=target_rows[n_attr:])
        dense[pair] = dense_row(run, mt)
        origins = (("source task", attribution_rows(run, n_attr)), ("target domain", target_rows[:n_attr]))
        for origin, attr in origins:
            scores, _ = score(run, "ig", rows=attr, steps=steps, quadrature=DEFAULT_QUADRATURE,
                              cache=score_cache(mt))
            method = f"scores from {origin}"
            rows += [dict(task=pair, method=method, **r)
                     for r in ffn_points(run, mt, scores, outcomes, (pair, method, 0), sparsities)]
            bar.update(1)
    bar.close()
    found = contrasts(outcomes, pairs, [("scores from source task", "scores from target domain")], sparsities)
    config = dict(pairs=list(pairs), n_attr=n_attr, max_test=max_test, steps=steps, plan=DEFAULT_PLAN,
                  note="target-domain scores use the first n_attr target examples; evaluation the rest")
    return _finish(out, "unseen_domain", "Unseen domain: scores from the source task vs the target domain", rows,
                   dense, {"contrasts": found}, config, [("", {}, "sparsity")], report.contrast_markdown(found))


def ranking(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, max_test: int | None = None,
            steps: int | str = DEFAULT_STEPS, sparsities=COMPARED, progress: bool = True) -> dict:
    """Every (scope, rank_by) of ``make_plan``; each set against the default (global/mean_abs), paired."""
    rows, dense, outcomes = [], {}, {}
    variants = [(scope, rank_by) for scope in ("global", "layer") for rank_by in ("abs", "mean_abs", "signed")]
    bar = tqdm(total=len(tasks), desc="ranking", disable=not progress)
    for task in tasks:
        run = EncoderTask.of(mt, task, max_test)
        dense[task] = dense_row(run, mt)
        scores, _ = score(run, "ig", n=n_attr, steps=steps, quadrature=DEFAULT_QUADRATURE, cache=score_cache(mt))
        for scope, rank_by in variants:
            method = f"{scope}/{rank_by}"
            rows += [dict(task=task, method=method, **r)
                     for r in ffn_points(run, mt, scores, outcomes, (task, method, 0), sparsities, scope=scope,
                                         rank_by=rank_by)]
        bar.update(1)
    bar.close()
    default = "global/mean_abs"
    found = contrasts(outcomes, tasks, [(default, f"{scope}/{rank_by}") for scope, rank_by in variants
                                        if f"{scope}/{rank_by}" != default], sparsities)
    config = dict(tasks=list(tasks), n_attr=n_attr, max_test=max_test, steps=steps)
    return _finish(out, "ranking", "Ranking: global vs per-layer, by |mean| / mean |.| / signed", rows, dense,
                   {"contrasts": found}, config, [("", {}, "sparsity")], report.contrast_markdown(found))


EXPERIMENTS = {"main_sweep": main_sweep, "low_resource": low_resource, "unsupervised": unsupervised,
               "unseen_domain": unseen_domain, "ranking": ranking}


def compact_points(mt: MultiTask, out: Path, *, tasks=tuple(TASKS), n_attr: int = 32, max_test: int = 300,
                   repeats: int = 10) -> dict:
    """Each task's view compacted at 50% FFN sparsity from the main sweep's IG scores (draw 0,
    ``rank_by="mean_abs"``): parameters, CPU latency (a 32 x 64 batch, dense vs compact) and
    accuracy (masked == compact); writes ``compact_at_50.json``."""
    results = {}
    for task in tasks:
        run = EncoderTask.of(mt, task, max_test)
        scores, _ = score(run, "ig", n=n_attr, units=("ffn", "heads"), steps=DEFAULT_STEPS,
                          quadrature=DEFAULT_QUADRATURE, cache=score_cache(mt))
        point = compact_point(run, make_plan(scores, ffn=0.5, rank_by="mean_abs"), repeats=repeats)
        dense = run.dense.accuracy
        results[task] = dict(point, dense_accuracy=dense, speedup=round(point["dense_ms"] / point["compact_ms"], 3))
        print(f"{task}: {point['params_dense'] / 1e6:.1f}M -> {point['params_compact'] / 1e6:.1f}M params, "
              f"{point['dense_ms']:.0f} -> {point['compact_ms']:.0f} ms ({results[task]['speedup']}x), accuracy "
              f"dense {dense:.3f}, masked {point['masked_accuracy']:.3f}, compact {point['compact_accuracy']:.3f}")
    payload = {"config": dict(tasks=list(tasks), n_attr=n_attr, max_test=max_test, repeats=repeats),
               "tasks": results, "time": time.time()}
    write_json(out / "compact_at_50.json", payload)
    return payload


def compact_main(argv: list[str] | None = None) -> dict:
    """``bench/experiments/compact_points.py``: ``compact_points``' command line."""
    p = argparse.ArgumentParser(description=compact_points.__doc__)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--n-attr", type=int, default=32, help="attribution examples (the main sweep's)")
    p.add_argument("--max-test", type=int, default=300, help="test examples")
    p.add_argument("--repeats", type=int, default=10, help="timed forward passes")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return compact_points(load_or_train(), Path(args.out), tasks=tuple(args.tasks.split(",")), n_attr=args.n_attr,
                          max_test=args.max_test, repeats=args.repeats)


def main(name: str, argv: list[str] | None = None) -> dict:
    """One experiment's command line (``bench/experiments/<name>.py``): its budgets as flags."""
    experiment = EXPERIMENTS[name]
    defaults = {k: v.default for k, v in inspect.signature(experiment).parameters.items()
                if v.default is not inspect.Parameter.empty}
    p = argparse.ArgumentParser(description=experiment.__doc__ or __doc__)
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: all); for unseen_domain: pairs")
    for key in ("n_attr", "n_full", "max_test"):
        if key in defaults:
            p.add_argument("--" + key.replace("_", "-"), type=int, default=defaults[key],
                           help="default: the full test split" if defaults[key] is None else f"default {defaults[key]}")
    if "steps" in defaults:
        p.add_argument("--steps", type=lambda t: t if t == "auto" else int(t), default=defaults["steps"],
                       help=f"IG nodes per site, or 'auto' (default {defaults['steps']})")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    for key in ("seeds", "draws"):
        if key in defaults:
            p.add_argument("--" + key, default=",".join(map(str, defaults[key])),
                           help="comma-separated seeds of the attribution-example draws")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = {k: getattr(args, k) for k in ("n_attr", "n_full", "max_test", "steps") if k in defaults}
    for key in ("seeds", "draws"):
        if key in defaults:
            kwargs[key] = tuple(int(s) for s in getattr(args, key).split(","))
    if args.tasks:
        kwargs["pairs" if name == "unseen_domain" else "tasks"] = tuple(args.tasks.split(","))
    started = time.perf_counter()
    result = experiment(load_or_train(), Path(args.out), **kwargs)
    print(f"{name}: {time.perf_counter() - started:.0f} s; results in {args.out}/{name}.*")
    return result
