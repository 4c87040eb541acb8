"""The task pack's prompt tasks in lm-evaluation-harness (``lm-eval``, the ``eval`` extra).

``write_tasks`` writes one lm-eval task per prompt task: a JSONL of the prompts already
rendered through the tokenizer's chat template (the exact string whose tokens are
``encode_prompts``' token ids) with their labels, and a YAML whose choices are the task's
answer words; a group YAML holds them all.  ``run_tasks`` runs ``lm_eval.simple_evaluate`` on
a model instance (a pruned one, say) and returns per task the accuracy, the per-example
correctness and lm-eval's log-likelihood of every answer.

>>> names = write_tasks(tokenizer, "lm_tasks/", tasks=["bbc", "mr"], max_examples=300)
>>> run_tasks(model, tokenizer, names, "lm_tasks/")["attprune_bbc"]["acc"]

The same tasks from lm-eval's command line, on a folder written by
``attprune.export(model, DIR, format="hf", tokenizer=tokenizer)``::

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m attprune.experiments.lm_eval run \\
        --model hf-exact --model_args pretrained=DIR,dtype=float32 --tasks attprune_prompts \\
        --include_path lm_tasks/ --device cpu --batch_size 8 --output_path OUT

The model ``hf-exact`` (``ExactHFLM``, registered when this module is imported with lm-eval
installed) is lm-eval's ``hf`` with one change: ``HFLM`` moves a context's trailing
whitespace into the continuation, so after a chat prompt ending in ``"assistant\\n"`` it
scores ``"\\n" + answer`` after a context cut before the newline.  That adds the same
log p("\\n") to every answer of a prompt (the accuracy is unchanged) but the log-likelihoods
are not ours; ``hf-exact`` tokenizes the context and the continuation separately, without
special tokens, and so scores exactly our token sequences (prompt ids, then answer ids).
``--model hf`` (plain lm-eval, no attprune) gives the same accuracy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ..data import answer_tokens, rendered_prompt
from ..errors import InputError, missing_dependency
from .prompts import PROMPT_TASKS, encode_prompts, message

#: lm-eval's name of the model class that scores our exact token sequences
EXACT_MODEL = "hf-exact"
#: the group task that runs every task ``write_tasks`` wrote into a folder
GROUP = "attprune_prompts"

_exact_class = None


def task_name(name: str, split: str = "test") -> str:
    """lm-eval's name of prompt task ``name`` (``attprune_bbc``; ``attprune_bbc_dev`` for another split)."""
    return f"attprune_{name}" if split == "test" else f"attprune_{name}_{split}"


def write_tasks(tokenizer, folder: str | Path, tasks=tuple(PROMPT_TASKS), split: str = "test",
                max_examples: int | None = None, *, max_text_tokens: int = 64,
                rows: dict[str, list[dict]] | None = None) -> list[str]:
    """Write lm-eval tasks for the prompt tasks ``tasks`` into ``folder``; returns their names.

    Per task: ``<name>.jsonl`` (``prompt``: the chat-templated string and the assistant's
    prefill, ``prompt_ids``: its token
    ids, ``label``) and ``<name>.yaml`` (multiple choice over the answer words, data path
    absolute); ``attprune_prompts.yaml`` groups them.  The rows are the pack's ``split`` (first
    ``max_examples``), or ``rows[name]`` where given; texts are cut to ``max_text_tokens``
    tokens as ``encode_prompts`` cuts them.  Raises ``InputError`` when a rendered prompt does
    not re-encode to ``encode_prompts``' token ids (lm-eval would then score other tokens).
    """
    import yaml  # a dependency of transformers

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for name in tasks:
        if name not in PROMPT_TASKS:
            raise InputError(f"unknown prompt task {name!r}; choose one of {', '.join(PROMPT_TASKS)}")
        template = PROMPT_TASKS[name]
        for answer in template.answers:
            answer_tokens(tokenizer, answer)  # refuses an answer of no tokens
        data = list(rows[name] if rows is not None and name in rows else template.rows(split))
        data = data[:max_examples]
        if not data:
            raise InputError(f"no rows for the prompt task {name!r}")
        examples = encode_prompts(data, tokenizer, template, max_text_tokens)
        lines = []
        for row, example in zip(data, examples):
            user, prefill = message(template, row, tokenizer, max_text_tokens)  # cut as encode_prompts cuts it
            prompt = rendered_prompt(tokenizer, user) + prefill
            if tokenizer(prompt, add_special_tokens=False).input_ids != example.prompt:
                raise InputError(f"task {name!r}: the chat template's text does not re-encode to the prompt's token "
                                 f"ids, so lm-eval would score other tokens: {prompt[-120:]!r}")
            lines.append(json.dumps({"prompt": prompt, "prompt_ids": example.prompt, "label": example.label}))
        lm_name = task_name(name, split)
        data_file = folder / f"{lm_name}.jsonl"
        data_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        config = {
            "task": lm_name,
            "dataset_path": "json",
            # datasets' cache of the file lives next to it
            "dataset_kwargs": {"data_files": {"test": str(data_file)}, "cache_dir": str(folder / ".datasets")},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "prompt",          # a column: the rendered prompt, verbatim
            "doc_to_choice": list(template.answers),
            "doc_to_target": "label",         # an index into the choices
            "target_delimiter": "",           # the answer (with its leading space) follows the prefill directly
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "max_text_tokens": max_text_tokens, "pack_task": name, "split": split},
        }
        (folder / f"{lm_name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
                                               encoding="utf-8")
        names.append(lm_name)
    written = sorted(p.stem for p in folder.glob("attprune_*.yaml") if p.stem != GROUP)
    group = {"group": GROUP, "task": written,
             "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
             "metadata": {"version": 1.0}}
    (folder / f"{GROUP}.yaml").write_text(yaml.safe_dump(group, sort_keys=False), encoding="utf-8")
    return names


def _lm_eval():
    try:
        import lm_eval
        import lm_eval.models  # noqa: F401  (the built-in models; lm-eval loads them only into an empty registry)
        from lm_eval.api.registry import model_registry
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise missing_dependency("lm-eval", "evaluating in lm-evaluation-harness", "eval") from err
    return lm_eval, model_registry, HFLM, TaskManager


def exact_hflm():
    """``ExactHFLM``: lm-eval's ``HFLM`` scoring a (context, continuation) pair as the context's
    tokens then the continuation's, each encoded alone without special tokens (no moving of the
    context's trailing whitespace).  Registered in lm-eval as ``hf-exact``."""
    global _exact_class
    if _exact_class is not None:
        return _exact_class
    _, registry, HFLM, _ = _lm_eval()
    known = registry.get(EXACT_MODEL, None)
    if isinstance(known, type) and known.__name__ == "ExactHFLM":  # this module imported twice (python -m)
        _exact_class = known
        return known

    class ExactHFLM(HFLM):
        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            return (self.tokenizer(context, add_special_tokens=False).input_ids,
                    self.tokenizer(continuation, add_special_tokens=False).input_ids)

    ExactHFLM.__doc__ = exact_hflm.__doc__
    registry.register(EXACT_MODEL)(ExactHFLM)
    _exact_class = ExactHFLM
    return ExactHFLM


def run_tasks(model, tokenizer, tasks, folder: str | Path, exact: bool = True, batch_size: int = 8, *,
             max_length: int | None = None, softmax_dtype=None, **options) -> dict[str, dict]:
    """Run lm-eval's ``simple_evaluate`` on ``model`` (an instance, on its own device) for the
    tasks ``write_tasks`` wrote into ``folder`` (lm-eval names, or the pack's task names).

    Returns ``{task: {"acc", "correct": [0/1 per example], "log_likelihoods": [[per answer] per
    example], "labels"}}`` in the file's example order.  ``exact``: through ``ExactHFLM``
    (our token sequences; else lm-eval's ``HFLM``: the same accuracy, log-likelihoods shifted
    by log p("\\n") per prompt).  ``softmax_dtype``: lm-eval's log-softmax dtype (None: the
    model's; ``torch.float64`` as our scorer).  ``max_length``: lm-eval's context limit (None:
    the model config's); ``InputError`` when a prompt and answer would not fit (lm-eval would
    cut the prompt from the left).  ``options`` go to ``simple_evaluate`` (``limit``...).
    The caller's random generators are left alone.
    """
    import yaml

    lm_eval, _, HFLM, TaskManager = _lm_eval()
    folder = Path(folder).resolve()
    names = [task_name(t) if t in PROMPT_TASKS else t for t in tasks]
    cls = exact_hflm() if exact else HFLM
    # HFLM sets a missing pad token on the tokenizer it gets: give it a copy
    lm = cls(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size, max_length=max_length,
             softmax_dtype=softmax_dtype)
    for name in names:
        config_file = folder / f"{name}.yaml"
        if not config_file.is_file():
            raise InputError(f"no task {name!r} in {folder}: write it with write_tasks")
        config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        longest = max(len(tokenizer(a, add_special_tokens=False).input_ids) for a in config["doc_to_choice"])
        with open(config["dataset_kwargs"]["data_files"]["test"], encoding="utf-8") as f:
            longest += max(len(json.loads(line)["prompt_ids"]) for line in f if line.strip())
        if longest > lm.max_length + 1:
            raise InputError(f"task {name!r}: a prompt and answer of {longest} tokens exceed lm-eval's max_length "
                             f"{lm.max_length} (it would cut the prompt): pass max_length=")
    options = {"random_seed": None, "numpy_random_seed": None, "torch_random_seed": None, **options}
    # our folder only: indexing lm-eval's ~14,000 built-in task files takes seconds
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    results = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True, **options)
    out = {}
    for name in names:
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        out[name] = {
            "acc": float(results["results"][name]["acc,none"]),
            "correct": [int(s["acc"]) for s in samples],
            "log_likelihoods": [[float(r[0][0]) for r in s["resps"]] for s in samples],
            "labels": [int(s["doc"]["label"]) for s in samples],
        }
    return out


def _register_on_import() -> None:
    """``hf-exact`` for lm-eval's command line after ``import attprune.experiments.lm_eval``
    (nothing when lm-eval is not installed)."""
    try:
        exact_hflm()
    except ImportError:
        pass


_register_on_import()


if __name__ == "__main__":  # python -m attprune.experiments.lm_eval run --model hf-exact ...: lm-eval's CLI
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
