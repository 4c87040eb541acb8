"""make_plan: counts, scopes, normalisation, ranking, rounding, grouped KV; Plan files."""

import pytest
import torch

import attprune
from attprune.attribution.scores import Scores, SiteScores
from attprune.compact.cost import cost_summary, model_cost, plan_cost

import tiny


def fake_scores(values: dict[str, list[float]], kind="ffn", kv_heads=None) -> Scores:
    sites = {}
    for path, v in values.items():
        s = SiteScores.zeros(kind, len(v))
        s.add(torch.tensor([v]))
        sites[path] = s
    return Scores(sites, {"kv_heads": kv_heads or {}})


def test_layer_scope_removes_the_same_fraction_of_every_site():
    scores = fake_scores({"a": [5, 1, 4, 2, 3, 0, 9, 8, 7, 6], "b": [1, 2, 3, 4]})
    plan = attprune.make_plan(scores, ffn=0.5, scope="layer")
    assert plan.ffn["a"].tolist() == [0, 6, 7, 8, 9]
    assert plan.ffn["b"].tolist() == [2, 3]


def test_global_scope_with_and_without_normalisation():
    scores = fake_scores({"big": [10, 20, 30, 40], "small": [0.1, 0.2, 0.3, 0.4]})
    raw = attprune.make_plan(scores, ffn=0.5, scope="global", normalize="none", min_keep=0)
    assert raw.ffn["big"].numel() == 4 and raw.ffn["small"].numel() == 0
    norm = attprune.make_plan(scores, ffn=0.5, scope="global", normalize="layer")
    assert norm.ffn["big"].tolist() == [2, 3] and norm.ffn["small"].tolist() == [2, 3]
    assert raw.kept_fraction("ffn") == norm.kept_fraction("ffn") == 0.5


def test_rank_by_abs_mean_abs_and_signed():
    s = SiteScores.zeros("ffn", 3)
    s.add(torch.tensor([[-5.0, 1.0, 2.0], [5.0, 1.0, -2.0]]))  # means 0, 1, 0; mean |.| 5, 1, 2
    scores = Scores({"a": s})
    assert attprune.make_plan(scores, ffn=0.34, scope="layer", rank_by="abs").ffn["a"].tolist() in ([0, 1], [1, 2])
    assert attprune.make_plan(scores, ffn=0.34, scope="layer", rank_by="mean_abs").ffn["a"].tolist() == [0, 2]
    neg = fake_scores({"a": [-3.0, 0.5, -0.1]})
    assert attprune.make_plan(neg, ffn=0.34, scope="layer", rank_by="signed").ffn["a"].tolist() == [1, 2]
    assert attprune.make_plan(neg, ffn=0.34, scope="layer", rank_by="abs").ffn["a"].tolist() == [0, 1]


def test_round_to_and_min_keep():
    scores = fake_scores({"a": list(range(37))})
    plan = attprune.make_plan(scores, ffn=0.5, scope="layer", round_to=8)
    assert plan.ffn["a"].numel() == 16 and plan.ffn["a"].tolist() == list(range(21, 37))
    tiny_site = fake_scores({"a": [1.0, 2.0, 3.0]})
    assert attprune.make_plan(tiny_site, ffn=0.9, scope="layer", round_to=8).ffn["a"].numel() == 3
    model = tiny.llama()  # per kind: FFN widths rounded, heads not
    random_scores = attprune.attribute(model, None, method="random")
    per_kind = attprune.make_plan(random_scores, ffn=0.5, heads=0.5, round_to={"ffn": 8})
    assert all(v.numel() % 8 == 0 for v in per_kind.ffn.values())
    assert [v.numel() for v in per_kind.heads.values()] == \
        [v.numel() for v in attprune.make_plan(random_scores, ffn=0.5, heads=0.5).heads.values()]
    with pytest.raises(ValueError, match="round_to keys"):
        attprune.make_plan(random_scores, ffn=0.5, round_to={"neurons": 8})
    lopsided = fake_scores({"a": [100.0, 100.0], "b": [0.001, 0.002]})
    assert attprune.make_plan(lopsided, ffn=0.5, normalize="none").ffn["b"].numel() == 1  # min_keep=1
    assert attprune.make_plan(lopsided, ffn=0.5, normalize="none", min_keep=0).ffn["b"].numel() == 0
    assert attprune.make_plan(lopsided, ffn=0.5, normalize="none", min_keep=2).ffn["b"].numel() == 2


def test_grouped_kv_plans_keep_groups_even():
    # 6 query heads, 2 KV groups of 3
    values = {"o": [9.0, 8.0, 0.1, 0.2, 0.3, 7.0]}
    scores = fake_scores(values, kind="heads", kv_heads={"o": 2})
    two = attprune.make_plan(scores, heads=0.67, scope="layer")  # keep 2 heads
    assert two.heads["o"].tolist() == [0, 1]  # one group, 2 heads: the top pair
    four = attprune.make_plan(scores, heads=0.34, scope="layer")  # keep 4: 2 groups x 2
    assert four.heads["o"].tolist() == [0, 1, 4, 5]
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        kept = attprune.make_plan(scores, heads=fraction, scope="layer").heads["o"]
        counts = torch.unique(kept // 3, return_counts=True)[1]
        assert torch.all(counts == counts[0])


def test_make_plan_refuses_bad_input():
    scores = fake_scores({"a": [1.0, 2.0]})
    for bad in (-0.1, 1.0, 1.5, float("nan"), "half"):
        with pytest.raises(ValueError, match="fraction to remove in \\[0, 1\\)"):
            attprune.make_plan(scores, ffn=bad)
    with pytest.raises(ValueError, match="unknown scope"):
        attprune.make_plan(scores, scope="model")
    with pytest.raises(ValueError, match="round_to"):
        attprune.make_plan(scores, round_to=0)
    nan = fake_scores({"a": [1.0, float("nan")]})
    with pytest.raises(ValueError, match="NaN or inf; refusing to plan"):
        attprune.make_plan(nan, ffn=0.5)


def test_zero_fraction_keeps_everything_and_real_scores_plan():
    model = tiny.llama()
    scores = attprune.attribute(model, [tiny.batch_for(model)], steps=2, progress=False)
    plan = attprune.make_plan(scores)
    assert all(v.numel() == plan.sizes[p] for p, v in {**plan.ffn, **plan.heads}.items())
    plan = attprune.make_plan(scores, ffn=0.5, heads=0.5)
    assert 0.4 < plan.kept_fraction("ffn") < 0.6
    assert all(torch.unique(v // 3, return_counts=True)[1].unique().numel() == 1 for v in plan.heads.values())


def test_plan_save_load_and_mismatch(tmp_path):
    model = tiny.bert_cls()
    plan = attprune.make_plan(attprune.attribute(model, None, method="random"), ffn=0.3, heads=0.25)
    path = plan.save(tmp_path / "plan.json")
    loaded = attprune.Plan.load(path)
    assert all(torch.equal(loaded.ffn[p], v) for p, v in plan.ffn.items()) and loaded.meta == plan.meta
    with pytest.raises(attprune.PlanMismatchError, match="does not have; was the plan made for another model"):
        attprune.mask(tiny.gpt2(), plan)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(attprune.PlanMismatchError, match="not valid plan JSON"):
        attprune.Plan.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        attprune.Plan.load(tmp_path / "none.json")
    with pytest.raises(attprune.PlanMismatchError, match="sorted, unique"):
        attprune.Plan({"a": torch.tensor([3, 1])}, {}, {"a": 4})


def test_summary_reports_params_and_flops():
    model = tiny.gpt2(dtype=torch.float32)
    plan = attprune.make_plan(attprune.attribute(model, None, method="magnitude"), ffn=0.5, heads=0.5)
    text = cost_summary(model, plan)
    assert "parameters:" in text and "FLOPs per token at seq 128" in text and "ideal speedup" in text
    cost = plan_cost(model, plan)
    attprune.compact(model, plan)
    assert model_cost(model)[0] == cost["params_after"] == sum(p.numel() for p in model.parameters())
