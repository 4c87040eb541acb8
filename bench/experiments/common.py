"""Shared command line of the experiment scripts."""

from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

import torch

from attprune.tasks import benchmark
from attprune.tasks.multitask import load_or_train

RESULTS = Path(__file__).resolve().parents[1] / "results" / "tasks"


def run(name: str) -> dict:
    experiment = benchmark.EXPERIMENTS[name]
    defaults = {k: v.default for k, v in inspect.signature(experiment).parameters.items()
                if v.default is not inspect.Parameter.empty}
    p = argparse.ArgumentParser(description=experiment.__doc__ or benchmark.__doc__)
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
    args = p.parse_args()
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
