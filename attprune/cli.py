"""The ``attprune`` command line: ``attprune score``, ``attprune prune``, ``attprune demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .attribution.api import METHODS
from .attribution.quadrature import QUADRATURES
from .attribution.tokens import REDUCTIONS

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}


def _add_score_parser(sub) -> None:
    p = sub.add_parser(
        "score", help="score every FFN neuron and attention head of a model on a data file",
        description="Compute attribution scores of every FFN neuron and attention head and write "
                    "OUT/scores.safetensors (load with attprune.Scores.load) and OUT/summary.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a Hugging Face model folder (from_pretrained), or 'minilm' for the packaged "
                        "all-MiniLM-L6-v2 with a new seeded classification head")
    p.add_argument("--data", required=True, help="a .csv/.tsv (with a header), .jsonl/.json file, or a "
                                                 "folder saved with datasets' save_to_disk")
    p.add_argument("--split", default=None, help="split of a saved DatasetDict folder")
    p.add_argument("--text-column", default="text", help="column holding the input text")
    p.add_argument("--text-pair-column", default=None, help="second text column for sentence-pair tasks")
    p.add_argument("--label-column", default="label",
                   help="column holding the label (a class for classifiers, target text for seq2seq); "
                        "unused by causal LMs")
    p.add_argument("--label-map", default=None, help="map raw label values to class ids, e.g. --label-map=-1:0,1:1 (use '=' when a value starts with '-')")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens")
    p.add_argument("--batch-size", type=int, default=16, help="examples per batch")
    p.add_argument("--limit", type=int, default=None, help="use only the first N examples")
    p.add_argument("--method", choices=METHODS, default="ig", help="attribution method")
    p.add_argument("--steps", type=int, default=20, help="integration steps (ig, conductance)")
    p.add_argument("--quadrature", choices=QUADRATURES, default="riemann_right",
                   help="node rule of the integral (Captum's names)")
    p.add_argument("--units", default="ffn,heads", help="comma-separated unit kinds: ffn, heads")
    p.add_argument("--target", choices=("label", "prediction"), default="label",
                   help="explain the gold label's log-probability, or the model's own prediction "
                        "(no labels needed)")
    p.add_argument("--reduce-tokens", choices=REDUCTIONS, default="sum",
                   help="how per-token scores become one per example")
    p.add_argument("--rows-per-pass", type=int, default=None,
                   help="interpolation rows (examples x steps) per forward pass; default: a token budget")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="compute the model in this dtype (scores accumulate in float32)")
    p.add_argument("--seed", type=int, default=0, help="seed for method=random and new heads")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_prune_parser(sub) -> None:
    from .plan.make import NORMALIZE, RANK_BY, SCOPES

    p = sub.add_parser(
        "prune", help="make a plan from scores, compact the model, save a checkpoint that reloads",
        description="Rank units by their scores, remove the requested fractions, rewrite the model into "
                    "smaller dense layers and save it with attprune.save_pretrained (reload with "
                    "attprune.from_pretrained). Prints parameters and FLOPs before and after.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="the model folder the scores were computed on, or 'minilm'")
    p.add_argument("--scores", required=True, help="folder holding scores.safetensors (attprune score --out), "
                                                   "or the .safetensors file itself")
    p.add_argument("--ffn", type=float, default=0.0, help="fraction of FFN neurons to remove, in [0, 1)")
    p.add_argument("--heads", type=float, default=0.0, help="fraction of attention heads to remove, in [0, 1)")
    p.add_argument("--scope", choices=SCOPES, default="global",
                   help="rank all sites of a kind together, or remove the same fraction per site")
    p.add_argument("--normalize", choices=NORMALIZE, default="layer",
                   help="global scope: divide each site's values by its mean |value| (layer) or L2 norm")
    p.add_argument("--rank-by", choices=RANK_BY, default="abs",
                   help="|signed mean| (abs), mean of |per-example score| (mean_abs) or the signed mean")
    p.add_argument("--round-to", type=int, default=1, help="keep per-site widths at multiples of this")
    p.add_argument("--min-keep", type=int, default=1, help="keep at least this many units per site (0: a site "
                                                           "may be removed whole)")
    p.add_argument("--seq-len", type=int, default=128, help="sequence length for the FLOP count")
    p.add_argument("--seed", type=int, default=0, help="seed of a new head when --model is minilm")
    p.add_argument("--out", required=True, help="output checkpoint folder (also gets plan.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attprune",
        description="Task-specific compression of transformers: attribution of every FFN neuron "
                    "and attention head.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_score_parser(sub)
    _add_prune_parser(sub)
    d = sub.add_parser(
        "demo", help="the main job: task-specific pruning of the multi-task MiniLM on real offline data",
        description="Fetch the task pack, build (or reuse) the multi-task MiniLM (<= 10 min the first time on 2 "
                    "CPU cores, cached after), score the chosen tasks with IG and baselines, prune, compact, "
                    "evaluate, time dense vs compact; print a table and write a plot. --quick runs the whole "
                    "pipeline in seconds on built-in sentences instead; --full runs every benchmark experiment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--out", default="out/demo", help="output folder")
    d.add_argument("--tasks", default="hedge,mr", help="comma-separated tasks to prune (mr, tweets, bbc, hedge, "
                                                      "spam, pos)")
    d.add_argument("--n-attr", type=int, default=32, help="training examples used for attribution")
    d.add_argument("--max-test", type=int, default=500, help="test examples evaluated per task")
    d.add_argument("--steps", type=int, default=20, help="integration steps")
    d.add_argument("--ffn", type=float, default=0.5, help="fraction of FFN neurons the compacted model removes")
    d.add_argument("--heads", type=float, default=0.25, help="fraction of heads removed (--quick only)")
    d.add_argument("--quick", action="store_true", help="seconds-long pipeline on built-in sentences")
    d.add_argument("--full", action="store_true", help="run every real-task benchmark experiment (long)")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    f = sub.add_parser("fetch", help="fetch the offline task pack into the cache (done by make setup)",
                       description="Download the corpora packages from the registry, extract them and write the "
                                   "seeded task splits under $ATTPRUNE_CACHE (default ~/.cache/attprune).")
    f.add_argument("--force", action="store_true", help="download again even if the cache is complete")
    return parser


def _load_model(name: str, seed: int):
    from transformers import AutoConfig, AutoTokenizer
    import transformers

    if name == "minilm":
        from .models import load_minilm_classifier
        return load_minilm_classifier(seed=seed)
    path = Path(name)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {path} does not exist (give a from_pretrained folder or 'minilm')")
    config = AutoConfig.from_pretrained(path)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        cls = transformers.AutoModel
    torch.manual_seed(seed)
    model = cls.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _score(args) -> int:
    from .attribution import attribute
    from .attribution.targets import task_of
    from .data import parse_label_map, read_rows, text_batches
    from .io import write_json

    out = Path(args.out)
    units = tuple(u.strip() for u in args.units.split(",") if u.strip())
    rows = read_rows(args.data, args.split)[: args.limit]  # before the model: fail fast on bad data
    model, tokenizer = _load_model(args.model, args.seed)
    task = task_of(model) or "sequence"
    label_column = None if args.target == "prediction" and task == "sequence" else args.label_column
    batches = text_batches(rows, tokenizer, task=task, text_column=args.text_column, label_column=label_column,
                           text_pair_column=args.text_pair_column, max_length=args.max_length,
                           batch_size=args.batch_size, num_labels=getattr(model.config, "num_labels", None),
                           label_map=parse_label_map(args.label_map),
                           label2id=getattr(model.config, "label2id", None))
    scores = attribute(model, batches, units=units, method=args.method, steps=args.steps,
                       quadrature=args.quadrature, target=args.target, reduce_tokens=args.reduce_tokens,
                       dtype=DTYPES[args.dtype] if args.dtype else None, batch_size=args.rows_per_pass,
                       progress=not args.no_progress, seed=args.seed)
    scores.save(out / "scores.safetensors")
    summary = scores.summary()
    write_json(out / "summary.json", dict(scores.meta, data=str(args.data), summary=summary))
    print(summary)
    print(f"wrote {out / 'scores.safetensors'} and {out / 'summary.json'} "
          f"({scores.meta['n_examples']} examples, {scores.meta['seconds']} s)")
    return 0


def _prune(args) -> int:
    from .attribution import Scores
    from .checkpoint import save_pretrained
    from .compact import compact
    from .plan import make_plan

    scores_path = Path(args.scores)
    scores = Scores.load(scores_path / "scores.safetensors" if scores_path.is_dir() else scores_path)
    plan = make_plan(scores, ffn=args.ffn, heads=args.heads, scope=args.scope, normalize=args.normalize,
                     rank_by=args.rank_by, round_to=args.round_to, min_keep=args.min_keep)
    model, tokenizer = _load_model(args.model, args.seed)
    print(plan.summary(model, seq_len=args.seq_len))
    compact(model, plan)
    out = save_pretrained(model, args.out)
    plan.save(out / "plan.json")
    tokenizer.save_pretrained(out)
    print(f"wrote the compact model to {out} (load it with attprune.from_pretrained)")
    return 0


def _fetch(args) -> int:
    from .tasks import TASKS, UNSEEN, fetch_corpora, load_task, load_unseen

    raw = fetch_corpora(force=args.force)
    for name in TASKS:
        task = load_task(name)
        print(f"{name}: {len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test")
    for pair in UNSEEN:
        print(f"{pair}: {len(load_unseen(pair))} test examples")
    print(f"task pack ready (corpora in {raw})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "score":
            return _score(args)
        if args.command == "prune":
            return _prune(args)
        if args.command == "fetch":
            return _fetch(args)
        from .demo import run_demo, run_task_demo
        if args.quick:
            run_demo(out=args.out, steps=args.steps, ffn=args.ffn, heads=args.heads, progress=not args.no_progress)
        else:
            run_task_demo(out=args.out, tasks=tuple(t for t in args.tasks.split(",") if t), n_attr=args.n_attr,
                          max_test=args.max_test, steps=args.steps, ffn=args.ffn, full=args.full,
                          progress=not args.no_progress)
        return 0
    except (ValueError, FileNotFoundError, ImportError, KeyError, RuntimeError) as err:
        print(f"attprune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attprune: interrupted; nothing was written under the output folder", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
