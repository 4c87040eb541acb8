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
    score = parser._subparsers._group_actions[0].choices["score"]
    for action in score._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"
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
