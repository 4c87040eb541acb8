"""Bias compensation (``compact(model, plan, compensate=means)``, FLAP's): every removed input
feature's mean contribution goes into its projection's bias.  Exact against a hand computation;
``mask(..., compensate=)`` equals it on every family (emptied layers too); a site's mean output
over the data the means came from stays the dense model's; checkpoints reload it; the hf, gguf
and onnx exports run it in their runtimes; the CLI's ``prune --compensate``; clear errors."""

import copy
import json

import pytest
import torch
from safetensors import safe_open

import attprune
from attprune.attribution.tokens import token_mask
from attprune.compact import applied_plan, plan_cost
from attprune.compact.mask import feature_mask
from attprune.errors import ExportError
from attprune.sites.site import weight_out_in
from test_cli import review_csv, tiny_model_dir  # noqa: F401  (pytest fixtures)
from test_compact import aggressive_plan, logits, model_inputs

import tiny

FAMILIES = sorted(tiny.FAMILIES)

# most exports here have odd widths on purpose
pytestmark = pytest.mark.filterwarnings("ignore:pruned FFN widths:UserWarning")


def data(model, n=2):
    """Batches the means come from (other seeds than the batches the outputs are compared on)."""
    return [tiny.batch_for(model, seed=10 + i) for i in range(n)]


def compensated(model, plan, batches=None):
    """``model`` compacted with the plan and the means of ``batches`` (default: ``data``)."""
    means = attprune.input_means(model, batches or data(model))
    return attprune.compact(model, plan, compensate=means), means


# ---------------------------------------------------------------------------------------------
# the bias, by hand

@pytest.mark.parametrize("family", ["llama", "bert", "gpt2", "t5"])
def test_bias_is_the_removed_units_mean_contribution(family):
    """b_new = b + sum over removed units u, over u's features f, of W[:, f] * mean[f] (float64 loop);
    a projection without a bias gets one; a site that keeps every unit is untouched."""
    model = tiny.FAMILIES[family]()
    plan = aggressive_plan(model)
    untouched = list(plan.ffn)[-1]
    plan.ffn[untouched] = torch.arange(plan.sizes[untouched])  # keeps every unit
    dense = copy.deepcopy(model)
    _, means = compensated(model, plan)
    sites = {s.path: s for s in attprune.find_sites(dense)}
    for path, kept in {**plan.ffn, **plan.heads}.items():
        site = sites[path]
        before, after = site.module(dense), model.get_submodule(path)
        if kept.numel() == site.n_units:
            assert (after.bias is None) if before.bias is None else torch.equal(after.bias, before.bias)
            continue
        weight = weight_out_in(before).double()
        expected = torch.zeros(weight.shape[0], dtype=torch.float64)
        if before.bias is not None:
            expected += before.bias.double()
        for unit in range(site.n_units):
            if unit in kept.tolist():
                continue
            for f in range(unit * site.unit_size, (unit + 1) * site.unit_size):
                expected += weight[:, f] * means[path][f].double()
        assert after.bias is not None and after.bias.dtype == before.weight.dtype
        assert torch.allclose(after.bias.double(), expected, rtol=0, atol=1e-12)
    assert applied_plan(model).meta["compensated"] == sorted(
        p for p, k in {**plan.ffn, **plan.heads}.items() if k.numel() < plan.sizes[p])
    assert "compensated" not in plan.meta  # the caller's plan is not changed


# ---------------------------------------------------------------------------------------------
# mask == compact

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("family", FAMILIES)
def test_mask_with_means_equals_compensated_compact(family, dtype):
    model = tiny.FAMILIES[family](dtype=dtype)
    inputs = model_inputs(model, tiny.batch_for(model))
    plan = aggressive_plan(model)  # the first FFN and head sites emptied
    means = attprune.input_means(model, data(model))
    with attprune.mask(model, plan):
        zeroed = logits(model, inputs)
    with attprune.mask(model, plan, compensate=means):
        masked = logits(model, inputs)
    scale = masked.abs().max()
    assert (masked - zeroed).abs().max() > 1e-3 * scale  # compensation changes the model
    attprune.compact(model, plan, compensate=means)
    compacted = logits(model, inputs)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert (compacted - masked).abs().max() <= tolerance * scale
    for p in model.parameters():
        assert p.dtype == dtype and p.is_contiguous()


def test_mask_with_means_holds_removed_features_at_their_means():
    model = tiny.llama()
    plan = aggressive_plan(model, empty=False)
    means = attprune.input_means(model, data(model))
    site = attprune.find_sites(model, units=("heads",))[1]
    module, seen = site.module(model), {}
    with attprune.mask(model, plan, compensate=means):  # a hook before the mask's, one after it
        hooks = [module.register_forward_pre_hook(lambda m, a: seen.update(before=a[0].clone()), prepend=True),
                 module.register_forward_pre_hook(lambda m, a: seen.update(after=a[0].clone()))]
        logits(model, model_inputs(model, tiny.batch_for(model)))
        for hook in hooks:
            hook.remove()
    kept = feature_mask(site.n_units, site.unit_size, plan.kept(site.path)).bool()
    assert 0 < kept.sum() < kept.numel()
    before, after = seen["before"], seen["after"]
    assert torch.equal(after[..., kept], before[..., kept])
    assert torch.equal(after[..., ~kept], means[site.path][~kept].expand_as(after[..., ~kept]))


# ---------------------------------------------------------------------------------------------
# what compensation means

def mean_output(model, path, batches):
    """The site projection's mean output over the real tokens of ``batches``."""
    outputs = []
    hook = model.get_submodule(path).register_forward_hook(lambda m, a, out: outputs.append(out))
    total, count = 0, 0
    try:
        for batch in batches:
            with torch.no_grad():
                model(**model_inputs(model, batch))
            out = outputs.pop()
            real = token_mask(batch, "input", out.shape[1], out.shape[0])
            total = total + (out * real[..., None]).sum((0, 1))
            count += int(real.sum())
    finally:
        hook.remove()
    return total / count


@pytest.mark.parametrize("family", ["llama", "bert", "gpt2"])
def test_compensation_keeps_the_mean_site_output_over_its_data(family):
    """Pruning one site with means over D: that site's mean output over D is the dense one's
    (the removed features' average contribution is kept exactly; each site in turn, one emptied)."""
    dense = tiny.FAMILIES[family]()
    batches = data(dense, 3)
    means = attprune.input_means(dense, batches)
    scores = attprune.attribute(dense, None, method="random", seed=2)
    full = attprune.make_plan(scores, ffn=0.5, heads=0.5)
    for i, site in enumerate(attprune.find_sites(dense)):
        kind = full.ffn if site.kind == "ffn" else full.heads
        kept = torch.zeros(0, dtype=torch.long) if i == 0 else kind[site.path]
        plan = attprune.Plan(*(({site.path: kept}, {}) if site.kind == "ffn" else ({}, {site.path: kept})),
                             {site.path: site.n_units})
        expected = mean_output(dense, site.path, batches)
        pruned = attprune.compact(copy.deepcopy(dense), plan, compensate=means)
        assert torch.allclose(mean_output(pruned, site.path, batches), expected, rtol=0, atol=1e-12)
        plain = attprune.compact(copy.deepcopy(dense), plan)
        assert not torch.allclose(mean_output(plain, site.path, batches), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# checkpoints

@pytest.mark.parametrize("family", FAMILIES)
def test_compensated_checkpoint_reloads_exactly(family, tmp_path):
    model = tiny.FAMILIES[family]()
    inputs = model_inputs(model, tiny.batch_for(model))
    compensated(model, aggressive_plan(model))
    expected = logits(model, inputs)
    attprune.save_pretrained(model, tmp_path / "ckpt")
    manifest = json.loads((tmp_path / "ckpt" / "attprune.json").read_text())
    listed = manifest["plan"]["meta"]["compensated"]
    assert listed == applied_plan(model).meta["compensated"] and listed
    assert attprune.Plan.load(tmp_path / "ckpt" / "plan.json").meta["compensated"] == listed
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f:
        assert all(f"{path}.bias" in f.keys() for path in listed)
    for device_map in (None, "auto"):
        back = attprune.from_pretrained(tmp_path / "ckpt", device_map=device_map)
        assert torch.equal(logits(back, inputs), expected)
        assert applied_plan(back).meta["compensated"] == listed


def test_compacting_twice_with_compensation_composes_and_reloads(tmp_path):
    model = tiny.llama()
    inputs = model_inputs(model, tiny.batch_for(model))
    first = attprune.make_plan(attprune.attribute(model, None, method="random", seed=1), ffn=0.3)
    compensated(model, first)
    second = attprune.make_plan(attprune.attribute(model, None, method="random", seed=2), heads=0.34)
    compensated(model, second)  # means of the compacted model, in its own (smaller) widths
    listed = applied_plan(model).meta["compensated"]
    assert set(listed) == set(first.ffn) | {p for p, k in second.heads.items() if k.numel() < second.sizes[p]}
    expected = logits(model, inputs)
    attprune.save_pretrained(model, tmp_path / "twice")
    assert torch.equal(logits(attprune.from_pretrained(tmp_path / "twice"), inputs), expected)
    # the cost counts the skeleton of the applied plan: the compensation biases included
    assert plan_cost(model, attprune.Plan({}, {}, {}))["params_before"] == \
        sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:Attempting to save a model with offloaded modules")
def test_compensation_on_a_disk_offloaded_model_equals_it_in_memory(tmp_path):
    from test_dispatch import offloaded

    plain, model = tiny.llama(), offloaded("llama", tmp_path / "offload")
    plan = aggressive_plan(plain)
    means = attprune.input_means(plain, data(plain))
    attprune.compact(plain, plan, compensate=means)
    attprune.compact(model, plan, compensate=means)
    inputs = model_inputs(plain, tiny.batch_for(plain))
    expected = logits(plain, inputs)
    assert torch.equal(logits(model, inputs), expected)
    attprune.save_pretrained(model, tmp_path / "ckpt")
    back = attprune.from_pretrained(tmp_path / "ckpt", device_map="auto", max_memory={"cpu": "20KB"})
    assert "disk" in back.hf_device_map.values()
    assert torch.equal(logits(back, inputs), expected)


# ---------------------------------------------------------------------------------------------
# errors

def test_missing_or_misshapen_means_are_refused_before_any_change():
    model = tiny.llama()
    plan = aggressive_plan(model)
    means = attprune.input_means(model, data(model))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = next(iter(plan.heads))
    for bad, match in (({k: v for k, v in means.items() if k != path}, f"no mean input for site {path}"),
                       (dict(means, **{path: means[path][:-1]}), rf"compensate\['{path}'\] must be .* shape \(23,\)"),
                       (dict(means, **{path: means[path].long()}), "must be a float vector"),
                       (dict(means, **{path: means[path] * float("nan")}), "NaN"),
                       ([1, 2], "compensate must be")):
        for apply in (attprune.compact, attprune.mask):
            with pytest.raises(attprune.InputError, match=match):
                apply(model, plan, compensate=bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_pre_hooks for m in model.modules())
    scores = attprune.attribute(model, None, method="random")
    with pytest.raises(attprune.InputError, match="carry no input means.*attprune.input_means"):
        attprune.compact(model, plan, compensate=scores)
    scores.input_means = means  # scores with means are taken as they are
    attprune.compact(model, plan, compensate=scores)
    assert applied_plan(model).meta["compensated"]


def test_a_compensated_plan_needs_its_means_on_a_model_with_weights():
    model = tiny.llama()
    compensated(model, aggressive_plan(model))
    plan = applied_plan(model)
    with pytest.raises(attprune.InputError, match="applied with compensation"):
        attprune.compact(tiny.llama(), plan)
    again = tiny.llama()  # with means, the applied plan compacts another copy the same way
    attprune.compact(again, plan, compensate=attprune.input_means(again, data(again)))
    inputs = model_inputs(model, tiny.batch_for(model))
    assert torch.equal(logits(again, inputs), logits(model, inputs))


# ---------------------------------------------------------------------------------------------
# exports

@pytest.mark.parametrize("units", ["ffn", "heads", "both"])
def test_hf_export_of_a_compensated_llama_loads_in_plain_transformers(units, tmp_path):
    from test_export import run_plain, uniform_plan

    model = tiny.llama()
    plan = uniform_plan(model, ffn=0.0 if units == "heads" else 0.4, heads=0.0 if units == "ffn" else 0.34)
    compensated(model, plan)
    inputs = model_inputs(model, tiny.batch_for(model, labels=False))
    out = attprune.export(model, tmp_path / "plain", format="hf")
    config = json.loads((out / "config.json").read_text())
    assert config["mlp_bias"] == (units != "heads") and config["attention_bias"] == (units != "ffn")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for name in ("gate_proj", "up_proj") if units != "heads" else ():
            assert not f.get_tensor(f"model.layers.0.mlp.{name}.bias").any()  # explicit zeros
        for name in ("q_proj", "k_proj", "v_proj") if units != "ffn" else ():
            assert not f.get_tensor(f"model.layers.1.self_attn.{name}.bias").any()
    plain = run_plain(out, "AutoModelForCausalLM", inputs, tmp_path)
    assert torch.allclose(plain, logits(model, inputs), atol=1e-10, rtol=0)
    assert model.model.layers[0].mlp.gate_proj.bias is None  # the model itself is unchanged


def test_hf_export_refuses_a_compensation_bias_a_config_cannot_state(tmp_path):
    from test_export import uniform_plan

    t5 = tiny.t5()  # its ConfigKeys have no bias flags
    compensated(t5, uniform_plan(t5, heads=0.0))
    with pytest.raises(ExportError, match=r"DenseReluDense.wo.bias \(a compensation bias.*cannot be stated by a "
                                          "plain t5 config"):
        attprune.export(t5, tmp_path / "t5", format="hf")
    for family in ("mistral", "qwen2"):  # the flag is Llama's; these classes build no such bias
        model = tiny.FAMILIES[family]()
        compensated(model, uniform_plan(model, heads=0.0))
        with pytest.raises(ExportError, match=f"{type(model).__name__} has no model.layers.0.mlp.down_proj.bias"):
            attprune.export(model, tmp_path / family, format="hf")
    bert = tiny.bert_cls()  # BERT's projections have biases already: a plain config as before
    compensated(bert, uniform_plan(bert, heads=0.0))
    attprune.export(bert, tmp_path / "bert", format="hf")
    assert not (tmp_path / "t5").exists() and not (tmp_path / "mistral").exists()


@pytest.mark.parametrize("scope", ["uniform", "aggressive"])
def test_gguf_export_of_a_compensated_llama_runs_in_llama_cpp(scope, tmp_path):
    pytest.importorskip("llama_cpp")
    import gguf
    from test_export import TEXTS, check_in_llama_cpp, uniform_plan

    tokenizer = tiny.byte_bpe_tokenizer()
    model = tiny.causal_lm("llama", vocab_size=len(tokenizer))
    plan = aggressive_plan(model) if scope == "aggressive" else uniform_plan(model)  # aggressive: empty layers
    batches = [dict(tokenizer([text], return_tensors="pt")) for text in tiny.TOKENIZER_TEXT]
    uncompensated = attprune.compact(copy.deepcopy(model), plan)
    compensated(model, plan, batches)
    path = attprune.export(model, tmp_path / "m.gguf", format="gguf", tokenizer=tokenizer, dtype="f32")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == ("llama" if scope == "uniform" else "deci")
    kinds = {t.name.split(".", 2)[2] for t in reader.tensors if t.name.startswith("blk.")}
    assert {"ffn_down.bias", "attn_output.bias"} <= kinds
    assert not kinds & {f"{n}.bias" for n in ("ffn_gate", "ffn_up", "attn_q", "attn_k", "attn_v")}  # none needed
    ids = torch.tensor([tokenizer(TEXTS[0])["input_ids"]])
    ours, theirs = logits(model, {"input_ids": ids}), logits(uncompensated, {"input_ids": ids})
    assert (ours - theirs).abs().max() > 2e-2 * (ours.max() - ours.min())  # llama.cpp must apply the biases
    check_in_llama_cpp(model, tokenizer, path, "f32")  # within 1e-3 of the range, 32 greedy tokens equal


@pytest.mark.parametrize("family", ["llama", "bert", "gpt2", "t5"])
def test_onnx_export_of_a_compensated_model_runs_in_onnxruntime(family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny.FAMILIES[family](dtype=torch.float32)
    compensated(model, aggressive_plan(model))
    example = tiny.batch_for(model)
    path = attprune.export(model, tmp_path / "model.onnx", format="onnx", example=example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = model_inputs(model, tiny.batch_for(model, batch_size=2, seq_len=9, seed=7))
    (out,) = session.run(None, {i.name: inputs[i.name].numpy() for i in session.get_inputs()})
    expected = logits(model, inputs)
    assert (torch.from_numpy(out) - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max())


# ---------------------------------------------------------------------------------------------
# the command line

def test_cli_score_stores_the_means_and_prune_compensates(tiny_model_dir, review_csv, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    from attprune.cli import main

    scored = tmp_path / "scores"
    assert main(["score", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
                 "--steps", "2", "--batch-size", "2", "--out", str(scored), "--no-progress"]) == 0
    scores = attprune.Scores.load(scored / "scores.safetensors")
    assert scores.meta["baseline"] != "mean" and set(scores.input_means) == set(scores.sites)
    assert main(["prune", "--model", str(tiny_model_dir), "--scores", str(scored), "--ffn", "0.5", "--heads", "0.25",
                 "--compensate", "--out", str(tmp_path / "ckpt")]) == 0
    plan = attprune.Plan.load(tmp_path / "ckpt" / "plan.json")
    assert plan.meta["compensated"]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    attprune.compact(model, plan, compensate=scores.input_means)
    inputs = model_inputs(model, tiny.batch_for(model))
    assert torch.allclose(logits(attprune.from_pretrained(tmp_path / "ckpt"), inputs), logits(model, inputs),
                          rtol=0, atol=1e-6)

    scores.input_means = None  # scores written before `attprune score` stored the means
    scores.save(tmp_path / "bare.safetensors")
    capsys.readouterr()
    assert main(["prune", "--model", str(tiny_model_dir), "--scores", str(tmp_path / "bare.safetensors"), "--ffn",
                 "0.5", "--compensate", "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attprune: error: --compensate needs the input means") and "\n" not in err
    assert "attprune score" in err and "--baseline mean" in err and "attprune.input_means" in err
    assert not (tmp_path / "none").exists()


def test_cli_score_keeps_the_means_a_mean_baseline_computed(tiny_model_dir, review_csv, tmp_path, monkeypatch):
    import attprune.attribution

    from attprune.cli import main

    def again(*args, **kwargs):
        raise AssertionError("the scores had their means already")

    monkeypatch.setattr(attprune.attribution, "input_means", again)
    assert main(["score", "--model", str(tiny_model_dir), "--data", str(review_csv), "--label-map=-1:0,1:1",
                 "--steps", "2", "--baseline", "mean", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    assert attprune.Scores.load(tmp_path / "s" / "scores.safetensors").input_means
