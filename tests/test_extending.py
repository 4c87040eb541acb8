"""The two extension points, used from scratch as the README shows: a new architecture family
(one ArchSpec: scored, masked, compacted, reloaded) and a new attribution method (one class)."""

import pytest
import torch

import attprune
from attprune.architectures import unregister_architecture
from attprune.attribution.methods import unregister_method
from attprune.ops.reference import per_unit, reduce_tokens

import tiny
from toy_family import TOY_SPEC, ToyConfig, ToyForSequenceClassification


@pytest.fixture()
def toy():
    attprune.register_architecture(TOY_SPEC)
    torch.manual_seed(0)
    model = ToyForSequenceClassification(ToyConfig()).double().eval()
    yield model
    unregister_architecture(TOY_SPEC)


def toy_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[-1, 6:] = 0
    return {"input_ids": torch.randint(0, 41, (3, 9), generator=g), "attention_mask": mask,
            "labels": torch.tensor([0, 1, 1])}


def test_a_family_registered_from_scratch_is_scored_masked_compacted_and_reloaded(toy, tmp_path):
    batch = toy_batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    sites = attprune.find_sites(toy)
    assert [s.path for s in sites] == [f"blocks.{i}.{p}" for i in range(3) for p in ("attn.out", "down")]
    scores = attprune.attribute(toy, [batch], steps=3, progress=False)
    assert set(scores.sites) == {s.path for s in sites} and scores.n_examples == 3
    # block 1 loses every head (its attention becomes NoHeadAttention), the others some heads and neurons
    kept_heads = {"blocks.0.attn.out": torch.tensor([0, 2]), "blocks.1.attn.out": torch.tensor([], dtype=torch.long),
                  "blocks.2.attn.out": torch.tensor([1, 2, 3])}
    plan = attprune.Plan(attprune.make_plan(scores, ffn=0.5).ffn, kept_heads, {s.path: s.n_units for s in sites})
    with torch.no_grad(), attprune.mask(toy, plan):
        masked = toy(**inputs).logits
    attprune.compact(toy, plan)
    with torch.no_grad():
        torch.testing.assert_close(toy(**inputs).logits, masked, rtol=1e-10, atol=1e-12)
    assert toy.blocks[0].attn.n_heads == 2 and toy.blocks[0].attn.q.out_features == 10
    assert type(toy.blocks[1].attn).__name__ == "NoHeadAttention"
    attprune.save_pretrained(toy, tmp_path / "toy")
    reloaded = attprune.from_pretrained(tmp_path / "toy")
    assert type(reloaded) is ToyForSequenceClassification and reloaded.blocks[2].down.in_features == \
        toy.blocks[2].down.in_features
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, masked, rtol=1e-10, atol=1e-12)


def test_a_family_without_a_head_layout_is_scored_but_not_head_compacted(toy):
    import dataclasses

    bare = dataclasses.replace(TOY_SPEC, heads=None)
    attprune.register_architecture(bare, override=True)
    try:
        scores = attprune.attribute(toy, None, method="magnitude")
        with pytest.raises(attprune.UnsupportedModelError, match="without a head layout.*HeadLayout"):
            attprune.compact(toy, attprune.make_plan(scores, heads=0.5))
        plan = attprune.make_plan(scores, ffn=0.5)
        attprune.compact(toy, plan)  # FFN compaction needs no layout
        assert [b.down.in_features for b in toy.blocks] == [plan.ffn[f"blocks.{i}.down"].numel() for i in range(3)]
        assert sum(b.down.in_features for b in toy.blocks) < 3 * 23
    finally:
        unregister_architecture(bare)


class InputNorm(attprune.Method):
    """L2 norm of each unit's input features, summed over real tokens (the README example)."""

    name = "input_norm"

    def score_batch(self, runner, clean, chunk):
        for site in runner.sites:
            x = clean.site_inputs[site.path].to(runner.acc_dtype)
            per_token = per_unit(x.square(), site.unit_size).sqrt()
            yield site.path, reduce_tokens(per_token, runner.token_mask(clean, site), "sum")


def test_a_method_registered_from_scratch_runs_through_attribute_and_the_cli():
    from attprune.cli import build_parser

    attprune.register_method(InputNorm)
    try:
        model = tiny.llama()
        batch = tiny.batch_for(model)
        scores = attprune.attribute(model, [batch], method="input_norm", progress=False)
        assert scores.meta["method"] == "input_norm"
        for site in attprune.find_sites(model):
            seen = {}
            hook = model.get_submodule(site.path).register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
            with torch.no_grad():
                model(**{k: v for k, v in batch.items() if k != "labels"})
            hook.remove()
            norms = seen["x"].view(*seen["x"].shape[:2], site.n_units, site.unit_size).norm(dim=-1)
            expected = (norms * batch["attention_mask"][..., None]).sum(1)
            torch.testing.assert_close(scores.sites[site.path].sum, expected.sum(0))
        score = build_parser()._subparsers._group_actions[0].choices["score"]
        assert "input_norm" in next(a for a in score._actions if a.dest == "method").choices
        with pytest.raises(ValueError, match="already registered"):
            attprune.register_method(type("Other", (attprune.Method,), {"name": "input_norm"}))
    finally:
        unregister_method("input_norm")
    with pytest.raises(ValueError, match="unknown method 'input_norm'"):
        attprune.attribute(tiny.llama(), [tiny.batch_for(tiny.llama())], method="input_norm", progress=False)
