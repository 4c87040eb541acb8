"""wanda and flap: the scores equal a direct computation over all real calibration tokens,
resume to the uninterrupted scores, and plan/compact like any method."""

import pytest
import torch

import attprune
from attprune.attribution.methods.calibration import Wanda
from attprune.errors import ResumeMismatchError

import tiny


def calibration_batches(model):
    """Two padded batches of different lengths (3 + 2 examples)."""
    return [tiny.batch_for(model, batch_size=3, seq_len=7, seed=1),
            tiny.batch_for(model, batch_size=2, seq_len=5, seed=2)]


def real_token_inputs(model, batches):
    """Per site path: the inputs of its projection at every real token of every batch, [tokens, in]."""
    sites = attprune.find_sites(model)
    rows = {s.path: [] for s in sites}
    real = {}
    hooks = [model.get_submodule(s.path).register_forward_hook(
        lambda module, args, output, path=s.path: rows[path].append(args[0][real["mask"]])) for s in sites]
    for batch in batches:
        real["mask"] = batch["attention_mask"].bool()
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in hooks:
        h.remove()
    return sites, {p: torch.cat(r) for p, r in rows.items()}


def expected_scores(model, batches, method):
    sites, inputs = real_token_inputs(model, batches)
    n_examples = sum(b["input_ids"].shape[0] for b in batches)
    expected = {}
    for site in sites:
        x, w = inputs[site.path], model.get_submodule(site.path).weight.detach()  # x [tokens, in], w [out, in]
        if method == "wanda":  # FLAP's prune_wanda_sp: mean over rows of |W| * sqrt(sum of x^2 / sequences)
            per_feature = (w.abs() * (x.square().sum(0) / n_examples).sqrt()).mean(0)
        else:  # FLAP's WIFV: sample variance over tokens * squared column norm; a head sums the squares
            per_feature = x.var(0, unbiased=True) * w.square().sum(0)
            if site.kind == "heads":
                per_feature = per_feature.square()
        expected[site.path] = per_feature.view(site.n_units, site.unit_size).sum(1)
    return expected, n_examples


@pytest.mark.parametrize("method", ["wanda", "flap"])
@pytest.mark.parametrize("build", [tiny.llama, tiny.bert_cls], ids=["llama", "bert"])
def test_scores_equal_a_direct_computation_over_real_tokens(build, method):
    model = build()
    batches = calibration_batches(model)
    scores = attprune.attribute(model, batches, method=method, progress=False)
    expected, n_examples = expected_scores(model, batches, method)
    assert set(scores.ffn) | set(scores.heads) == set(expected) and scores.heads and scores.ffn
    for path, site in scores.sites.items():
        torch.testing.assert_close(site.mean, expected[path], rtol=1e-10, atol=0)
        assert site.count == n_examples and site.std.max() <= 1e-6 * expected[path].abs().max()
    assert scores.meta["method"] == method and scores.meta["n_examples"] == n_examples
    # padding counts nowhere, nor how the examples are batched: the padded row alone, its padding cut
    first = {k: v for k, v in batches[0].items() if k != "labels"}
    unpadded = [{k: v[:-1] for k, v in first.items()}, {k: v[-1:, :-2] for k, v in first.items()},
                {k: v for k, v in batches[1].items() if k != "labels"}]
    assert unpadded[1]["attention_mask"].all()
    rebatched = attprune.attribute(model, unpadded, method=method, target="prediction", progress=False)
    for path in expected:
        torch.testing.assert_close(rebatched.sites[path].mean, expected[path], rtol=1e-10, atol=0)

def test_resume_gives_the_uninterrupted_scores(tmp_path):
    model = tiny.llama()
    batches = [tiny.batch_for(model, batch_size=2, seq_len=6, seed=s) for s in range(4)]
    reference = attprune.attribute(model, batches, method="flap", progress=False)
    # uninterrupted, with a resume folder: the same, and the folder is cleared
    folder = tmp_path / "partial"
    same = attprune.attribute(model, batches, method="flap", resume_dir=folder, save_every=1, progress=False)
    assert not folder.exists()
    # interrupted after two batches, then resumed
    with pytest.raises(ZeroDivisionError):
        attprune.attribute(model, tiny.BreaksAt(batches, 2), method="flap", resume_dir=folder, save_every=1,
                           progress=False)
    saved = attprune.Scores.load(folder / "partial-rank0-of1.safetensors")
    assert saved.meta["next_batch"] == 2 and saved.n_examples == 4  # per-example moments, not unit scores
    resumed = attprune.attribute(model, batches, method="flap", resume_dir=folder, save_every=1, progress=False)
    for scores in (same, resumed):
        for path, s in reference.sites.items():
            assert scores.sites[path].count == s.count == 8
            torch.testing.assert_close(scores.sites[path].sum, s.sum, rtol=1e-12, atol=0)
    assert not folder.exists()


def test_resume_refuses_partial_sums_of_another_width(tmp_path, monkeypatch):
    model = tiny.llama()
    batches = [tiny.batch_for(model, batch_size=2, seq_len=6, seed=s) for s in range(4)]
    folder = tmp_path / "partial"
    with pytest.raises(ZeroDivisionError):
        attprune.attribute(model, tiny.BreaksAt(batches, 2), method="wanda", resume_dir=folder, save_every=1,
                           progress=False)
    monkeypatch.setattr(Wanda, "accumulator_size", lambda self, site: site.n_units)
    with pytest.raises(ResumeMismatchError, match="other shapes"):
        attprune.attribute(model, batches, method="wanda", resume_dir=folder, progress=False)


def test_a_wanda_plan_at_half_compacts_and_runs():
    model = tiny.llama()
    batch = tiny.batch_for(model)
    scores = attprune.attribute(model, calibration_batches(model), method="wanda", progress=False)
    plan = attprune.make_plan(scores, ffn=0.5, heads=0.5)
    n_before = sum(p.numel() for p in model.parameters())
    attprune.compact(model, plan)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.isfinite(logits).all() and sum(p.numel() for p in model.parameters()) < n_before


def test_token_reductions_do_not_apply():
    model = tiny.bert_cls()
    with pytest.raises(ValueError, match="reduce_tokens does not apply"):
        attprune.attribute(model, calibration_batches(model), method="wanda", reduce_tokens="mean", progress=False)
