"""Property-based tests (hypothesis): any scores and fractions give a valid plan that keeps
exactly the specified counts of the best units; on random tiny configs, the compacted model
computes what the masked one does."""

import copy

import torch
import transformers as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attprune
from attprune.attribution.scores import Scores, SiteScores

FRACTIONS = st.floats(min_value=0.0, max_value=0.999, allow_nan=False)


@st.composite
def random_scores(draw):
    """1-4 sites per kind, 1-12 units each, per-example scores with ties and zeros allowed."""
    sites = {}
    for kind in ("ffn", "heads"):
        for i in range(draw(st.integers(1, 4))):
            n = draw(st.integers(1, 12))
            examples = draw(st.integers(1, 3))
            values = draw(st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-6, 7.0]) | st.floats(-5, 5),
                                   min_size=n * examples, max_size=n * examples))
            stats = SiteScores.zeros(kind, n)
            stats.add(torch.tensor(values, dtype=torch.float32).view(examples, n))
            sites[f"{kind}.{i}"] = stats
    return Scores(sites)


def ranking(scores, path, rank_by):
    s = scores.sites[path]
    return {"abs": s.mean.abs(), "mean_abs": s.mean_abs, "signed": s.mean}[rank_by]


@settings(max_examples=60, deadline=None)
@given(scores=random_scores(), ffn=FRACTIONS, heads=FRACTIONS, rank_by=st.sampled_from(["abs", "mean_abs", "signed"]))
def test_layer_scope_keeps_exactly_the_best_units_of_every_site(scores, ffn, heads, rank_by):
    plan = attprune.make_plan(scores, ffn=ffn, heads=heads, scope="layer", rank_by=rank_by, min_keep=0)
    for path, site in scores.sites.items():
        n = site.sum.numel()
        fraction = ffn if site.kind == "ffn" else heads
        kept = plan.kept(path)
        assert kept.numel() == n - int(round(fraction * n))
        assert torch.equal(kept, kept.unique()) and (kept.numel() == 0 or 0 <= kept.min() <= kept.max() < n)
        values = ranking(scores, path, rank_by)
        dropped = torch.ones(n, dtype=torch.bool)
        dropped[kept] = False
        if kept.numel() and dropped.any():
            assert values[kept].min() >= values[dropped].max()


@settings(max_examples=60, deadline=None)
@given(scores=random_scores(), ffn=FRACTIONS, heads=FRACTIONS,
       normalize=st.sampled_from(["none", "layer", "l2"]), round_to=st.integers(1, 4),
       min_keep=st.integers(0, 2))
def test_global_scope_removes_the_requested_share_then_rounds(scores, ffn, heads, normalize, round_to, min_keep):
    plan = attprune.make_plan(scores, ffn=ffn, heads=heads, normalize=normalize, round_to=round_to,
                              min_keep=min_keep)
    for kind, fraction, kept in (("ffn", ffn, plan.ffn), ("heads", heads, plan.heads)):
        sizes = {p: s.sum.numel() for p, s in scores.sites.items() if s.kind == kind}
        for path, n in sizes.items():
            count = kept[path].numel()
            assert count <= n and (count >= min(min_keep, n))
            assert count in (0, n) or count % round_to == 0
        if round_to == 1 and min_keep == 0:
            total = sum(sizes.values())
            assert sum(kept[p].numel() for p in sizes) == total - int(round(fraction * total))


@st.composite
def tiny_bert(draw):
    heads = draw(st.integers(1, 4))
    cfg = tf.BertConfig(vocab_size=31, hidden_size=heads * draw(st.integers(2, 5)), num_attention_heads=heads,
                        num_hidden_layers=draw(st.integers(1, 2)), intermediate_size=draw(st.integers(1, 9)),
                        max_position_embeddings=16, num_labels=draw(st.integers(2, 3)))
    torch.manual_seed(draw(st.integers(0, 3)))
    return tf.BertForSequenceClassification(cfg).double().eval()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=tiny_bert(), ffn=FRACTIONS, heads=FRACTIONS, seed=st.integers(0, 9), min_keep=st.integers(0, 1))
def test_compact_equals_mask_on_random_configs(model, ffn, heads, seed, min_keep):
    plan = attprune.make_plan(attprune.attribute(model, None, method="random", seed=seed), ffn=ffn, heads=heads,
                              min_keep=min_keep)
    ids = torch.randint(1, 31, (2, 5), generator=torch.Generator().manual_seed(seed))
    inputs = {"input_ids": ids, "attention_mask": torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])}
    with torch.no_grad(), attprune.mask(model, plan):
        masked = model(**inputs).logits
    small = attprune.compact(copy.deepcopy(model), plan)
    with torch.no_grad():
        assert torch.allclose(small(**inputs).logits, masked, atol=1e-10)
