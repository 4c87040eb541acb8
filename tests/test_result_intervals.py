"""Per-example results and the statistics the benchmark reports from them: intervals over test
examples (token tasks: whole sentences resampled), paired and pooled differences, verdicts."""

import numpy as np
import pytest
import torch

from attprune import InputError
from attprune.data import accuracy, correctness
from attprune.experiments.encoder_benchmark import comparisons
from attprune.experiments.pipeline import Outcome
from attprune.experiments.report import contrast_markdown
from attprune.experiments.stats import (Interval, contrasts, mean_interval, mean_of_groups, paired_difference,
                                       verdict)

from tiny import batch_for, bert_cls, bert_token


@pytest.mark.parametrize("build", [bert_cls, bert_token], ids=["sequence", "token"])
def test_correctness_counts_each_example_as_evaluating_it_alone(build):
    model = build(dtype=torch.float32)
    batches = [batch_for(model, batch_size=5, seed=s) for s in (1, 2)]
    correct, labelled = correctness(model, batches)
    alone_correct, alone_labelled = [], []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            one = {k: v[i:i + 1] for k, v in batch.items()}
            predicted = model(**{k: v for k, v in one.items() if k != "labels"}).logits.argmax(-1)
            keep = one["labels"] != -100
            alone_correct.append(int((predicted[keep] == one["labels"][keep]).sum()))
            alone_labelled.append(int(keep.sum()))
    assert correct.tolist() == alone_correct
    assert labelled.tolist() == alone_labelled
    assert accuracy(model, batches) == sum(alone_correct) / sum(alone_labelled)


def test_correctness_refuses_batches_without_labels():
    model = bert_cls(dtype=torch.float32)
    batch = batch_for(model)
    batch["labels"][:] = -100
    with pytest.raises(InputError, match="no labelled examples"):
        correctness(model, [batch])


def test_totals_of_one_are_the_plain_mean_and_scaling_them_changes_nothing():
    rng = np.random.default_rng(3)
    values = (rng.random(120) < 0.6).astype(float)
    plain = mean_interval(values, seed=5)
    assert mean_interval(values, seed=5, totals=np.ones(120)) == plain
    assert mean_interval(4 * values, seed=5, totals=np.full(120, 4)) == pytest.approx(plain)


def test_token_tasks_resample_whole_sentences():
    """40 sentences of 1 token, all right, and 4 of 30 tokens, all wrong: the token accuracy is
    40/160, and the interval that keeps sentences together is wider than one that treats the
    160 tokens as independent (which it is not)."""
    correct = np.array([1] * 40 + [0] * 4, dtype=float)
    labelled = np.array([1] * 40 + [30] * 4, dtype=float)
    clustered = mean_interval(correct, totals=labelled)
    tokens = mean_interval(np.repeat(correct / labelled, labelled.astype(int)))
    assert clustered.value == pytest.approx(40 / 160) == tokens.value
    assert clustered.high - clustered.low > 2 * (tokens.high - tokens.low)
    with pytest.raises(InputError, match="one count per example"):
        mean_interval(correct, totals=labelled[:-1])


def test_mean_of_groups_is_the_mean_of_the_groups_and_one_group_is_mean_interval():
    rng = np.random.default_rng(0)
    a, b = rng.random(50) < 0.7, rng.random(80) < 0.4
    assert mean_of_groups([(a, None)], seed=2) == mean_interval(a, seed=2)
    both = mean_of_groups([(a, None), (b, None)])
    assert both.value == pytest.approx((a.mean() + b.mean()) / 2)
    assert both.low < both.value < both.high
    with pytest.raises(InputError, match="at least one group"):
        mean_of_groups([])


def test_verdicts_follow_the_interval():
    assert verdict(Interval(0.02, 0.001, 0.04)) == "ahead"
    assert verdict(Interval(-0.02, -0.04, -0.001)) == "behind"
    assert verdict(Interval(0.02, -0.001, 0.04)) == "tied"
    assert verdict(paired_difference([1] * 100, [0] * 100)) == "ahead"


def _outcome(correct):
    correct = np.asarray(correct)
    return Outcome(correct, np.ones_like(correct))


def test_comparisons_average_draws_then_pair_examples_and_pool_tasks():
    n = 200
    ig = {0: np.r_[np.ones(150), np.zeros(50)], 1: np.r_[np.ones(140), np.zeros(60)]}
    fisher = {0: np.r_[np.ones(100), np.zeros(100)], 1: np.r_[np.ones(120), np.zeros(80)]}
    outcomes = {}
    for task, shift in (("a", 0), ("b", 10)):
        for draw in (0, 1):
            outcomes[(task, "ffn", "ig", draw, 0.5)] = _outcome(np.roll(ig[draw], shift))
            outcomes[(task, "ffn", "fisher", draw, 0.5)] = _outcome(np.roll(fisher[draw], shift))
        outcomes[(task, "ffn", "fisher", 0, 0.3)] = _outcome(np.zeros(n))  # not a compared sparsity
    result = comparisons(outcomes, ("a", "b"), (0.5,))
    expected = (145 - 110) / n  # IG's mean over draws minus fisher's
    assert len(result["per_task"]) == 2
    for row in result["per_task"]:
        assert row["versus"] == "fisher" and row["sparsity"] == 0.5
        assert row["ig_minus_other"]["value"] == pytest.approx(expected)
        assert row["per_draw"] == pytest.approx([0.25, 0.10])
        assert row["verdict"] == "ahead"
    (pooled,) = result["pooled"]
    assert pooled["tasks"] == 2 and pooled["ig_minus_other"]["value"] == pytest.approx(expected)
    assert pooled["verdict"] == "ahead"


def test_contrasts_pair_any_two_methods_and_skip_tasks_missing_one():
    """"32 examples" (two seeded draws) minus "256 examples" (one draw): draws averaged, then
    paired; a task without the second method is left out of the pooled mean."""
    n = 100
    outcomes = {("a", "ffn", "32 examples", 1, 0.5): _outcome(np.r_[np.ones(70), np.zeros(30)]),
                ("a", "ffn", "32 examples", 2, 0.5): _outcome(np.r_[np.ones(60), np.zeros(40)]),
                ("a", "ffn", "256 examples", 0, 0.5): _outcome(np.r_[np.ones(66), np.zeros(34)]),
                ("b", "ffn", "32 examples", 1, 0.5): _outcome(np.ones(n))}
    found = contrasts(outcomes, ("a", "b"), [("32 examples", "256 examples")], (0.5, 0.7))
    (row,) = found["per_task"]
    assert (row["task"], row["first"], row["second"]) == ("a", "32 examples", "256 examples")
    assert row["difference"]["value"] == pytest.approx(0.65 - 0.66)
    assert row["per_draw"] == [] and row["verdict"] == "tied"
    (pooled,) = found["pooled"]
    assert pooled["tasks"] == 1 and pooled["difference"]["value"] == pytest.approx(-0.01)
    table = "\n".join(contrast_markdown(found))
    assert "| 32 examples | 256 examples | 50% | -1.0 [" in table and "| a | 32 examples |" in table
