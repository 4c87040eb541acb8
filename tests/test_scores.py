"""Scores: statistics, save/load round trip, merging, corrupt files."""

import pytest
import torch

import attprune
from attprune.attribution.scores import SiteScores

import tiny


def test_statistics_of_known_values():
    s = SiteScores.zeros("ffn", 3)
    s.add(torch.tensor([[1.0, -2.0, 0.0], [3.0, 2.0, 0.0]]))
    torch.testing.assert_close(s.mean, torch.tensor([2.0, 0.0, 0.0]))
    torch.testing.assert_close(s.mean_abs, torch.tensor([2.0, 2.0, 0.0]))
    torch.testing.assert_close(s.std, torch.tensor([1.0, 2.0, 0.0]))
    assert s.count == 2
    with pytest.raises(ValueError, match="expected"):
        s.add(torch.zeros(2, 4))


def test_save_load_round_trip(tmp_path):
    model = tiny.bert_cls(dtype=torch.float32)
    scores = attprune.attribute(model, [tiny.batch_for(model)], steps=2, progress=False)
    path = scores.save(tmp_path / "s.safetensors")
    loaded = attprune.Scores.load(path)
    assert loaded.meta["method"] == "ig" and loaded.meta["steps"] == 2
    assert set(loaded.ffn) == set(scores.ffn) and set(loaded.heads) == set(scores.heads)
    for p, s in scores.sites.items():
        for stat in ("sum", "sum_abs", "sum_sq"):
            assert torch.equal(getattr(loaded.sites[p], stat), getattr(s, stat))
        assert loaded.sites[p].count == s.count and loaded.sites[p].kind == s.kind


def test_merge_equals_one_run_over_all_examples():
    model = tiny.distilbert_cls()
    batch = tiny.batch_for(model, batch_size=4)
    first = attprune.attribute(model, [{k: v[:1] for k, v in batch.items()}], steps=2, progress=False)
    rest = attprune.attribute(model, [{k: v[1:] for k, v in batch.items()}], steps=2, progress=False)
    whole = attprune.attribute(model, [batch], steps=2, progress=False)
    merged = first.merge(rest)
    assert merged.n_examples == 4
    for p, s in whole.sites.items():
        torch.testing.assert_close(merged.sites[p].sum, s.sum, rtol=1e-9, atol=1e-15)
        torch.testing.assert_close(merged.sites[p].sum_sq, s.sum_sq, rtol=1e-9, atol=1e-20)
    other = attprune.attribute(model, [batch], steps=3, progress=False)
    with pytest.raises(ValueError, match="different steps"):
        first.merge(other)


def test_load_refuses_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        attprune.Scores.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a readable attprune scores file"):
        attprune.Scores.load(bad)
    from safetensors.torch import save_file
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an attprune scores file"):
        attprune.Scores.load(foreign)
    good = tmp_path / "good.safetensors"
    model = tiny.bert_cls(dtype=torch.float32)
    attprune.attribute(model, None, method="magnitude").save(good)
    good.write_bytes(good.read_bytes()[:-10])  # truncated
    with pytest.raises(ValueError, match="re-run"):
        attprune.Scores.load(good)


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model = tiny.bert_cls(dtype=torch.float32)
    path = tmp_path / "s.safetensors"
    attprune.attribute(model, None, method="magnitude").save(path)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("attprune.attribution.scores.save_file", explode)
    with pytest.raises(OSError):
        attprune.attribute(model, None, method="random").save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


def test_summary_mentions_every_kind():
    model = tiny.gpt2(dtype=torch.float32)
    text = attprune.attribute(model, None, method="magnitude").summary()
    assert "ffn: 2 sites, 70 units" in text and "heads: 2 sites, 8 units" in text


def test_the_order_of_units_is_not_a_setting():
    """("heads", "ffn") is ("ffn", "heads"): runs of either merge and resume into each other."""
    a = attprune.AttributionConfig(units=("heads", "ffn"))
    assert a.units == ("ffn", "heads") and a.result_settings() == attprune.AttributionConfig().result_settings()


def test_join_of_per_kind_runs_equals_one_run_of_both_kinds():
    model = tiny.llama()  # grouped KV heads: the joined scores must keep them grouped in plans
    batches = [tiny.batch_for(model)]
    ffn = attprune.attribute(model, batches, method="fisher", units=("ffn",), progress=False)
    heads = attprune.attribute(model, batches, method="fisher", units=("heads",), progress=False)
    whole = attprune.attribute(model, batches, method="fisher", units=("ffn", "heads"), progress=False)
    joined = ffn.join(heads)
    assert set(joined.sites) == set(whole.sites) and joined.meta["kv_heads"] == whole.meta["kv_heads"]
    for p, s in whole.sites.items():
        torch.testing.assert_close(joined.sites[p].sum, s.sum, rtol=1e-12, atol=0)
    mine, reference = attprune.make_plan(joined, ffn=0.4, heads=0.5), attprune.make_plan(whole, ffn=0.4, heads=0.5)
    for path in whole.sites:
        assert torch.equal(mine.kept(path), reference.kept(path))
    with pytest.raises(ValueError, match="share sites"):
        ffn.join(whole)
    with pytest.raises(ValueError, match="different method"):
        ffn.join(attprune.attribute(model, batches, method="grad_x_act", units=("heads",), progress=False))
