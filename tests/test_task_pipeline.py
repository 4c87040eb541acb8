"""End to end on real offline data, reduced: one task, a small multi-task model, property checks.

Needs the task pack (``make setup`` fetches it; otherwise this test fetches it from the
package registry).  Asserts properties, not exact numbers: the compacted model scores
exactly what the masked one does, and IG beats random pruning at 70% by a clear margin
over seeds.
"""

import statistics

import pytest
import torch

from attprune.experiments import pipeline
from attprune.experiments.encoder import EncoderTask, compact_point, masked_accuracy
from attprune.experiments.multitask import TrainConfig, train
from attprune.experiments.pipeline import attribution_rows, evaluate, score
from attprune.plan import make_plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hedge():
    torch.set_num_threads(2)
    # no time budget: a busy machine must not stop training early and change what the test checks
    config = TrainConfig(tasks=("hedge",), caps=(("hedge", 1000),), epochs=2, batch_size=16, lr_encoder=1e-4,
                         budget_seconds=float("inf"))
    mt = train(config, progress=False)
    assert not mt.report["stopped_at_budget"]
    return mt, EncoderTask.of(mt, "hedge", max_test=300)


def test_reduced_pipeline_properties(hedge):
    mt, run = hedge
    assert run.dense.accuracy > 0.65  # the small model learned the task
    ig, seconds = score(run, "ig", n=32, units=("ffn",), steps=20, quadrature="riemann_right")
    point = compact_point(run, make_plan(ig, ffn=0.5))
    assert point["compact_accuracy"] == point["masked_accuracy"]
    assert point["params_compact"] < point["params_dense"]
    ig_70 = masked_accuracy(run, make_plan(ig, ffn=0.7))
    randoms = [masked_accuracy(run, make_plan(score(run, "random", n=None, units=("ffn",), seed=s)[0], ffn=0.7))
               for s in range(3)]
    margin = ig_70 - statistics.fmean(randoms)
    assert margin > max(0.03, 2 * statistics.pstdev(randoms)), (ig_70, randoms)


def test_score_cache_reuses_scores_and_serves_a_subset_of_units(hedge, tmp_path, monkeypatch):
    _, run = hedge
    rows = attribution_rows(run, 4)
    first, seconds = score(run, "ig", rows=rows, units=("ffn", "heads"), steps=4, cache=tmp_path)
    monkeypatch.setattr(pipeline, "attribute", lambda *a, **k: pytest.fail("recomputed a cached score"))
    again, again_seconds = score(run, "ig", n=4, units=("ffn", "heads"), steps=4, cache=tmp_path)
    ffn_only, _ = score(run, "ig", rows=rows, units=("ffn",), steps=4, cache=tmp_path)
    assert again_seconds == pytest.approx(seconds)
    assert all(torch.equal(first.sites[p].sum, again.sites[p].sum) for p in first.sites)
    assert {s.kind for s in ffn_only.sites.values()} == {"ffn"}
    assert set(ffn_only.ffn) == set(first.ffn)
    with pytest.raises(pytest.fail.Exception):  # other rows, draw, steps or target: a different entry
        score(run, "ig", n=5, units=("ffn",), steps=4, cache=tmp_path)
    with pytest.raises(pytest.fail.Exception):
        score(run, "ig", n=4, draw=1, units=("ffn",), steps=4, cache=tmp_path)
    with pytest.raises(pytest.fail.Exception):
        score(run, "ig", rows=rows, units=("ffn",), steps=8, cache=tmp_path)


def test_evaluate_equals_the_masked_model_per_example_and_is_cached(hedge, tmp_path, monkeypatch):
    from attprune.experiments import encoder

    _, run = hedge
    scores, _ = score(run, "activation", n=8)
    outcome = evaluate(run, make_plan(scores, ffn=0.6), cache=tmp_path)
    assert len(outcome.correct) == 300 and set(outcome.labelled.tolist()) == {1}
    assert outcome.accuracy == masked_accuracy(run, make_plan(scores, ffn=0.6))
    interval = outcome.interval()
    assert interval.low < outcome.accuracy < interval.high
    assert evaluate(run, cache=tmp_path).accuracy == run.dense.accuracy
    monkeypatch.setattr(encoder, "correctness", lambda *a, **k: pytest.fail("evaluated a cached plan again"))
    again = evaluate(run, make_plan(scores, ffn=0.6), cache=tmp_path)
    assert (again.correct == outcome.correct).all()
    with pytest.raises(pytest.fail.Exception):  # another plan: another entry
        evaluate(run, make_plan(scores, ffn=0.5), cache=tmp_path)


def test_test_examples_are_batched_by_length_without_changing_the_result(hedge):
    from attprune.data import accuracy
    from attprune.experiments.pack import TASKS, load_task

    mt, run = hedge
    widths = [b["input_ids"].shape[1] for b in run.test]
    assert widths == sorted(widths)
    unsorted = TASKS["hedge"].batches(load_task("hedge").test[:300], mt.tokenizer, 64)
    assert accuracy(run.model, unsorted) == run.dense.accuracy


def test_unseen_domain_sets_are_prefixes_of_one_seeded_order():
    from attprune.experiments.pack import load_unseen

    ten, twenty = load_unseen("mr->tweets", n=10), load_unseen("mr->tweets", n=20)
    assert len(ten) == 10 and twenty[:10] == ten
    assert len(load_unseen("mr->tweets", n=None)) > 20
