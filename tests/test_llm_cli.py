"""An LLM user's own path, end to end on a tiny model: a file of prompts and answers ->
``attprune score --prompt-column ... --answer-column ...`` (chat template, the answer tokens
only) -> ``attprune prune`` -> ``attprune export --format gguf`` -> llama.cpp answers as torch."""

import json

import pytest
import torch

import attprune
from attprune.batches import IGNORE_INDEX
from attprune.cli import main
from attprune.data import chat_prompt, prompt_batches

import tiny

CHAT = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
ROWS = [{"question": "Is the fox quick?", "reply": "yes"}, {"question": "Is the dog lazy or fast?", "reply": "lazy"},
        {"question": "Does pruning remove neurons?", "reply": "yes"}, {"question": "Is GGUF a format?", "reply": "no"}]


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llm")
    tokenizer = tiny.byte_bpe_tokenizer()
    tokenizer.chat_template = CHAT
    model = tiny.causal_lm("llama", vocab_size=len(tokenizer), layers=3, hidden=48)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = folder / "task.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return folder, model, tokenizer, data


def test_prompt_batches_label_only_the_answer_after_the_chat_template(llm_folder):
    _, _, tokenizer, _ = llm_folder
    (batch,) = prompt_batches(ROWS, tokenizer, prompt_column="question", answer_column="reply", batch_size=4)
    for row, example in zip(batch["labels"], ROWS):
        prompt = chat_prompt(tokenizer, example["question"])
        assert tokenizer.decode(prompt).endswith("<s>assistant\n")
        labelled = (row != IGNORE_INDEX).nonzero().flatten()
        assert labelled.min() == len(prompt)
        assert tokenizer.decode(row[labelled]) == example["reply"]
    firsts = [tokenizer(a, add_special_tokens=False).input_ids[0] for a in ("yes", "lazy", "no")]
    assert batch["choices"][0].tolist() == firsts  # the distinct answers, in order of appearance
    plain = prompt_batches(ROWS[:1], tokenizer, prompt_column="question", answer_column="reply", chat_template=False)
    assert plain[0]["input_ids"][0].tolist()[:3] == tokenizer(ROWS[0]["question"], add_special_tokens=False).input_ids[:3]


def test_a_prefill_goes_between_the_chat_template_and_the_answer(llm_folder):
    _, _, tokenizer, _ = llm_folder
    rows = [dict(r, start="The answer is ") for r in ROWS]
    (batch,) = prompt_batches(rows, tokenizer, prompt_column="question", answer_column="reply", batch_size=4,
                              prefill_column="start")
    for row, ids, example in zip(batch["labels"], batch["input_ids"], rows):
        prompt = chat_prompt(tokenizer, example["question"], example["start"])
        assert tokenizer.decode(prompt).endswith("<s>assistant\nThe answer is ")
        assert ids[:len(prompt)].tolist() == prompt
        assert (row != IGNORE_INDEX).nonzero().min() == len(prompt)
    with pytest.raises(attprune.InputError, match="no column 'nope'"):
        prompt_batches(rows, tokenizer, prompt_column="question", answer_column="reply", prefill_column="nope")


def test_score_reads_the_prefill_column(llm_folder, tmp_path):
    folder, model, tokenizer, _ = llm_folder
    rows = [dict(r, start="The answer is ") for r in ROWS]
    data = tmp_path / "task.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["score", "--model", str(folder), "--data", str(data), "--prompt-column", "question",
                 "--answer-column", "reply", "--prefill-column", "start", "--method", "grad_x_act", "--units", "ffn",
                 "--no-progress", "--out", str(tmp_path / "scores")]) == 0
    scores = attprune.Scores.load(tmp_path / "scores" / "scores.safetensors")
    expected = attprune.attribute(model, prompt_batches(rows, tokenizer, prompt_column="question", answer_column="reply",
                                                        prefill_column="start", batch_size=16),
                                  method="grad_x_act", units=("ffn",), progress=False)
    for path, site in expected.sites.items():
        torch.testing.assert_close(scores.sites[path].sum, site.sum, rtol=1e-5, atol=1e-7)


def test_prompts_to_scores_to_a_gguf_file_that_llama_cpp_runs(llm_folder, tmp_path, capsys):
    llama_cpp = pytest.importorskip("llama_cpp")
    folder, model, tokenizer, data = llm_folder
    common = ["--model", str(folder), "--data", str(data), "--prompt-column", "question", "--answer-column", "reply",
              "--batch-size", "2", "--no-progress"]
    assert main(["score", *common, "--steps", "2", "--units", "ffn,heads", "--target", "margin",
                 "--out", str(tmp_path / "scores")]) == 0
    scores = attprune.Scores.load(tmp_path / "scores" / "scores.safetensors")
    assert scores.n_examples == 4 and scores.meta["target"] == "margin"
    expected = attprune.attribute(model, prompt_batches(ROWS, tokenizer, prompt_column="question",
                                                        answer_column="reply", batch_size=2),
                                  steps=2, target="margin", progress=False)
    for path, site in expected.sites.items():
        torch.testing.assert_close(scores.sites[path].sum, site.sum, rtol=1e-5, atol=1e-7)
    assert main(["prune", "--model", str(folder), "--scores", str(tmp_path / "scores"), "--ffn", "0.3",
                 "--heads", "0.34", "--out", str(tmp_path / "compact")]) == 0
    assert main(["export", "--model", str(tmp_path / "compact"), "--format", "gguf", "--dtype", "f32",
                 "--out", str(tmp_path / "m.gguf")]) == 0
    compact = attprune.from_pretrained(tmp_path / "compact")
    ids = chat_prompt(tokenizer, ROWS[0]["question"])
    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), n_ctx=128, logits_all=True, verbose=False, n_threads=2,
                          type_k=0, type_v=0)
    try:
        llm.eval(ids)
        got = torch.from_numpy(llm.scores[:len(ids)].copy())
    finally:
        llm.close()
    with torch.no_grad():
        want = compact(torch.tensor([ids])).logits[0].float()
    assert (got - want).abs().max() <= 1e-3 * (want.max() - want.min())


def test_prompt_columns_are_checked(llm_folder, tmp_path, capsys):
    folder, _, _, data = llm_folder
    code = main(["score", "--model", str(folder), "--data", str(data), "--prompt-column", "missing", "--steps", "2",
                 "--out", str(tmp_path / "s"), "--no-progress"])
    assert code == 2 and "no column 'missing'" in capsys.readouterr().err
    bert = tmp_path / "bert"
    model = tiny.bert_cls()
    model.save_pretrained(bert)
    tiny.byte_bpe_tokenizer().save_pretrained(bert)
    code = main(["score", "--model", str(bert), "--data", str(data), "--prompt-column", "question", "--steps", "2",
                 "--out", str(tmp_path / "t"), "--no-progress"])
    assert code == 2 and "not a causal LM" in capsys.readouterr().err
