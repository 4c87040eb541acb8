"""The ``attprune`` command line: ``score``, ``prune``, ``adapt``, ``demo``, ``fetch``.

The flags of ``score`` and ``adapt`` that set a run's settings are built from the fields of
``AttributionConfig`` / ``AdaptConfig`` (their help texts and choices), so the CLI and the
Python API cannot drift apart. Bad input ends with one line, ``attprune: error: ...``, and
exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import typing
from pathlib import Path

import torch

from .adaptation import AdaptConfig
from .attribution import AttributionConfig
from .attribution.recipes import RECIPE_FIELDS
from .errors import AttpruneError, InputError
from .models import PACKAGED, load_model
from .settings import Settings, choices_of

REPORT_BUGS = "this is a bug in attprune: please report it with the traceback below"


# -- flags from settings objects ----------------------------------------------------------

def _parser_for(field: dataclasses.Field, hint):
    """How a flag's text becomes the field's value."""
    parse = field.metadata.get("parse")
    if parse is not None:
        return parse
    if isinstance(field.default, bool):
        return None
    for kind in (int, float):
        if isinstance(field.default, kind) or hint in (kind, typing.Optional[kind]):
            return kind
    return None


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[Settings], skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls`` (``--field-name``), with the field's help, default and choices."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (the run's settings)")
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.metadata.get("cli", True):
            continue
        flag = field.metadata.get("flag") or "--" + field.name.replace("_", "-")
        default = field.default
        if isinstance(default, bool):
            group.add_argument(flag, dest=field.name, action="store_true", help=field.metadata["help"])
            continue
        shown = ",".join(default) if isinstance(default, tuple) else default
        if default is None and field.name in RECIPE_FIELDS:
            shown = "the recipe's"
        group.add_argument(flag, dest=field.name, default=argparse.SUPPRESS, type=_parser_for(field, hints[field.name]),
                           metavar=None if choices_of(field) or field.metadata.get("cli_choices")
                           else flag[2:].upper().replace("-", "_"),
                           choices=field.metadata.get("cli_choices") or choices_of(field),
                           help=f"{field.metadata['help']} (default: {shown})")


def settings_from_args(cls: type[Settings], args: argparse.Namespace, **fixed) -> Settings:
    """The settings the flags chose (defaults for the rest), plus ``fixed`` values."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    return cls(**dict(given, **fixed))


# -- shared flags ---------------------------------------------------------------------------

def _add_model_argument(p, minilm_note: str) -> None:
    p.add_argument("--model", required=True,
                   help="a Hugging Face model folder (from_pretrained), an attprune compact checkpoint, 'minilm' "
                        f"for the packaged all-MiniLM-L6-v2 {minilm_note}, or 'smollm2' for the cached "
                        "SmolLM2-135M-Instruct")


def _add_placement_arguments(p) -> None:
    p.add_argument("--device-map", default=None,
                   help="where the model goes, as in transformers' from_pretrained: one device (cpu, cuda, "
                        "cuda:1) or auto / balanced / sequential to spread it over the GPUs, CPU memory and "
                        "disk with accelerate (for models larger than one device)")
    p.add_argument("--max-memory", type=_max_memory, default=None,
                   help="per-device budgets for --device-map auto, e.g. '0=70GiB,1=70GiB,cpu=200GiB'")
    p.add_argument("--offload-folder", default=None,
                   help="folder for the weights --device-map puts on disk")


def _max_memory(text: str) -> dict:
    """'0=70GiB,cpu=200GiB' -> {0: '70GiB', 'cpu': '200GiB'}."""
    budgets = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, amount = part.partition("=")
        if not sep or not device.strip() or not amount.strip():
            raise argparse.ArgumentTypeError(f"expected DEVICE=SIZE pairs such as '0=70GiB,cpu=200GiB', got {text!r}")
        device = device.strip()
        budgets[int(device) if device.isdigit() else device] = amount.strip()
    return budgets


def _placement(args) -> dict:
    """from_pretrained keyword arguments of the placement flags (only those given)."""
    found = {"device_map": args.device_map, "max_memory": args.max_memory, "offload_folder": args.offload_folder}
    if args.device_map is None and (args.max_memory or args.offload_folder):
        raise InputError("--max-memory and --offload-folder apply with --device-map (e.g. --device-map auto)")
    return {k: v for k, v in found.items() if v is not None}


def _add_data_arguments(p) -> None:
    p.add_argument("--data", required=True, help="a .csv/.tsv (with a header), .jsonl/.json file, or a "
                                                     "folder saved with datasets' save_to_disk")
    p.add_argument("--split", default=None, help="split of a saved DatasetDict folder")
    p.add_argument("--text-column", default="text", help="column holding the input text")
    p.add_argument("--text-pair-column", default=None, help="second text column for sentence-pair tasks")
    p.add_argument("--label-column", default="label",
                   help="column holding the label (a class for classifiers, target text for seq2seq); "
                        "unused by causal LMs")
    p.add_argument("--label-map", default=None,
                   help="map raw label values to class ids, e.g. --label-map=-1:0,1:1 (use '=' when a value starts "
                        "with '-')")
    p.add_argument("--prompt-column", default=None,
                   help="an instruct LLM's task: the column holding each prompt (with --answer-column); the prompt "
                        "goes through the tokenizer's chat template and attribution explains the answer tokens only")
    p.add_argument("--answer-column", default="answer", help="with --prompt-column: the column holding the answer")
    p.add_argument("--prefill-column", default=None,
                   help="with --prompt-column: the column holding the start of the assistant's reply, put after the "
                        "chat template and before the answer (e.g. 'The sentiment of this review is')")
    p.add_argument("--no-chat-template", action="store_true",
                   help="with --prompt-column: use each prompt's own tokens, not the chat template")
    p.add_argument("--choices", default=None,
                   help="with --prompt-column: the task's possible answers, comma-separated, for --target "
                        "normalized / margin (default: the distinct answers of the data, when there are 2 to 20)")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens")
    p.add_argument("--batch-size", type=int, default=16, help="examples per batch")
    p.add_argument("--limit", type=int, default=None, help="use only the first N examples")


# -- subcommands ----------------------------------------------------------------------------

def _add_score_parser(sub) -> None:
    p = sub.add_parser(
        "score", help="score every FFN neuron and attention head of a model on a data file",
        description="Compute attribution scores of every FFN neuron and attention head and write "
                    "OUT/scores.safetensors (load with attprune.Scores.load) and OUT/summary.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_model_argument(p, "with a new seeded classification head")
    _add_data_arguments(p)
    add_settings_arguments(p, AttributionConfig)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--save-every", type=int, default=10,
                   help="save partial sums to OUT/.partial every N scored batches (removed when the run completes)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from OUT/.partial (same model, data and settings); without "
                        "it a leftover partial run is discarded")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_placement_arguments(p)


def _add_prune_parser(sub) -> None:
    from .plan.make import NORMALIZE, RANK_BY, SCOPES

    p = sub.add_parser(
        "prune", help="make a plan from scores, compact the model, save a checkpoint that reloads",
        description="Rank units by their scores, remove the requested fractions, rewrite the model into "
                    "smaller dense layers and save it with attprune.save_pretrained (reload with "
                    "attprune.from_pretrained). Prints parameters and FLOPs before and after.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="the model the scores were computed on: a folder, or one of "
                                                  f"{', '.join(PACKAGED)}")
    p.add_argument("--scores", required=True, help="folder holding scores.safetensors (attprune score --out), "
                                                   "or the .safetensors file itself")
    p.add_argument("--ffn", type=float, default=0.0, help="fraction of FFN neurons to remove, in [0, 1)")
    p.add_argument("--heads", type=float, default=0.0, help="fraction of attention heads to remove, in [0, 1)")
    p.add_argument("--scope", choices=SCOPES, default=None,
                   help="global: rank all sites of a kind together; layer: remove the same fraction per site; "
                        "uniform: the same shape in every layer (exports as a plain transformers config) "
                        "(default: the scores' recipe's)")
    p.add_argument("--normalize", choices=NORMALIZE, default=None,
                   help="global scope: divide each site's values by its mean |value| (layer) or L2 norm, or not "
                        "(none) (default: the scores' recipe's)")
    p.add_argument("--rank-by", choices=RANK_BY, default=None,
                   help="mean of |per-example score| (mean_abs), |signed mean| (abs), root mean square of the "
                        "per-example scores (rms) or the signed mean (default: the scores' recipe's)")
    p.add_argument("--round-to", type=int, default=1, help="keep per-site widths at multiples of this")
    p.add_argument("--min-keep", type=int, default=1, help="keep at least this many units per site (0: a site "
                                                           "may be removed whole)")
    p.add_argument("--compensate", action="store_true",
                   help="fold each removed unit's mean contribution over the scored data into its projection's bias "
                        "(FLAP's bias compensation), from the input means the scores file holds")
    p.add_argument("--seq-len", type=int, default=128, help="sequence length for the FLOP count")
    p.add_argument("--seed", type=int, default=0, help="seed of a new head when --model is minilm")
    p.add_argument("--out", required=True, help="output checkpoint folder (also gets plan.json)")
    _add_placement_arguments(p)


def _add_adapt_parser(sub) -> None:
    p = sub.add_parser(
        "adapt", help="adapting by pruning: learn a task as a mask over the frozen pre-trained weights",
        description="Learn which pre-trained connections a task keeps (kept weights never change) and a small "
                    "head (Gao et al., arXiv 2105.03343). Writes OUT/ (attprune.apply_adapted(model, OUT) puts the "
                    "task back on the shared pre-trained model): the head, the mask (1 bit per weight, or a plan "
                    "for --granularity units) and the run's AdaptConfig with its statistics.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_model_argument(p, "(its encoder; the task head is new)")
    _add_data_arguments(p)
    add_settings_arguments(p, AdaptConfig)
    p.add_argument("--eval-data", default=None, help="held-out data in the same format: accuracy after every "
                                                     "epoch and at the end")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_demo_parser(sub) -> None:
    d = sub.add_parser(
        "demo", help="the main job: task-specific pruning of the multi-task MiniLM on real offline data",
        description="Fetch the task pack, build (or reuse) the multi-task MiniLM, score the chosen tasks with "
                    "IG and baselines, prune, compact, evaluate, time dense vs compact; print a table and write a "
                    "plot. --quick runs the whole pipeline in seconds on built-in sentences instead; --full runs "
                    "every benchmark experiment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--out", default=None, help="output folder (default: out/demo, out/demo-llm with --llm)")
    d.add_argument("--tasks", default=None, help="comma-separated tasks to prune (mr, tweets, bbc, hedge, spam, pos; "
                                                 "default: hedge,mr); with --llm one prompt task (default: bbc)")
    d.add_argument("--n-attr", type=int, default=None, help="training examples used for attribution (default: 32, "
                                                            "8 with --llm)")
    d.add_argument("--max-test", type=int, default=None, help="test examples evaluated per task (default: 400, 80 "
                                                              "with --llm)")
    d.add_argument("--ffn", type=float, default=None, help="fraction of FFN neurons the compacted model removes "
                                                           "(default: 0.5, 0.2 with --llm)")
    d.add_argument("--llm", action="store_true", help="the decoder-LLM demo: SmolLM2-135M-Instruct on a prompt task "
                                                      "(IG, fisher, wanda, random; about 10 min on 2 cores)")
    d.add_argument("--heads", type=float, default=0.25, help="fraction of heads removed (--quick only)")
    d.add_argument("--quick", action="store_true", help="seconds-long pipeline on built-in sentences")
    d.add_argument("--full", action="store_true", help="run every real-task benchmark experiment (long)")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_export_parser(sub) -> None:
    from .export import FORMATS

    p = sub.add_parser(
        "export", help="write a (pruned) model for " + ", ".join(f"{name}" for name in FORMATS),
        description="Load a model folder (an attprune compact checkpoint, or any from_pretrained folder) and write "
                    "it in a format other runtimes load: " + "; ".join(f"{f.name}: {f.help}" for f in FORMATS.values())
                    + ".", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model folder (attprune prune --out, or a transformers folder "
                                                  "with its tokenizer)")
    p.add_argument("--format", required=True, choices=tuple(FORMATS), help="what to write")
    p.add_argument("--out", required=True, help="output: a file (.gguf, .onnx) or a folder (hf)")
    for fmt in FORMATS.values():
        for name, flag in fmt.options.items():
            p.add_argument("--" + name.replace("_", "-"), dest=name, **dict(flag, help=f"{fmt.name}: {flag['help']}"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attprune",
        description="Task-specific compression of transformers: attribution of every FFN neuron "
                    "and attention head, pruning, compaction, adapting by pruning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_score_parser(sub)
    _add_prune_parser(sub)
    _add_adapt_parser(sub)
    _add_demo_parser(sub)
    _add_export_parser(sub)
    f = sub.add_parser("fetch", help="fetch the offline task pack and SmolLM2 into the cache (done by make setup)",
                       description="Download the corpora packages from the registry, extract them and write the "
                                   "seeded task splits, and convert SmolLM2-135M-Instruct from its registry wheel "
                                   "into a safetensors folder, under $ATTPRUNE_CACHE (default ~/.cache/attprune).")
    f.add_argument("--force", action="store_true", help="download and convert again even if the cache is complete")
    f.add_argument("--no-llm", action="store_true", help="skip SmolLM2 (90 MB download, 517 MB in the cache)")
    return parser


# -- running --------------------------------------------------------------------------------

def check_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        reason = err.strerror or err
        raise InputError(f"cannot write to the output folder {out} ({reason}); choose another --out") from None


def _read_rows(args, path) -> list[dict]:
    from .data import read_rows

    return read_rows(path, args.split)[: args.limit]


def _batches_from(args, rows: list[dict], tokenizer, num_labels, label2id, *, label_column: str | None,
                  task: str = "sequence") -> list[dict]:
    """The data flags (--text-column, --max-length, --label-map, --prompt-column...) applied to ``rows``."""
    from .data import parse_label_map, prompt_batches, text_batches

    if getattr(args, "prompt_column", None):
        if task != "causal":
            raise InputError(f"--prompt-column describes an instruct LLM's task; this model is not a causal LM ({task})")
        choices = [c.strip() for c in args.choices.split(",")] if args.choices else None
        return prompt_batches(rows, tokenizer, prompt_column=args.prompt_column, answer_column=args.answer_column,
                              chat_template=not args.no_chat_template, batch_size=args.batch_size, choices=choices,
                              prefill_column=args.prefill_column)

    return text_batches(rows, tokenizer, task=task, text_column=args.text_column,
                        label_column=label_column, text_pair_column=args.text_pair_column,
                        max_length=args.max_length, batch_size=args.batch_size, num_labels=num_labels,
                        label_map=parse_label_map(args.label_map), label2id=label2id)


def _score(args) -> int:
    from .attribution import attribute, distributed, input_means
    from .attribution.objective import task_of
    from .io import write_json

    config = settings_from_args(AttributionConfig, args)  # checked before anything loads
    out = Path(args.out)
    rows = _read_rows(args, args.data)  # before the model: fail fast on bad data
    check_writable(out)
    model, tokenizer = load_model(args.model, seed=config.seed, placement=_placement(args))
    config = config.for_model(model)
    task = task_of(model) or "sequence"
    label_column = None if config.target == "prediction" and task == "sequence" else args.label_column
    batches = _batches_from(args, rows, tokenizer, getattr(model.config, "num_labels", None),
                            getattr(model.config, "label2id", None), task=task, label_column=label_column)
    partial = out / ".partial"
    if partial.exists() and not args.resume and distributed.is_main():
        shutil.rmtree(partial)
        print(f"discarded the partial run in {partial} (pass --resume to continue one)")
    distributed.barrier()
    try:
        scores = attribute(model, batches, config, progress=not args.no_progress, resume_dir=partial,
                           save_every=args.save_every)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"partial sums are in {partial}: run the same command with --resume to "
                                "continue") from None
    if not distributed.is_main():
        return 0  # rank 0 writes
    if not scores.input_means:  # what `prune --compensate` folds into the biases: one more pass, no gradient
        scores.input_means = input_means(model, batches, units=config.units, progress=not args.no_progress,
                                         long_inputs=config.long_inputs)
    scores.save(out / "scores.safetensors")
    summary = scores.summary()
    write_json(out / "summary.json", dict(scores.meta, data=str(args.data), summary=summary))
    print(summary)
    print(f"wrote {out / 'scores.safetensors'} and {out / 'summary.json'} "
          f"({scores.meta['n_examples']} examples, {scores.meta['seconds']} s)")
    return 0


def _adapt(args) -> int:
    from .adaptation import adapt

    config = settings_from_args(AdaptConfig, args)  # checked before anything loads
    rows = _read_rows(args, args.data)  # fail fast on bad data, before the model loads
    held_out_rows = _read_rows(args, args.eval_data) if args.eval_data else None
    check_writable(Path(args.out).parent)
    model, tokenizer = load_model(args.model, seed=config.seed)
    num_labels = _label_bound(model, config.num_labels)
    label2id = getattr(model.config, "label2id", None)
    train = _batches_from(args, rows, tokenizer, num_labels, label2id, label_column=args.label_column)
    held_out = (_batches_from(args, held_out_rows, tokenizer, num_labels, label2id, label_column=args.label_column)
                if held_out_rows else None)
    result = adapt(model, train, config, eval_batches=held_out, progress=not args.no_progress)
    out = result.save(args.out, tokenizer=tokenizer)
    stats = result.stats
    held_out = f"; held-out accuracy {stats['eval_accuracy']:.3f}" if "eval_accuracy" in stats else ""
    print(f"kept {stats['kept']:,} of {stats['masked']:,} masked {config.granularity} (sparsity "
          f"{stats['sparsity']:.1%}) after {stats['steps']} steps ({stats['stopped']}){held_out}")
    print(f"wrote {out} (attprune.apply_adapted(model, '{out}') puts the task on the pre-trained model)")
    return 0


def _label_bound(model, num_labels: int | None) -> int:
    """The class ids the data may hold: ``--num-labels``, else a classifier's own count, else any
    (``adapt`` then infers the classes from the labels)."""
    if num_labels is not None:
        return num_labels
    if type(model).__name__.endswith("ForSequenceClassification"):
        return model.config.num_labels
    return sys.maxsize


def _prune(args) -> int:
    from .attribution import Scores
    from .compact import compact, cost_summary
    from .plan import make_plan
    from .pretrained import save_pretrained

    scores_path = Path(args.scores)
    scores = Scores.load(scores_path / "scores.safetensors" if scores_path.is_dir() else scores_path)
    if args.compensate and not scores.input_means:
        raise InputError(f"--compensate needs the input means of the scored data and {scores_path} has none: score "
                         "again with `attprune score` (it stores them; so does --baseline mean), or compute them in "
                         "Python: attprune.compact(model, plan, compensate=attprune.input_means(model, batches))")
    plan = make_plan(scores, ffn=args.ffn, heads=args.heads, scope=args.scope, normalize=args.normalize,
                     rank_by=args.rank_by, round_to=args.round_to, min_keep=args.min_keep)
    model, tokenizer = load_model(args.model, seed=args.seed, placement=_placement(args))
    print(plan.summary())
    print(cost_summary(model, plan, seq_len=args.seq_len))
    compact(model, plan, compensate=scores.input_means if args.compensate else None)
    out = save_pretrained(model, args.out, tokenizer=tokenizer)
    print(f"wrote the compact model to {out} (load it with attprune.from_pretrained)")
    return 0


def _demo(args) -> int:
    from .experiments.demo import run_demo, run_task_demo

    def given(value, default):
        return default if value is None else value

    progress = not args.no_progress
    if args.llm:
        from .experiments.demo_llm import run_llm_demo
        from .experiments.prompts import PROMPT_TASKS

        task = given(args.tasks, "bbc").split(",")[0]
        if task not in PROMPT_TASKS:
            raise InputError(f"--llm takes one prompt task: {', '.join(PROMPT_TASKS)}; got {task!r}")
        run_llm_demo(out=given(args.out, "out/demo-llm"), task=task, n_attr=given(args.n_attr, 8),
                     max_test=given(args.max_test, 80), ffn=given(args.ffn, 0.2), progress=progress)
    elif args.quick:
        run_demo(out=given(args.out, "out/demo"), ffn=given(args.ffn, 0.5), heads=args.heads, progress=progress)
    else:
        run_task_demo(out=given(args.out, "out/demo"), tasks=tuple(t for t in given(args.tasks, "hedge,mr").split(",")
                                                                  if t),
                      n_attr=given(args.n_attr, 32), max_test=given(args.max_test, 400), ffn=given(args.ffn, 0.5),
                      full=args.full, progress=progress)
    return 0


def _export(args) -> int:
    from .export import FORMATS, export

    model, tokenizer = load_model(args.model)
    options = {name: getattr(args, name) for name in FORMATS[args.format].options}
    out = export(model, args.out, format=args.format, tokenizer=tokenizer, **options)
    print(f"wrote {args.format} to {out}")
    return 0


def _fetch(args) -> int:
    from .experiments import TASKS, UNSEEN, fetch_corpora, load_task, load_unseen

    raw = fetch_corpora(force=args.force)
    for name in TASKS:
        task = load_task(name)
        print(f"{name}: {len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test")
    for pair in UNSEEN:
        print(f"{pair}: {len(load_unseen(pair, n=None))} test examples")
    print(f"task pack ready (corpora in {raw})")
    if not args.no_llm:
        from .models import fetch_smollm2

        print(f"SmolLM2-135M-Instruct ready in {fetch_smollm2(force=args.force)}")
    return 0


COMMANDS = {"score": _score, "prune": _prune, "adapt": _adapt, "demo": _demo, "export": _export, "fetch": _fetch}


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 2 for bad input (one line on stderr), 130 on Ctrl-C.

    Any other exception is a bug: it propagates with its traceback, after a line that says so.
    """
    from .attribution import distributed

    args = build_parser().parse_args(argv)
    joined = distributed.init_from_env()  # under torchrun: one process group for the run
    try:
        return COMMANDS[args.command](args)
    except AttpruneError as err:
        print(f"attprune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        detail = str(err) or "nothing was written under the output folder"
        print(f"attprune: interrupted; {detail}", file=sys.stderr)
        return 130
    except Exception:
        print(f"attprune: {REPORT_BUGS}", file=sys.stderr)
        raise
    finally:
        if joined:
            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
