"""The command line: help for every flag, a real scoring run, clear errors with exit code 2."""

import csv
import re
import subprocess
import sys

import pytest
import torch

import attprune
from attprune.cli import build_parser, main
from attprune.data import class_ids, parse_label_map, read_rows, text_batches



def test_help_explains_every_flag():
    parser = build_parser()
    for command, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"attprune {command} --{action.dest} has no help text"
    out = subprocess.run([sys.executable, "-m", "attprune", "score", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--label-map" in out.stdout and "--rows-per-pass" in out.stdout


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny BERT classifier saved with the packaged MiniLM tokenizer (so text tokenizes)."""
    from transformers import AutoTokenizer
    from attprune.models import packaged_minilm_path
    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    import transformers as tf
    cfg = tf.BertConfig(vocab_size=30522, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2,
                        architectures=["BertForSequenceClassification"])
    model = tf.BertForSequenceClassification(cfg)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(packaged_minilm_path()).save_pretrained(path)
    return path


@pytest.fixture()
def review_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # BOM, as the Pattern corpora have
        w = csv.writer(f)
        w.writerow(["label", "text"])
        for i, text in enumerate(["great film", "awful plot", "a joy to watch", "dull and long", "superb"]):
            w.writerow([1 if i % 2 == 0 else -1, text])
    return path


def test_score_writes_loadable_scores(tiny_model_dir, review_csv, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["score", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
                 "--steps", "3", "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    scores = attprune.Scores.load(out / "scores.safetensors")
    assert scores.n_examples == 5 and scores.meta["steps"] == 3
    assert (out / "summary.json").is_file()
    assert "ffn: 2 sites" in capsys.readouterr().out


def test_score_unsupervised_needs_no_label_column(tiny_model_dir, tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text('{"text": "good"}\n{"text": "bad movie"}\n')
    code = main(["score", "--model", str(tiny_model_dir), "--data", str(path), "--target", "prediction",
                 "--method", "grad_x_act", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 0


@pytest.mark.parametrize("args,match", [
    (["--data", "missing.csv"], "does not exist"),
    (["--label-column", "stars"], "no label column 'stars'"),
    ([], r"label ids \[-1\] are outside \[0, 2\)"),
    (["--steps", "0", "--label-map=-1:0,1:1"], "steps must be an integer >= 1"),
    (["--quadrature", "riemann_trapezoid", "--steps", "1", "--label-map=-1:0,1:1"],
     "riemann_trapezoid needs steps >= 2"),
])
def test_score_errors_exit_2_with_a_message(tiny_model_dir, review_csv, tmp_path, capsys, args, match):
    base = ["score", "--model", str(tiny_model_dir), "--data", str(review_csv), "--out", str(tmp_path / "o"),
            "--no-progress"]
    if args[:1] == ["--data"]:
        base[4] = str(tmp_path / args[1])
        args = []
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert re.search("attprune: error: .*" + match, err)
    assert not (tmp_path / "o" / "scores.safetensors").exists()


def test_missing_model_folder(review_csv, tmp_path, capsys):
    assert main(["score", "--model", str(tmp_path / "none"), "--data", str(review_csv), "--out", str(tmp_path)]) == 2
    assert "model folder" in capsys.readouterr().err


def test_adapt_writes_a_task_that_applies_to_the_model(tiny_model_dir, review_csv, tmp_path, capsys):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "task"
    code = main(["adapt", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
                 "--eval-data", str(review_csv), "--sparsity", "0.3", "--epochs", "2", "--lr-head", "1e-3",
                 "--batch-size", "2", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "sparsity 30.0%" in printed and "held-out accuracy" in printed
    model = AutoModel.from_pretrained(tiny_model_dir)  # the bare encoder is enough
    task = attprune.apply_adapted(model, out)
    batch = AutoTokenizer.from_pretrained(out / "tokenizer")(["great film"], return_tensors="pt")
    assert task(**batch).logits.shape == (1, 2)
    units = main(["adapt", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
                  "--granularity", "units", "--sparsity", "0.5", "--epochs", "1", "--out", str(tmp_path / "units"),
                  "--no-progress"])
    assert units == 0 and (tmp_path / "units" / "plan.json").is_file()


@pytest.mark.parametrize("args, match", [
    (["--sparsity", "1.0"], "sparsity must be a fraction"),
    (["--data", "missing.csv"], "does not exist"),
    (["--granularity", "units", "--embeddings"], "embeddings are masked only with granularity='weights'"),
])
def test_adapt_errors_exit_2(tiny_model_dir, review_csv, tmp_path, capsys, args, match):
    base = ["adapt", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
            "--epochs", "1", "--out", str(tmp_path / "o"), "--no-progress"]
    code = main(base + args)
    assert code == 2 and match in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_data_helpers(tmp_path):
    assert parse_label_map("-1:0, 1:1") == {"-1": 0, "1": 1}
    with pytest.raises(ValueError, match="VALUE:ID"):
        parse_label_map("pos")
    assert class_ids(["neg", "pos"], 2, label2id={"neg": 0, "pos": 1}) == [0, 1]
    with pytest.raises(ValueError, match="not class ids"):
        class_ids(["neg"], 2)
    empty = tmp_path / "empty.csv"
    empty.write_text("label,text\n")
    with pytest.raises(ValueError, match="no examples"):
        read_rows(empty)
    with pytest.raises(ValueError, match="unsupported data file"):
        read_rows(__file__)
    rows = [{"text": "a b", "label": "1"}]
    with pytest.raises(ValueError, match="no column 'body'"):
        text_batches(rows, None, task="sequence", text_column="body")


def test_ctrl_c_then_resume(tiny_model_dir, review_csv, tmp_path, capsys, monkeypatch):
    from attprune.attribution.methods import ig

    args = ["score", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
            "--steps", "3", "--batch-size", "1", "--save-every", "1", "--no-progress"]
    real, calls = ig.ig_site, []

    def interrupted_on_the_third_batch(runner, clean, site, *a, **kw):
        calls.append(site.path)
        if len(calls) > 2 * 4:  # 4 sites per batch: Ctrl-C during batch 3
            raise KeyboardInterrupt
        return real(runner, clean, site, *a, **kw)

    monkeypatch.setattr(ig, "ig_site", interrupted_on_the_third_batch)
    out = tmp_path / "out"
    assert main(args + ["--out", str(out)]) == 130
    assert "--resume" in capsys.readouterr().err and (out / ".partial").is_dir()
    assert not (out / "scores.safetensors").exists()
    monkeypatch.setattr(ig, "ig_site", real)
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert main(args + ["--out", str(tmp_path / "fresh")]) == 0
    resumed = attprune.Scores.load(out / "scores.safetensors")
    fresh = attprune.Scores.load(tmp_path / "fresh" / "scores.safetensors")
    assert resumed.n_examples == fresh.n_examples == 5 and not (out / ".partial").exists()
    for path, s in fresh.sites.items():
        assert torch.equal(s.sum, resumed.sites[path].sum)


def test_unwritable_output_exits_2_before_any_work(tiny_model_dir, review_csv, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for command in (["score", "--steps", "2"], ["adapt", "--epochs", "1"]):
        code = main([*command, "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
                     "--out", str(blocker / "out"), "--no-progress"])
        assert code == 2 and "cannot write to the output folder" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("bug", [KeyError("site"), RuntimeError("shape mismatch"), ValueError("internal")])
def test_an_internal_error_keeps_its_traceback(tiny_model_dir, review_csv, tmp_path, capsys, monkeypatch, bug):
    """Only attprune's own errors (bad input) become one line and exit 2; a bug propagates."""
    from attprune.attribution.methods import ig

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(ig, "ig_site", broken)
    with pytest.raises(type(bug)):
        main(["score", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
              "--steps", "2", "--out", str(tmp_path / "o"), "--no-progress"])
    assert "this is a bug in attprune: please report it" in capsys.readouterr().err


def test_llm_demo_flags(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "--llm" in capsys.readouterr().out
    assert main(["demo", "--llm", "--tasks", "pos"]) == 2  # refused before any model is loaded
    assert "one prompt task" in capsys.readouterr().err
