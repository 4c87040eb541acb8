"""The other methods, the target modes, dtypes, determinism and replay edge cases."""

import pytest
import torch

import attprune
from attprune.attribution.quadrature import quadrature

import reference
import tiny


def sums(scores):
    return {p: s.sum for p, s in scores.sites.items()}


def test_grad_x_act_equals_one_step_ig_and_brute_force():
    model = tiny.bert_cls()
    batch = tiny.batch_for(model)
    gxa = attprune.attribute(model, [batch], method="grad_x_act", progress=False)
    one_step = attprune.attribute(model, [batch], method="ig", steps=1, quadrature="riemann_right", progress=False)
    for site in attprune.find_sites(model):
        expected = reference.brute_force_ig(model, batch, site, [1.0], [1.0])
        torch.testing.assert_close(gxa.sites[site.path].sum, expected.sum(0), rtol=1e-8, atol=1e-15)
        torch.testing.assert_close(one_step.sites[site.path].sum, expected.sum(0), rtol=1e-8, atol=1e-15)


def test_fisher_is_squared_mask_gradient_summed_over_examples():
    model = tiny.gpt2()
    batch = tiny.batch_for(model)
    fisher = attprune.attribute(model, [batch], method="fisher", progress=False)
    for site in attprune.find_sites(model):
        per_example = reference.brute_force_ig(model, batch, site, [1.0], [1.0])  # dF/dmask at mask = 1
        torch.testing.assert_close(fisher.sites[site.path].sum, per_example.square().sum(0), rtol=1e-8, atol=1e-20)
    with pytest.raises(ValueError, match="fisher"):
        attprune.attribute(model, [batch], method="fisher", reduce_tokens="mean", progress=False)


def test_activation_is_mean_abs_input_over_real_tokens():
    model = tiny.llama()
    batch = tiny.batch_for(model)
    scores = attprune.attribute(model, [batch], method="activation", reduce_tokens="mean", progress=False)
    for site in attprune.find_sites(model):
        x = reference.site_input(model, site.path, batch).abs()
        expected = reference.reduce_units(x / site.unit_size, site, batch["attention_mask"].bool(), "mean")
        torch.testing.assert_close(scores.sites[site.path].mean, expected.mean(0))


def test_magnitude_and_random_are_data_free():
    model = tiny.gpt2()
    mag = attprune.attribute(model, None, method="magnitude")
    site = attprune.find_sites(model, units=("heads",))[0]
    w = model.get_submodule(site.path).weight  # Conv1D: [in, out]
    expected = w.detach().float().view(site.n_units, site.unit_size, -1).square().sum((1, 2)).sqrt()
    torch.testing.assert_close(mag.heads[site.path], expected)
    r1 = attprune.attribute(model, None, method="random", seed=3)
    r2 = attprune.attribute(model, None, method="random", seed=3)
    r3 = attprune.attribute(model, None, method="random", seed=4)
    assert all(torch.equal(r1.sites[p].sum, r2.sites[p].sum) for p in r1.sites)
    assert not all(torch.equal(r1.sites[p].sum, r3.sites[p].sum) for p in r1.sites)
    with pytest.raises(ValueError, match="needs data"):
        attprune.attribute(model, None, method="ig")


@pytest.mark.parametrize("family", ["bert", "gpt2", "t5"])
def test_prediction_target_equals_label_target_on_predicted_labels(family):
    model = tiny.FAMILIES[family]()
    batch = tiny.batch_for(model)
    with torch.no_grad():
        kwargs = reference.model_kwargs(model, batch)
        logits = model(**kwargs).logits
    predicted = dict(batch)
    if logits.dim() == 2:
        predicted["labels"] = logits.argmax(-1)
    elif model.config.is_encoder_decoder:
        predicted["labels"] = logits.argmax(-1).masked_fill(batch["labels"] == -100, -100)
        predicted["decoder_input_ids"] = model._shift_right(batch["labels"])  # still teacher-forced
    else:
        shifted = torch.full_like(batch["input_ids"], -100)
        shifted[:, 1:] = logits.argmax(-1)[:, :-1]
        predicted["labels"] = shifted.masked_fill(batch["attention_mask"] == 0, -100)
    unsupervised = dict(batch)
    if not model.config.is_encoder_decoder:
        unsupervised.pop("labels")  # no labels needed (seq2seq keeps them only to teacher-force)
    by_prediction = attprune.attribute(model, [unsupervised], target="prediction", steps=3, progress=False)
    by_label = attprune.attribute(model, [predicted], target="label", steps=3, progress=False)
    for path in by_label.sites:
        torch.testing.assert_close(by_prediction.sites[path].sum, by_label.sites[path].sum)


def test_seq2seq_prediction_without_labels_generates_its_targets():
    model = tiny.t5()
    batch = tiny.batch_for(model, labels=False)
    scores = attprune.attribute(model, [batch], target="prediction", steps=2, progress=False)
    assert scores.n_examples == 3
    assert all(torch.isfinite(s.sum).all() for s in scores.sites.values())
    with pytest.raises(ValueError, match="needs labels or decoder_input_ids"):
        attprune.attribute(model, [batch], target="label", steps=2, progress=False)


def test_callable_target():
    model = tiny.bert_cls()
    batch = tiny.batch_for(model)

    def second_logit(outputs, batch):
        return outputs.logits[:, 1]

    scores = attprune.attribute(model, [batch], target=second_logit, steps=4, progress=False)
    # completeness for a callable: the sum over the FFN units of layer 1 = F(x) - F(0)
    site = attprune.find_sites(model, units=("ffn",))[-1]
    per = attprune.attribute(model, [batch], target=second_logit, steps=64, quadrature="gausslegendre",
                             units=("ffn",), progress=False).sites[site.path].sum.sum()
    x = reference.site_input(model, site.path, batch)
    kwargs = reference.model_kwargs(model, batch)
    with torch.no_grad():
        f_x = model(**kwargs).logits[:, 1].sum()
        h = model.get_submodule(site.path).register_forward_pre_hook(lambda m, a: (torch.zeros_like(x),))
        f_0 = model(**kwargs).logits[:, 1].sum()
        h.remove()
    torch.testing.assert_close(per, f_x - f_0, rtol=1e-4, atol=1e-9)
    assert scores.meta["target"] == "second_logit"
    with pytest.raises(ValueError, match="one value per example"):
        attprune.attribute(model, [batch], target=lambda o, b: o.logits.sum(), steps=2, progress=False)


def test_token_classification_sums_over_labelled_tokens():
    model = tiny.bert_token()
    batch = tiny.batch_for(model)
    alphas, weights = quadrature("riemann_right", 4)
    scores = attprune.attribute(model, [batch], steps=4, quadrature="riemann_right", progress=False)
    for site in attprune.find_sites(model):
        expected = reference.brute_force_ig(model, batch, site, alphas, weights).mean(0)
        torch.testing.assert_close(scores.sites[site.path].mean, expected, rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("rows,seq_len", [(1, 5), (4, 4), (5, 5), (2, 9)])
def test_replay_is_exact_for_any_batch_and_sequence_sizes(rows, seq_len):
    """Batch-major detection must not confuse batch rows with sequence positions (T5's
    [T, T, heads] bucket table when T == rows; a single row)."""
    model = tiny.t5()
    batch = tiny.batch_for(model, batch_size=rows, seq_len=seq_len)
    if rows == 1:
        batch["attention_mask"][:] = 1
    alphas, weights = quadrature("riemann_middle", 3)
    scores = attprune.attribute(model, [batch], steps=3, quadrature="riemann_middle", progress=False)
    for site in attprune.find_sites(model):
        expected = reference.brute_force_ig(model, batch, site, alphas, weights).sum(0)
        torch.testing.assert_close(scores.sites[site.path].sum, expected, rtol=1e-6, atol=1e-12)


def test_padding_does_not_change_an_example_s_scores():
    model = tiny.bert_cls()
    batch = tiny.batch_for(model, batch_size=2, seq_len=6)
    batch["attention_mask"][1, 4:] = 0
    padded = attprune.attribute(model, [{k: v[1:] for k, v in batch.items()}], steps=3, progress=False)
    trimmed = {k: v[1:, :4] if v.dim() == 2 else v[1:] for k, v in batch.items()}
    alone = attprune.attribute(model, [trimmed], steps=3, progress=False)
    for path in padded.sites:
        torch.testing.assert_close(padded.sites[path].sum, alone.sites[path].sum, rtol=1e-9, atol=1e-15)


def test_deterministic_and_batching_invariant():
    model = tiny.qwen2()
    batch = tiny.batch_for(model, batch_size=4)
    a = attprune.attribute(model, [batch], steps=3, progress=False)
    b = attprune.attribute(model, [batch], steps=3, progress=False)
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    c = attprune.attribute(model, halves, steps=3, progress=False)
    for path in a.sites:
        assert torch.equal(a.sites[path].sum, b.sites[path].sum)
        torch.testing.assert_close(c.sites[path].sum, a.sites[path].sum, rtol=1e-9, atol=1e-15)
        assert c.sites[path].count == 4


def test_model_state_is_restored():
    model = tiny.bert_cls(dtype=torch.float32)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attprune.attribute(model, [tiny.batch_for(model)], steps=2, progress=False)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "forward" not in model.bert.encoder.layer[0].__dict__


def test_float32_model_accumulates_in_float32_and_matches_float64():
    model64 = tiny.llama()
    model32 = tiny.llama(dtype=torch.float32)
    batch = tiny.batch_for(model64)
    s64 = attprune.attribute(model64, [batch], steps=4, progress=False)
    s32 = attprune.attribute(model32, [batch], steps=4, progress=False)
    for path, s in s64.sites.items():
        assert s32.sites[path].sum.dtype == torch.float32
        scale = s.sum.abs().max()
        torch.testing.assert_close(s32.sites[path].sum.double(), s.sum, rtol=0, atol=1e-4 * scale)


def test_bfloat16_autocast_keeps_float32_scores_and_ranks():
    model = tiny.bert_cls(dtype=torch.float32, initializer_range=0.3)
    batch = tiny.batch_for(model, batch_size=4, seq_len=9)
    full = attprune.attribute(model, [batch], steps=4, units=("ffn",), progress=False)
    low = attprune.attribute(model, [batch], steps=4, units=("ffn",), dtype=torch.bfloat16, progress=False)
    for path, s in full.sites.items():
        assert low.sites[path].sum.dtype == torch.float32
        a, b = s.mean.abs(), low.sites[path].mean.abs()
        ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
        assert torch.corrcoef(torch.stack([ra, rb]))[0, 1] > 0.9


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["ig", "grad_x_act", "activation"])
def test_causal_lm_answer_tokens_skip_what_cannot_matter_exactly(family, method, monkeypatch):
    """Labels on two middle tokens only: the batch is cut after them (gradient methods with a
    token sum) and logits are computed at the labelled positions only, with the scores of the
    full computation (brute force for IG; activation keeps every token)."""
    from attprune.attribution import runner as runner_module

    model = tiny.FAMILIES[family]()
    batch = tiny.batch_for(model, seq_len=9)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[:, 3:5] = batch["input_ids"][:, 3:5]  # "the answer": tokens 3 and 4 of 9
    batch["labels"] = labels
    seen = {}
    real_prepare = runner_module.Runner.prepare

    def spy(self, b, *a, **kw):
        clean = real_prepare(self, b, *a, **kw)
        seen.update(tokens=clean.inputs["input_ids"].shape[1], positions=clean.logit_positions)
        return clean

    monkeypatch.setattr(runner_module.Runner, "prepare", spy)
    scores = attprune.attribute(model, [batch], method=method, steps=3, quadrature="gausslegendre", progress=False)
    assert seen["tokens"] == (9 if method == "activation" else 5)
    assert seen["positions"].tolist() == [2, 3]  # logits at 2 and 3 predict tokens 3 and 4
    for site in attprune.find_sites(model):
        if method == "activation":
            x = reference.site_input(model, site.path, batch).abs()
            expected = reference.reduce_units(x / site.unit_size, site, batch["attention_mask"].bool(), "sum")
        else:
            alphas, weights = quadrature("gausslegendre", 3) if method == "ig" else ([1.0], [1.0])
            expected = reference.brute_force_ig(model, batch, site, alphas, weights)
        torch.testing.assert_close(scores.sites[site.path].sum, expected.sum(0), rtol=1e-8, atol=1e-14)


def _tail_token_counts(model, monkeypatch):
    """Spy: the token counts the last block's FFN runs on in the IG passes, per site attributed."""
    from attprune.attribution.methods import ig as ig_module

    tail = attprune.sites.first_token_tail(model)
    seen = {}
    real = ig_module.step_gradients

    def spy(runner, clean, site, *args, **kwargs):
        module = runner.model.get_submodule(tail[0] + ".intermediate")
        handle = module.register_forward_pre_hook(
            lambda m, args: seen.setdefault(site.path, set()).add(args[0].shape[1]))
        try:
            yield from real(runner, clean, site, *args, **kwargs)
        finally:
            handle.remove()

    monkeypatch.setattr(ig_module, "step_gradients", spy)
    return tail, seen


@pytest.mark.parametrize("family", ["bert_cls", "roberta_cls", "electra_cls"])
def test_first_token_classifiers_run_the_last_block_tail_on_one_token_exactly(family, monkeypatch):
    """A sequence classifier reads the first token of the last layer: for every site below that
    layer, IG runs the last layer from ``attention.output`` on one token, with the scores of the
    full computation (brute force, float64)."""
    model = getattr(tiny, family)()
    batch = tiny.batch_for(model, seq_len=9)
    tail, seen = _tail_token_counts(model, monkeypatch)
    scores = attprune.attribute(model, [batch], steps=3, quadrature="gausslegendre", progress=False)
    alphas, weights = quadrature("gausslegendre", 3)
    for site in attprune.find_sites(model):
        below = not site.path.startswith(tail[0] + ".")
        assert seen[site.path] == ({1} if below else {9}), site.path
        expected = reference.brute_force_ig(model, batch, site, alphas, weights)
        torch.testing.assert_close(scores.sites[site.path].sum, expected.sum(0), rtol=1e-8, atol=1e-14)


def test_a_head_that_reads_every_token_keeps_the_full_last_block(monkeypatch):
    """The shortcut is checked, not assumed: a BERT classifier whose pooler averages the tokens
    fails the check on the first batch and runs the last block on every token (still exact)."""
    model = tiny.bert_cls()
    model.bert.pooler.forward = lambda hidden: torch.tanh(model.bert.pooler.dense(hidden.mean(1)))
    batch = tiny.batch_for(model, seq_len=9)
    tail, seen = _tail_token_counts(model, monkeypatch)
    scores = attprune.attribute(model, [batch], steps=2, quadrature="gausslegendre", progress=False)
    assert len(seen) == 4 and all(counts == {9} for counts in seen.values())
    alphas, weights = quadrature("gausslegendre", 2)
    for site in attprune.find_sites(model):
        expected = reference.brute_force_ig(model, batch, site, alphas, weights)
        torch.testing.assert_close(scores.sites[site.path].sum, expected.sum(0), rtol=1e-8, atol=1e-14)


def test_token_classifiers_and_families_without_the_shortcut_run_every_token():
    from attprune.attribution.runner import Runner

    for model in (tiny.bert_token(), tiny.distilbert_cls(), tiny.llama_cls()):
        sites = attprune.find_sites(model)
        runner = Runner(model, sites, "label", dtype=None, replay_sites=True)
        runner.prepare(tiny.batch_for(model))
        assert runner.tail is None, type(model).__name__
