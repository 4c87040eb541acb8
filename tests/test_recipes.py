"""The parts of an attribution recipe beyond the method: where IG's path starts (zero or the
mean activation), one path per site or one per kind (joint), objectives that compare the gold
answer with the task's others, and ranking by the root mean square; each against a plain
re-implementation (``reference.py``) in float64."""

import pytest
import torch

import attprune
from attprune.attribution.quadrature import quadrature
from attprune.batches import IGNORE_INDEX
from attprune.data import answer_batches
from attprune.errors import InputError

import reference
import tiny

NODES = quadrature("gausslegendre", 6)


def _batches(model, n=2):
    return [tiny.batch_for(model, seed=s) for s in range(1, n + 1)]


@pytest.mark.parametrize("family", ["llama", "bert_cls", "t5"])
def test_mean_baseline_is_ig_from_the_mean_input_over_the_data(family):
    model = getattr(tiny, family)()
    batches = _batches(model)
    scores = attprune.attribute(model, batches, steps=6, baseline="mean", progress=False)
    means = attprune.input_means(model, batches)
    for site in attprune.find_sites(model):
        start = reference.site_mean(model, site, batches)
        torch.testing.assert_close(scores.input_means[site.path], start, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(means[site.path], start, rtol=1e-12, atol=1e-14)
        expected = torch.cat([reference.brute_force_joint_ig(model, b, [site], *NODES, {site.path: start})[site.path]
                              for b in batches]).mean(0)
        torch.testing.assert_close(scores.sites[site.path].mean, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_joint_path_moves_every_site_of_a_kind_together(baseline):
    model = tiny.llama()
    batches = _batches(model)
    scores = attprune.attribute(model, batches, steps=6, path="joint", baseline=baseline, progress=False)
    for kind in ("ffn", "heads"):
        sites = attprune.find_sites(model, units=(kind,))
        starts = {s.path: reference.site_mean(model, s, batches) for s in sites} if baseline == "mean" else None
        expected = [reference.brute_force_joint_ig(model, b, sites, *NODES, starts) for b in batches]
        for site in sites:
            mean = torch.cat([e[site.path] for e in expected]).mean(0)
            torch.testing.assert_close(scores.sites[site.path].mean, mean, rtol=1e-8, atol=1e-10)


def test_joint_path_auto_steps_complete_the_kind_as_a_whole():
    """steps='auto': the scores of all sites of a kind sum to F(x) - F(every site at its start)."""
    model = tiny.llama()
    batch = tiny.batch_for(model)
    scores = attprune.attribute(model, [batch], path="joint", steps="auto", tolerance=1e-6, progress=False)
    for kind in ("ffn", "heads"):
        sites = attprune.find_sites(model, units=(kind,))
        handles = [model.get_submodule(s.path).register_forward_pre_hook(
            lambda m, args: (torch.zeros_like(args[0]),)) for s in sites]
        off = reference.objective(model, model(**reference.model_kwargs(model, batch)), batch["labels"]).detach()
        for h in handles:
            h.remove()
        full = reference.objective(model, model(**reference.model_kwargs(model, batch)), batch["labels"]).detach()
        total = sum(scores.sites[s.path].sum.sum() for s in sites)
        assert float(total) == pytest.approx(float((full - off).sum()), rel=1e-5)
        gaps = scores.meta["completeness"]
        assert all(gaps[s.path]["max_gap"] <= 1e-6 for s in sites if gaps[s.path]["stalled_examples"] == 0)


def _answer_batches(model, rows=3):
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, tiny.VOCAB, (n,), generator=g).tolist() for n in (5, 7, 4)[:rows]]
    choices = [[11, 40], [23], [57, 12, 8]]
    gold = [0, 2, 1]
    return answer_batches(prompts, [choices[k] for k in gold[:rows]], pad=0, batch_size=rows, choices=choices)


@pytest.mark.parametrize("target", ["normalized", "margin"])
def test_answer_targets_compare_the_gold_answer_with_the_others(target):
    model = tiny.llama()
    (batch,) = _answer_batches(model)
    assert batch["choices"].tolist() == [[11, 23, 57]] * 3
    scores = attprune.attribute(model, [batch], method="grad_x_act", target=target, progress=False)
    site = attprune.find_sites(model, units=("ffn",))[-1]
    fn = lambda outputs: reference.answer_objective(model, outputs, batch["labels"], batch["choices"], target)  # noqa
    model_batch = {k: v for k, v in batch.items() if k != "choices"}
    expected = reference.brute_force_joint_ig(model, model_batch, [site], [1.0], [1.0], objective_fn=fn)[site.path]
    torch.testing.assert_close(scores.sites[site.path].mean, expected.mean(0), rtol=1e-8, atol=1e-10)
    # IG with the same objective is complete: its unit scores sum to F(x) - F(site input 0), with F
    # the reference's objective (this compared nothing before: only shapes and finiteness)
    ig = attprune.attribute(model, [batch], method="ig", target=target, tolerance=1e-7, progress=False)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    x = reference.site_input(model, site.path, model_batch)
    with torch.no_grad():
        value = fn(model(**inputs))
        handle = model.get_submodule(site.path).register_forward_pre_hook(lambda m, a: (torch.zeros_like(x),))
        try:
            off = fn(model(**inputs))
        finally:
            handle.remove()
    assert value.shape == (3,) and (value - off).abs().min() > 1e-6
    assert float(ig.sites[site.path].sum.sum()) == pytest.approx(float((value - off).sum()), rel=1e-5)


def test_answer_targets_on_a_classifier_use_its_classes():
    model = tiny.bert_cls()
    batch = tiny.batch_for(model)
    site = attprune.find_sites(model, units=("ffn",))[0]
    for target in ("normalized", "margin"):
        scores = attprune.attribute(model, [batch], method="grad_x_act", target=target, progress=False)
        fn = lambda outputs: reference.answer_objective(model, outputs, batch["labels"], None, target)  # noqa
        expected = reference.brute_force_joint_ig(model, batch, [site], [1.0], [1.0], objective_fn=fn)[site.path]
        torch.testing.assert_close(scores.sites[site.path].mean, expected.mean(0), rtol=1e-8, atol=1e-10)


def test_answer_targets_need_choices_and_a_gold_answer_among_them():
    model = tiny.llama()
    (batch,) = _answer_batches(model)
    without = {k: v for k, v in batch.items() if k != "choices"}
    with pytest.raises(InputError, match="'choices' entry"):
        attprune.attribute(model, [without], method="fisher", target="margin", progress=False)
    wrong = dict(batch, choices=torch.tensor([[1, 2, 3]] * 3))
    with pytest.raises(InputError, match="not among the batch's choices"):
        attprune.attribute(model, [wrong], method="fisher", target="normalized", progress=False)
    with pytest.raises(InputError, match="differ in their first token"):
        answer_batches([[5, 6]], [[7]], pad=0, choices=[[7, 1], [7, 2]])


def test_rms_ranking_is_the_root_mean_square_of_per_example_scores():
    model = tiny.llama()
    batches = _batches(model, 3)
    scores = attprune.attribute(model, batches, method="grad_x_act", progress=False)
    fisher = attprune.attribute(model, batches, method="fisher", progress=False)
    per_example = []
    for batch in batches:
        site = attprune.find_sites(model, units=("ffn",))[0]
        per_example.append(reference.brute_force_ig(model, batch, site, [1.0], [1.0]))
    rms = torch.cat(per_example).square().mean(0).sqrt()
    torch.testing.assert_close(scores.sites[site.path].rms, rms, rtol=1e-8, atol=1e-12)
    # Taylor ranked by its root mean square keeps what fisher (the mean of its squares) keeps
    by_rms = attprune.make_plan(scores, ffn=0.4, rank_by="rms", normalize="none")
    by_fisher = attprune.make_plan(fisher, ffn=0.4, rank_by="mean_abs", normalize="none")
    assert all(torch.equal(by_rms.ffn[p], by_fisher.ffn[p]) for p in by_rms.ffn)


def test_recipe_settings_are_checked():
    model = tiny.llama()
    with pytest.raises(InputError, match="method='fisher' has none"):
        attprune.attribute(model, _batches(model), method="fisher", baseline="mean", progress=False)
    with pytest.raises(InputError, match="reads the data twice"):
        attprune.attribute(model, iter(_batches(model)), baseline="mean", progress=False)
    with pytest.raises(InputError, match="baseline"):
        attprune.AttributionConfig(baseline="median")


def test_mean_start_and_input_means_are_saved_with_the_scores(tmp_path):
    model = tiny.llama()
    scores = attprune.attribute(model, _batches(model), steps=4, baseline="mean", units=("ffn",), progress=False)
    path = scores.save(tmp_path / "s.safetensors")
    loaded = attprune.Scores.load(path)
    assert loaded.meta["baseline"] == "mean" and set(loaded.input_means) == set(scores.sites)
    assert all(torch.equal(loaded.input_means[p], scores.input_means[p]) for p in scores.sites)
    assert attprune.Scores.load(attprune.attribute(model, _batches(model), method="magnitude",
                                                   progress=False).save(tmp_path / "m.safetensors")).input_means is None


def test_prompt_labels_mark_only_the_answer():
    (batch,) = _answer_batches(tiny.llama(), rows=2)
    labelled = (batch["labels"] != IGNORE_INDEX).sum(1)
    assert labelled.tolist() == [2, 3]  # the gold answers' token counts


def test_the_model_kind_chooses_the_recipe_and_explicit_settings_win(monkeypatch):
    from dataclasses import replace

    from attprune.attribution import recipes

    # a causal-LM recipe unlike the encoders', so that which one ran is visible
    other = replace(recipes.CAUSAL_LM, attribution=dict(recipes.CAUSAL_LM.attribution, steps=3, baseline="mean"),
                    plan=dict(recipes.CAUSAL_LM.plan, normalize="none", rank_by="rms"))
    monkeypatch.setattr(recipes, "CAUSAL_LM", other)
    monkeypatch.setitem(recipes.RECIPES, other.name, other)
    llm, encoder = tiny.llama(), tiny.bert_cls()
    scores = attprune.attribute(llm, _batches(llm), units=("ffn",), progress=False)
    assert scores.meta["recipe"] == other.name and scores.meta["steps"] == 3 and scores.meta["baseline"] == "mean"
    plan = attprune.make_plan(scores, ffn=0.3)
    assert (plan.meta["recipe"], plan.meta["normalize"], plan.meta["rank_by"]) == (other.name, "none", "rms")
    assert attprune.make_plan(scores, ffn=0.3, normalize="layer").meta["normalize"] == "layer"  # given: it wins
    explicit = attprune.attribute(llm, _batches(llm), units=("ffn",), steps=2, baseline="zero", progress=False)
    assert (explicit.meta["steps"], explicit.meta["baseline"]) == (2, "zero")
    plain = attprune.attribute(encoder, [tiny.batch_for(encoder)], units=("ffn",), progress=False)
    assert plain.meta["recipe"] == recipes.ENCODER.name and plain.meta["steps"] == "auto"
    assert attprune.make_plan(plain, ffn=0.3).meta["normalize"] == "layer"
    forced = attprune.attribute(encoder, [tiny.batch_for(encoder)], units=("ffn",), recipe=other.name, progress=False)
    assert forced.meta["recipe"] == other.name and forced.meta["steps"] == 3
    # a recipe field a method does not read keeps its neutral value (fisher has no path)
    fisher = attprune.attribute(llm, _batches(llm), method="fisher", progress=False)
    assert fisher.meta["baseline"] == "zero" and fisher.meta["recipe"] == other.name
    with pytest.raises(InputError, match="unknown recipe"):
        attprune.AttributionConfig(recipe="nope")


def test_the_causal_lm_recipe_plans_ig_by_root_mean_square_without_normalisation():
    """The study's winner (bench/README.md): IG ranked by rms, fisher by its own mean square,
    both globally without per-site normalisation; encoders keep their plan."""
    llm = tiny.llama()
    ig = attprune.attribute(llm, _batches(llm), units=("ffn",), progress=False)
    fisher = attprune.attribute(llm, _batches(llm), units=("ffn",), method="fisher", progress=False)
    assert (ig.meta["recipe"], ig.meta["steps"], ig.meta["quadrature"]) == ("causal-lm/1", 4, "gausslegendre")
    chosen = attprune.make_plan(ig, ffn=0.4)
    assert (chosen.meta["rank_by"], chosen.meta["normalize"], chosen.meta["scope"]) == ("rms", "none", "global")
    explicit = attprune.make_plan(ig, ffn=0.4, rank_by="rms", normalize="none", scope="global")
    assert all(torch.equal(chosen.ffn[p], explicit.ffn[p]) for p in chosen.ffn)
    assert (attprune.make_plan(fisher, ffn=0.4).meta["rank_by"], attprune.make_plan(fisher, ffn=0.4).meta["normalize"]) \
        == ("mean_abs", "none")
    encoder = tiny.bert_cls()
    plain = attprune.attribute(encoder, [tiny.batch_for(encoder)], units=("ffn",), progress=False)
    assert (attprune.make_plan(plain, ffn=0.3).meta["rank_by"], attprune.make_plan(plain, ffn=0.3).meta["normalize"]) \
        == ("mean_abs", "layer")
