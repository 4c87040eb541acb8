"""``positions``: attribution at chosen tokens only, and the knowledge-neurons recipe built from
public options, each against a from-scratch float64 computation.

The references here use only the model, hooks and autograd: the chosen positions are built
by hand, the interpolation is a forward pre-hook that scales the site input at those
positions only, and the KN loop follows Dai et al. (2022) as the EleutherAI library runs it.
"""

import os

import pytest
import torch

import attprune
from attprune import ops
from attprune.attribution.quadrature import quadrature
from attprune.cli import build_parser, settings_from_args
from attprune.ops import reference as ops_reference

import reference
import tiny

MASK_ID = 4  # the [MASK] token of the cloze batches (any id of the tiny vocabulary)


# -- from-scratch references -----------------------------------------------------------------

def log_prob(model, outputs, batch):
    return reference.objective(model, outputs, batch["labels"])


def scratch_ig(model, batch, site, alphas, weights, chosen, objective=log_prob, reduce="sum"):
    """Per-example IG of one site, the site input scaled by alpha at ``chosen`` ([B, T]) only,
    one full forward/backward per node; [B, units]."""
    x = reference.site_input(model, site.path, batch)
    where = chosen[..., None]
    total = torch.zeros_like(x)
    module = model.get_submodule(site.path)
    for alpha, weight in zip(alphas, weights):
        scaled = (alpha * x).requires_grad_(True)
        handle = module.register_forward_pre_hook(lambda m, args: (torch.where(where, scaled, x),))
        try:
            outputs = model(**reference.model_kwargs(model, batch))
        finally:
            handle.remove()
        (grad,) = torch.autograd.grad(objective(model, outputs, batch).sum(), scaled)
        total += weight * grad
    return reference.reduce_units(x * total, site, chosen, reduce)


def site_inputs_and_grads(model, batch, sites, objective=log_prob):
    """Every site's input X and dF/dX from one forward/backward (a zero leaf added to each input:
    its gradient is dF/dX, through every path)."""
    inputs, zeros, handles = {}, {}, []
    for site in sites:
        def hook(m, args, path=site.path):
            inputs[path] = args[0].detach()
            zeros[path] = torch.zeros_like(inputs[path], requires_grad=True)
            return (args[0] + zeros[path],)
        handles.append(model.get_submodule(site.path).register_forward_pre_hook(hook))
    try:
        outputs = model(**reference.model_kwargs(model, batch))
    finally:
        for h in handles:
            h.remove()
    grads = torch.autograd.grad(objective(model, outputs, batch).sum(), [zeros[s.path] for s in sites])
    return {s.path: (inputs[s.path], g) for s, g in zip(sites, grads)}


def last_real(batch):
    mask = batch["attention_mask"].bool()
    chosen = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        chosen[b, int(mask[b].nonzero().max())] = True
    return chosen


def random_positions(batch, seed=7):
    real = batch["attention_mask"].bool()
    chosen = (torch.rand(real.shape, generator=torch.Generator().manual_seed(seed)) < 0.4) & real
    chosen[:, 0] = True  # every example keeps one
    return chosen


def assert_scores(scores, per_example: dict, rtol=1e-7):
    """The run's per-site sums (signed, absolute, squared) are those of the reference's per-example scores."""
    for path, expected in per_example.items():
        got = scores.sites[path]
        scale = expected.abs().max().item() + 1e-300
        for name, value in (("sum", expected.sum(0)), ("sum_abs", expected.abs().sum(0)),
                            ("sum_sq", expected.square().sum(0))):
            torch.testing.assert_close(getattr(got, name), value, rtol=rtol,
                                       atol=1e-10 * scale ** (2 if name == "sum_sq" else 1),
                                       msg=lambda m: f"{path} {name}: {m}")


# -- (a) positions equals the full computation restricted by hand ------------------------------

def llama_batch(model):
    """Padded (last example shorter), labelled up to column 4 only: a causal LM's batch is then cut
    after its last labelled token, and only labelled positions' logits are kept."""
    batch = tiny.batch_for(model)
    batch["labels"][:, 5:] = -100
    batch["labels"][0, 1:3] = -100
    return batch


def llama_cases(batch):
    labelled = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    labelled[:, :-1] = batch["labels"][:, 1:] != -100  # the logits at t predict the label at t + 1
    chosen = random_positions(batch)
    chosen[:, 5:] = batch["attention_mask"][:, 5:].bool()  # also positions after the cut (scores: 0)
    return [("labelled", labelled), (lambda b: chosen.clone(), chosen), ("batch", chosen)]


@pytest.mark.parametrize("case", range(3), ids=["labelled", "callable", "batch"])
def test_ig_at_positions_equals_from_scratch_llama(case):
    model = tiny.llama()
    batch = llama_batch(model)
    positions, chosen = llama_cases(batch)[case]
    given = dict(batch, attribution_positions=chosen) if positions == "batch" else batch
    alphas, weights = quadrature("gausslegendre", 3)
    scores = attprune.attribute(model, [given], steps=3, positions=positions, progress=False)
    chosen = chosen & batch["attention_mask"].bool()
    assert_scores(scores, {s.path: scratch_ig(model, batch, s, alphas, weights, chosen)
                           for s in attprune.find_sites(model)})


def next_token_log_prob(outputs, batch):
    """A callable target: log p(token 5) predicted at each example's last real token."""
    last = batch["attention_mask"].sum(1) - 1
    logits = outputs.logits[torch.arange(len(last)), last]
    return torch.log_softmax(logits.double(), -1)[:, 5]


def test_ig_at_the_last_token_with_a_callable_target_llama():
    model = tiny.llama()
    batch = tiny.batch_for(model)
    alphas, weights = quadrature("riemann_right", 3)
    scores = attprune.attribute(model, [batch], steps=3, quadrature="riemann_right", positions="last",
                                target=next_token_log_prob, progress=False)
    objective = lambda model, outputs, batch: next_token_log_prob(outputs, batch)  # noqa: E731
    assert_scores(scores, {s.path: scratch_ig(model, batch, s, alphas, weights, last_real(batch), objective)
                           for s in attprune.find_sites(model)})


@pytest.mark.parametrize("reduce,positions", [("sum", "callable"), ("mean", "callable"), ("sum", "last")])
def test_ig_at_positions_equals_from_scratch_bert_classifier(reduce, positions):
    model = tiny.bert_cls()
    batch = tiny.batch_for(model)
    chosen = random_positions(batch, seed=3) if positions == "callable" else last_real(batch)
    alphas, weights = quadrature("riemann_middle", 4)
    scores = attprune.attribute(model, [batch], steps=4, quadrature="riemann_middle", reduce_tokens=reduce,
                                positions=(lambda b: chosen) if positions == "callable" else positions,
                                progress=False)
    assert_scores(scores, {s.path: scratch_ig(model, batch, s, alphas, weights, chosen, reduce=reduce)
                           for s in attprune.find_sites(model)})


def test_positions_all_is_the_default_and_labelled_covers_every_scored_token():
    """On a causal LM labelled at every real token, 'labelled' leaves out only positions F
    cannot see: the scores equal the default's exactly."""
    model = tiny.llama()
    batch = tiny.batch_for(model)
    default = attprune.attribute(model, [batch], steps=3, progress=False)
    for positions in ("all", "labelled"):
        scores = attprune.attribute(model, [batch], steps=3, positions=positions, progress=False)
        for path, s in default.sites.items():
            torch.testing.assert_close(scores.sites[path].sum, s.sum, rtol=1e-12, atol=1e-15)
    assert scores.meta["positions"] == "labelled"


def test_auto_steps_check_completeness_at_the_chosen_positions():
    """steps='auto' compares the scores with F(x) - F(site off at the chosen tokens only): its
    gaps stay within the tolerance (against the site off everywhere they would not, at some sites);
    the gaps are recomputed here from the model, not only read from the run's record."""
    model = tiny.llama()
    batch = llama_batch(model)
    chosen = random_positions(batch)
    scores = attprune.attribute(model, [batch], positions=lambda b: chosen, steps="auto", progress=False)
    for path, gaps in scores.meta["completeness"].items():
        assert gaps["max_gap"] <= 1e-2, (path, gaps)
    # the same, computed here rather than read from the run's own record: the per-example gaps are
    # <= 1e-2 of mean |F(x) - F(off)|, so the summed scores are within 1e-2 of sum |F(x) - F(off)|
    real, distinguishes = batch["attention_mask"].bool(), []
    with torch.no_grad():
        f_x = reference.objective(model, model(**reference.model_kwargs(model, batch)), batch["labels"])
    for site in attprune.find_sites(model):
        x = reference.site_input(model, site.path, batch)
        total = float(scores.sites[site.path].sum.sum())
        at_chosen = f_x - reference.objective_with_site(model, batch, site.path, x.masked_fill(chosen[..., None], 0))
        everywhere = f_x - reference.objective_with_site(model, batch, site.path, x.masked_fill(real[..., None], 0))
        assert abs(total - float(at_chosen.sum())) <= 1e-2 * float(at_chosen.abs().sum()), site.path
        distinguishes.append(abs(total - float(everywhere.sum())) > 1e-2 * float(everywhere.abs().sum()))
    assert any(distinguishes)  # the check can fail: against the site off everywhere it would, at some site


@pytest.mark.parametrize("method", ["grad_x_act", "fisher", "activation"])
@pytest.mark.parametrize("family", ["llama", "bert"])
def test_embedding_path_methods_reduce_over_the_chosen_positions(method, family):
    model = tiny.FAMILIES[family]()
    batch = llama_batch(model) if family == "llama" else tiny.batch_for(model)
    chosen = random_positions(batch, seed=11)
    sites = attprune.find_sites(model)
    scores = attprune.attribute(model, [batch], method=method, positions=lambda b: chosen, progress=False)
    expected = {}
    for path, (x, grad) in site_inputs_and_grads(model, batch, sites).items():
        site = next(s for s in sites if s.path == path)
        if method == "activation":
            expected[path] = reference.reduce_units(x.abs() / site.unit_size, site, chosen)
        else:
            per_example = reference.reduce_units(x * grad, site, chosen)
            expected[path] = per_example.square() if method == "fisher" else per_example
    assert_scores(scores, expected)


def test_conductance_reduces_over_the_chosen_positions():
    """Conductance's path scales the embeddings of every token; only its token sum is restricted:
    sum over the chosen t of sum_k dF/dX(a_k) (X(a_k+1) - X(a_k)), written out by hand."""
    model = tiny.bert_cls()
    batch = tiny.batch_for(model)
    chosen = random_positions(batch, seed=4)
    sites = attprune.find_sites(model)
    alphas, _ = quadrature("riemann_trapezoid", 5)  # conductance with steps=4: 5 nodes
    scores = attprune.attribute(model, [batch], method="conductance", steps=4, quadrature="riemann_trapezoid",
                                positions=lambda b: chosen, progress=False)
    path = []
    for alpha in alphas:
        handle = model.bert.embeddings.register_forward_hook(lambda m, a, out, alpha=alpha: alpha * out)
        try:
            path.append(site_inputs_and_grads(model, batch, sites))
        finally:
            handle.remove()
    expected = {}
    for site in sites:
        per_token = sum(path[k][site.path][1] * (path[k + 1][site.path][0] - path[k][site.path][0])
                        for k in range(len(alphas) - 1))
        expected[site.path] = reference.reduce_units(per_token, site, chosen)
    assert_scores(scores, expected)


def _need(backend):
    """Skip where ``backend`` cannot run here, as tests/test_kernels.py does: a missing native
    op fails instead under ATTPRUNE_REQUIRE_NATIVE=1 (and any skip fails under ATTPRUNE_STRICT=1)."""
    why = ops.unavailable(backend, torch.device("cpu"))
    if why is None:
        return
    if backend == "native" and os.environ.get("ATTPRUNE_REQUIRE_NATIVE") == "1":
        pytest.fail(f"ATTPRUNE_REQUIRE_NATIVE=1 but {why}")
    pytest.skip(why)


@pytest.mark.parametrize("backend", ["triton", "native"])
def test_fast_backends_agree_with_torch_at_positions(backend):
    _need(backend)
    model = tiny.llama(dtype=torch.float32)
    batch = llama_batch(model)
    chosen = random_positions(batch)
    run = lambda name: attprune.attribute(model, [batch], steps=3, positions=lambda b: chosen,  # noqa: E731
                                          backend=name, progress=False)
    expected, got = run("torch"), run(backend)
    assert got.meta["backend"] == backend
    for path, s in expected.sites.items():
        torch.testing.assert_close(got.sites[path].sum, s.sum, rtol=1e-4, atol=1e-5 * s.sum_abs.max().item())


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_interpolation_at_positions_keeps_the_other_tokens_exactly(with_bias, backend):
    if backend != "torch":
        _need(backend)  # was: Triton silently left out where it could not run
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 5, 19, generator=g)
    bias = torch.randn(19, generator=g) if with_bias else None
    chosen = torch.rand(3, 5, generator=g) < 0.5
    alphas = torch.tensor([0.0, 0.3, 1.0])
    expected = ops_reference.ig_interpolate(z, bias, alphas).view(3, 3, 5, 19)
    expected = torch.where(chosen[None, :, :, None], expected, z[None]).view(9, 5, 19)
    got = ops.ig_interpolate(z, bias, alphas, positions=chosen, backend=backend)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    steps = got.view(3, 3, 5, 19)
    assert torch.equal(steps[:, ~chosen], z[~chosen][None].expand(3, -1, -1))  # bit for bit


# -- (b) the knowledge-neurons recipe equals a from-scratch loop ----------------------------

KN_STEPS = 5


def kn_recipe(model, batches, positions="labelled"):
    """Knowledge neurons (Dai et al. 2022) from public options: README, "Recipes"."""
    return attprune.attribute(model, batches, method="ig", units=("ffn",), positions=positions,
                              quadrature="linspace", steps=KN_STEPS, target="probability", reduce_tokens="sum",
                              progress=False)


def kn_from_scratch(model, ids, position, target, activation_module, steps=KN_STEPS):
    """KN's score of every intermediate neuron of one layer for one unpadded example: the FFN
    activation w at ``position`` scaled by k / (m - 1), k = 0..m-1, there only; the gradient of
    the target token's softmax probability (read at ``position``) summed over the m nodes;
    score = w * sum / m."""
    captured = {}
    handle = activation_module.register_forward_hook(lambda m, a, out: captured.setdefault("w", out.detach()))
    with torch.no_grad():
        model(input_ids=ids[None])
    handle.remove()
    w = captured["w"][0, position]
    total = torch.zeros_like(w)
    for k in range(steps):
        scaled = (k / (steps - 1) * w).requires_grad_(True)

        def replace(m, a, out):
            out = out.clone()
            out[0, position] = scaled
            return out
        handle = activation_module.register_forward_hook(replace)
        try:
            logits = model(input_ids=ids[None]).logits
        finally:
            handle.remove()
        probability = torch.softmax(logits[0, position], -1)[target]
        (grad,) = torch.autograd.grad(probability, scaled)
        total += grad
    return w * total / steps


def cloze_batch():
    """Three cloze probes, one [MASK] each (the last example padded): labels hold the answer at
    the [MASK] and -100 elsewhere, as a masked LM's loss takes them."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(MASK_ID + 1, tiny.VOCAB, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[-1, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    where = [2, 6, 1]
    answers = [11, 42, 80]
    labels = torch.full_like(ids, -100)
    for b, (t, answer) in enumerate(zip(where, answers)):
        ids[b, t] = MASK_ID
        labels[b, t] = answer
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}, where, answers


def test_knowledge_neurons_recipe_on_a_masked_lm():
    model = tiny.bert_mlm()
    batch, where, answers = cloze_batch()
    scores = kn_recipe(model, [batch])
    layers = model.bert.encoder.layer
    expected = {}
    for i, layer in enumerate(layers):
        per_example = []
        for b in range(3):
            length = int(batch["attention_mask"][b].sum())
            per_example.append(kn_from_scratch(model, batch["input_ids"][b, :length], where[b], answers[b],
                                               layer.intermediate))
        expected[f"bert.encoder.layer.{i}.output.dense"] = torch.stack(per_example)
    assert set(scores.sites) == set(expected)
    assert_scores(scores, expected)
    model.config.mask_token_id = MASK_ID  # positions="mask": the same tokens, found from input_ids
    by_mask = kn_recipe(model, [batch], positions="mask")
    for path, s in scores.sites.items():
        torch.testing.assert_close(by_mask.sites[path].sum, s.sum, rtol=1e-12, atol=0)


def test_knowledge_neurons_recipe_on_a_causal_lm():
    """GPT-2: the prompt's last token plays the [MASK]: its logits give the answer's
    probability. The batch is prompt + answer, labelled at the answer ('labelled' then selects
    the position before it)."""
    model = tiny.gpt2()
    g = torch.Generator().manual_seed(9)
    prompts = [torch.randint(3, tiny.VOCAB, (n,), generator=g) for n in (5, 3, 6)]
    answers = [17, 60, 3]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.long)
    labels = torch.full((3, 7), -100)
    for b, (prompt, answer) in enumerate(zip(prompts, answers)):
        n = len(prompt)
        ids[b, :n], ids[b, n] = prompt, answer
        mask[b, :n + 1] = 1
        labels[b, n] = answer
    scores = kn_recipe(model, [{"input_ids": ids, "attention_mask": mask, "labels": labels}])
    expected = {}
    for i, block in enumerate(model.transformer.h):
        expected[f"transformer.h.{i}.mlp.c_proj"] = torch.stack([
            kn_from_scratch(model, prompt, len(prompt) - 1, answer, block.mlp.act)
            for prompt, answer in zip(prompts, answers)])
    assert set(scores.sites) == set(expected)
    assert_scores(scores, expected)


def test_linspace_rule_and_probability_target():
    alphas, weights = quadrature("linspace", 5)
    assert alphas == [0.0, 0.25, 0.5, 0.75, 1.0] and weights == [0.2] * 5
    model = tiny.bert_token()
    batch = {k: v[:1] for k, v in tiny.batch_for(model).items()}  # one example, several labelled tokens
    label = attprune.attribute(model, [batch], method="grad_x_act", progress=False)
    prob = attprune.attribute(model, [batch], method="grad_x_act", target="probability", progress=False)
    assert label.meta["target"] == "label" and prob.meta["target"] == "probability"
    with torch.no_grad():  # F = exp(sum of the labelled tokens' log-probabilities): dF/dX = F * dlogF/dX
        joint = reference.objective(model, model(**reference.model_kwargs(model, batch)), batch["labels"]).exp()
    for path, s in label.sites.items():
        torch.testing.assert_close(prob.sites[path].sum, joint * s.sum, rtol=1e-10, atol=1e-300)


# -- (c) bad positions are refused clearly --------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(positions="answer"), "positions must be one of 'all', 'labelled'"),
    (dict(positions="last", method="magnitude"), "method='magnitude' does not take positions"),
    (dict(positions="labelled"), "one label per input token.*sequence classifier"),
    (dict(positions="mask"), "model.config.mask_token_id"),
    (dict(positions="batch"), "'attribution_positions' entry"),
    (dict(positions=lambda b: torch.ones(3, 6, dtype=torch.bool)), r"returned \(3, 6\).*\(3, 7\)"),
    (dict(positions=lambda b: torch.rand(3, 7)), "float.*bool tensor"),
    (dict(positions=lambda b: b["attention_mask"].bool() & (torch.arange(7) < 2)[None] & (torch.arange(3) < 2)[:, None]),
     r"selects no real token in example\(s\) \[2\]"),
    (dict(positions=lambda b: torch.arange(7)[None].expand(3, 7) >= 5), r"no real token in example\(s\) \[2\]"),
    (dict(quadrature="linspace", steps=1), "linspace needs steps >= 2"),
])
def test_bad_positions(kwargs, match):
    model = tiny.bert_cls(dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        attprune.attribute(model, [tiny.batch_for(model)], **dict(dict(steps=2, progress=False), **kwargs))


def test_positions_refused_for_encoder_decoder_and_probability_for_regression():
    model = tiny.t5(dtype=torch.float32)
    with pytest.raises(ValueError, match="encoder-decoder has two"):
        attprune.attribute(model, [tiny.batch_for(model)], steps=2, positions="last", progress=False)
    regression = tiny.bert_cls(dtype=torch.float32, num_labels=1)
    batch = dict(tiny.batch_for(regression), labels=torch.tensor([0.5, -1.0, 2.0]))
    with pytest.raises(ValueError, match="regression head has no probability"):
        attprune.attribute(regression, [batch], steps=2, target="probability", progress=False)


# -- (d) the command line --------------------------------------------------------------------

def test_cli_flags():
    parser = build_parser()
    score = parser._subparsers._group_actions[0].choices["score"]
    text = score.format_help()
    assert "--positions" in text and "labelled" in text and "linspace" in text and "probability" in text
    args = parser.parse_args(["score", "--model", "m", "--data", "d.csv", "--out", "o", "--positions", "labelled",
                              "--quadrature", "linspace", "--steps", "20", "--target", "probability",
                              "--units", "ffn"])
    config = settings_from_args(attprune.AttributionConfig, args)
    assert (config.positions, config.quadrature, config.steps, config.target, config.units) == \
        ("labelled", "linspace", 20, "probability", ("ffn",))
    with pytest.raises(SystemExit):  # 'batch' and callables are for Python only
        parser.parse_args(["score", "--model", "m", "--data", "d.csv", "--out", "o", "--positions", "batch"])
