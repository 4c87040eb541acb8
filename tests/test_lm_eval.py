"""lm-evaluation-harness on the prompt tasks (attprune.experiments.lm_eval): lm-eval's
log-likelihoods equal our KV-cache scorer's on the same prompts (tiny Llama in float64 and
float32; SmolLM2 on BBC prompts), and a compacted model exported with a uniform plan is
evaluated by lm-eval's command line from its folder, with our accuracy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

import attprune
from attprune.data import pad_id
from attprune.errors import InputError
from attprune.experiments.answers import answer_log_likelihoods
from attprune.experiments.lm_eval import exact_hflm, run_tasks, write_tasks
from attprune.experiments.pack import load_task
from attprune.experiments.prompts import PROMPT_TASKS, answer_ids, encode_prompts

import tiny

needs_lm_eval = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                   reason="lm-eval is not installed: pip install 'attprune[eval]'")

#: a chat template for the tiny tokenizer, shaped like SmolLM2's (special tokens around each turn,
#: the generation prompt ends in a newline: lm-eval's whitespace pitfall)
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
TASKS = ("mr", "bbc")  # two answers of one token... five of up to 10 (the tiny tokenizer)
N, TEXT_TOKENS = 6, 16


def chat_tokenizer():
    tokenizer = tiny.byte_bpe_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_chat_lm(tokenizer, dtype):
    model = tiny.causal_lm(vocab_size=len(tokenizer), dtype=dtype)
    model.config.max_position_embeddings = 512  # RoPE: any length; lm-eval's context limit reads this
    return model


def our_scores(model, tokenizer, task, n=N, max_text_tokens=TEXT_TOKENS):
    template = PROMPT_TASKS[task]
    examples = encode_prompts(load_task(task).test[:n], tokenizer, template, max_text_tokens)
    scores = answer_log_likelihoods(model, examples, answer_ids(template, tokenizer), pad_id(tokenizer), batch_size=4)
    return scores, torch.tensor([e.label for e in examples])


def test_written_tasks_hold_our_prompt_tokens_and_the_answer_words(tmp_path):
    tokenizer = chat_tokenizer()
    names = write_tasks(tokenizer, tmp_path, tasks=TASKS, max_examples=N, max_text_tokens=TEXT_TOKENS)
    assert names == ["attprune_mr", "attprune_bbc"]
    for task, name in zip(TASKS, names):
        config = yaml.safe_load((tmp_path / f"{name}.yaml").read_text())
        assert config["doc_to_choice"] == list(PROMPT_TASKS[task].answers) and config["target_delimiter"] == ""
        rows = [json.loads(line) for line in open(config["dataset_kwargs"]["data_files"]["test"])]
        examples = encode_prompts(load_task(task).test[:N], tokenizer, PROMPT_TASKS[task], TEXT_TOKENS)
        assert [r["prompt_ids"] for r in rows] == [e.prompt for e in examples]
        assert [r["label"] for r in rows] == [e.label for e in examples]
        for row in rows:  # the string lm-eval reads re-encodes to our ids
            assert tokenizer(row["prompt"], add_special_tokens=False).input_ids == row["prompt_ids"]
            assert row["prompt"].endswith("<s>assistant\n" + PROMPT_TASKS[task].prefill)
    group = yaml.safe_load((tmp_path / "attprune_prompts.yaml").read_text())
    assert group["group"] == "attprune_prompts" and sorted(group["task"]) == sorted(names)
    # another split, own rows
    own = {"spam": [{"text": "Buy now", "label": 1}]}
    assert write_tasks(tokenizer, tmp_path, tasks=["spam"], split="dev", rows=own) == ["attprune_spam_dev"]
    assert "attprune_spam_dev" in yaml.safe_load((tmp_path / "attprune_prompts.yaml").read_text())["task"]
    with pytest.raises(InputError, match="unknown prompt task 'nope'"):
        write_tasks(tokenizer, tmp_path, tasks=["nope"])


@needs_lm_eval
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_lm_eval_log_likelihoods_equal_our_scorer(tmp_path, dtype, tolerance):
    tokenizer = chat_tokenizer()
    model = tiny_chat_lm(tokenizer, dtype)
    names = write_tasks(tokenizer, tmp_path, tasks=TASKS, max_examples=N, max_text_tokens=TEXT_TOKENS)
    theirs = run_tasks(model, tokenizer, names, tmp_path, batch_size=4)
    for task, name in zip(TASKS, names):
        ours, gold = our_scores(model, tokenizer, task)
        got = torch.tensor(theirs[name]["log_likelihoods"], dtype=torch.float64)
        assert got.shape == ours.shape
        assert (got - ours).abs().max().item() < tolerance
        assert torch.equal(got.argmax(1), ours.argmax(1))
        assert theirs[name]["correct"] == (ours.argmax(1) == gold).int().tolist()
        assert theirs[name]["acc"] == pytest.approx((ours.argmax(1) == gold).double().mean().item())
        assert theirs[name]["labels"] == gold.tolist()


@needs_lm_eval
def test_hf_exact_is_registered_beside_lm_evals_own_models():
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM

    assert get_model("hf-exact") is exact_hflm()
    assert issubclass(get_model("hf-exact"), HFLM) and get_model("hf") is HFLM


@needs_lm_eval
def test_a_context_lm_eval_would_cut_is_refused(tmp_path):
    tokenizer = chat_tokenizer()
    model = tiny.causal_lm(vocab_size=len(tokenizer))  # 128 positions: the prompts are longer
    names = write_tasks(tokenizer, tmp_path, tasks=["mr"], max_examples=2)
    with pytest.raises(InputError, match="exceed lm-eval's max_length 128"):
        run_tasks(model, tokenizer, names, tmp_path)


def test_without_lm_eval_the_error_names_the_extra():
    probe = textwrap.dedent("""
        import sys
        import attprune, attprune.experiments
        assert "lm_eval" not in sys.modules, "importing attprune.experiments imported lm_eval"
        sys.modules["lm_eval"] = None  # lm-eval not installed
        from attprune.errors import MissingDependencyError
        import attprune.experiments.lm_eval as module  # writing tasks needs no lm-eval
        try:
            module.run_tasks(None, None, ["attprune_mr"], ".")
        except MissingDependencyError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "attprune[eval]" in out and "lm-eval" in out


# -- the real model ----------------------------------------------------------------------


@needs_lm_eval
@pytest.mark.llm
@pytest.mark.slow
def test_smollm2_lm_eval_log_likelihoods_equal_our_scorer(tmp_path):
    from attprune.models import load_smollm2

    model, tokenizer = load_smollm2()  # float32
    names = write_tasks(tokenizer, tmp_path, tasks=["bbc"], max_examples=10)
    theirs = run_tasks(model, tokenizer, names, tmp_path)["attprune_bbc"]
    ours, gold = our_scores(model, tokenizer, "bbc", n=10, max_text_tokens=64)
    assert all(len(a) == 1 for a in answer_ids(PROMPT_TASKS["bbc"], tokenizer))  # (the tiny tests: multi-token)
    got = torch.tensor(theirs["log_likelihoods"], dtype=torch.float64)
    assert (got - ours).abs().max().item() < 1e-4  # measured 2.3e-5: float32 forward passes batched otherwise
    assert torch.equal(got.argmax(1), ours.argmax(1))
    assert theirs["correct"] == (ours.argmax(1) == gold).int().tolist()


# -- a compacted model, exported, in lm-eval's command line --------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Llama compacted with a uniform plan, exported as a plain transformers folder, the
    prompt tasks written for it, and our scores of the compacted model."""
    root = tmp_path_factory.mktemp("lm_eval_cli")
    tokenizer = chat_tokenizer()
    model = tiny_chat_lm(tokenizer, torch.float64)
    scores = attprune.attribute(model, None, method="random", seed=3)
    attprune.compact(model, attprune.make_plan(scores, ffn=0.4, heads=0.34, scope="uniform"))
    attprune.export(model, root / "plain", format="hf", tokenizer=tokenizer)
    names = write_tasks(tokenizer, root / "tasks", tasks=TASKS, max_examples=N, max_text_tokens=TEXT_TOKENS)
    ours = {name: our_scores(model, tokenizer, task) for task, name in zip(TASKS, names)}
    return root, names, ours


@needs_lm_eval
@pytest.mark.parametrize("module, model_name", [("lm_eval", "hf"), ("attprune.experiments.lm_eval", "hf-exact")])
def test_an_exported_compact_model_is_evaluated_by_the_lm_eval_command_line(exported, module, model_name):
    """``python -m lm_eval run --model hf``: plain lm-eval loads the folder with transformers
    (no attprune): our accuracy and our log-likelihoods, per example; the same through
    ``python -m attprune.experiments.lm_eval run --model hf-exact``."""
    root, names, ours = exported
    out = root / f"out-{model_name}"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, "-m", module, "run", "--model", model_name,
               "--model_args", f"pretrained={root / 'plain'},dtype=float64", "--tasks", "attprune_prompts",
               "--include_path", str(root / "tasks"), "--device", "cpu", "--batch_size", "8",
               "--output_path", str(out), "--log_samples"]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    everything = torch.cat([(scores.argmax(1) == gold).double() for scores, gold in ours.values()])
    assert results["attprune_prompts"]["acc,none"] == pytest.approx(everything.mean().item())
    for name, (scores, gold) in ours.items():
        assert results[name]["acc,none"] == pytest.approx((scores.argmax(1) == gold).double().mean().item())
        (samples_file,) = out.rglob(f"samples_{name}_*.jsonl")
        lines = samples_file.read_text().splitlines()
        samples = sorted((json.loads(line) for line in lines), key=lambda s: s["doc_id"])
        assert [int(s["acc"]) for s in samples] == (scores.argmax(1) == gold).int().tolist()
        got = torch.tensor([[float(r[0][0]) for r in s["resps"]] for s in samples], dtype=torch.float64)
        # the prompts end in the assistant's prefill (no trailing whitespace for plain lm-eval to move
        # into the answer), so both models score exactly our token sequences
        assert (got - scores).abs().max().item() < 1e-9
