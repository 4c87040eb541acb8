"""mask() and compact(): same outputs for every family (also generate() with a KV cache);
checkpoints reload exactly; clear errors; nothing half-written."""

import copy

import pytest
import torch

import attprune
from attprune.compact.mask import MaskHandle

import tiny

FAMILIES = sorted(tiny.FAMILIES)


def model_inputs(model, batch):
    batch = dict(batch)
    labels = batch.pop("labels", None)
    if model.config.is_encoder_decoder:
        batch["decoder_input_ids"] = model._shift_right(labels)
    return batch


def aggressive_plan(model, seed=0, empty=True):
    """Random scores, 50% FFN and 40% heads removed; the first site of each kind emptied."""
    plan = attprune.make_plan(attprune.attribute(model, None, method="random", seed=seed),
                              ffn=0.5, heads=0.4, min_keep=0)
    if empty:
        plan.ffn[next(iter(plan.ffn))] = torch.zeros(0, dtype=torch.long)
        plan.heads[next(iter(plan.heads))] = torch.zeros(0, dtype=torch.long)
    return plan


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_compact_equals_mask_float32(family):
    model = tiny.FAMILIES[family](dtype=torch.float32)
    inputs = model_inputs(model, tiny.batch_for(model))
    plan = aggressive_plan(model)
    dense = logits(model, inputs)
    with attprune.mask(model, plan):
        masked = logits(model, inputs)
    assert not torch.allclose(masked, dense)  # the plan really changes the model
    n_before = sum(p.numel() for p in model.parameters())
    attprune.compact(model, plan)
    compacted = logits(model, inputs)
    scale = masked.abs().max()
    assert (compacted - masked).abs().max() <= 1e-5 * scale
    assert sum(p.numel() for p in model.parameters()) < n_before
    for p in model.parameters():
        assert p.is_contiguous() and p.dtype == torch.float32


def test_mask_remove_restores_the_model_exactly():
    model = tiny.gpt2()
    inputs = model_inputs(model, tiny.batch_for(model))
    before = logits(model, inputs)
    handle = attprune.mask(model, aggressive_plan(model))
    assert isinstance(handle, MaskHandle)
    handle.remove()
    assert torch.equal(logits(model, inputs), before)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_mask_zeroes_exactly_the_pruned_features():
    model = tiny.bert_cls()
    plan = aggressive_plan(model, empty=False)
    site = attprune.find_sites(model, units=("heads",))[1]
    module = model.get_submodule(site.path)
    seen = {}
    # registered before the mask, so its pre-hook sees the input the mask then scales
    hooks = [module.register_forward_pre_hook(lambda m, a: seen.update(x=a[0].clone())),
             module.register_forward_hook(lambda m, a, out: seen.update(z=out.clone()))]
    with attprune.mask(model, plan):
        logits(model, model_inputs(model, tiny.batch_for(model)))
    for hook in hooks:
        hook.remove()
    keep = torch.zeros(site.n_units, site.unit_size, dtype=torch.float64)
    keep[plan.heads[site.path]] = 1
    expected = torch.nn.functional.linear(seen["x"] * keep.flatten(), module.weight, module.bias)
    torch.testing.assert_close(seen["z"], expected)
    assert not torch.allclose(seen["z"], module(seen["x"]))


def test_masks_are_hooks_removable_in_any_order():
    """Two masks on one model: removing the first one first leaves exactly the second."""
    model = tiny.bert_cls()
    inputs = model_inputs(model, tiny.batch_for(model))
    dense = logits(model, inputs)
    first, second = aggressive_plan(model, empty=False), attprune.make_plan(
        attprune.attribute(model, None, method="random", seed=1), ffn=0.5)
    with attprune.mask(model, second):
        only_second = logits(model, inputs)
    a, b = attprune.mask(model, first), attprune.mask(model, second)
    a.remove()
    torch.testing.assert_close(logits(model, inputs), only_second, rtol=0, atol=0)
    b.remove()
    torch.testing.assert_close(logits(model, inputs), dense, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["t5", "t5-gated", "llama", "qwen2", "gpt2"])
def test_generate_with_kv_cache_matches_masked(family):
    model = tiny.FAMILIES[family](dtype=torch.float32)
    batch = tiny.batch_for(model, labels=False)
    if not model.config.is_encoder_decoder:  # left padding for decoder-only generation
        batch = {k: v.flip(1) for k, v in batch.items()}
    plan = aggressive_plan(model, empty=False)
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=1, use_cache=True, pad_token_id=0)
    with attprune.mask(model, plan):
        masked = model.generate(**batch, **kwargs)
    attprune.compact(model, plan)
    compacted = model.generate(**batch, **kwargs)
    assert torch.equal(masked, compacted)


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_round_trip_is_exact(family, tmp_path):
    model = tiny.FAMILIES[family](dtype=torch.float32)
    inputs = model_inputs(model, tiny.batch_for(model))
    attprune.compact(model, aggressive_plan(model))
    out = attprune.save_pretrained(model, tmp_path / "ckpt")
    assert (out / "attprune.json").is_file() and (out / "config.json").is_file()
    loaded = attprune.from_pretrained(out)
    assert type(loaded) is type(model)
    assert torch.equal(logits(loaded, inputs), logits(model, inputs))
    state = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    half = attprune.from_pretrained(out, torch_dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_compacting_twice_composes_plans(tmp_path):
    model = tiny.llama(dtype=torch.float32)
    reference = copy.deepcopy(model)
    inputs = model_inputs(model, tiny.batch_for(model))
    first = attprune.make_plan(attprune.attribute(model, None, method="random", seed=1), ffn=0.3, heads=0.0)
    attprune.compact(model, first)
    second = attprune.make_plan(attprune.attribute(model, None, method="random", seed=2), ffn=0.3, heads=0.5)
    attprune.compact(model, second)
    from attprune.compact import applied_plan
    composed = applied_plan(model)
    with attprune.mask(reference, composed):
        expected = logits(reference, inputs)
    assert (logits(model, inputs) - expected).abs().max() <= 1e-5 * expected.abs().max()
    attprune.save_pretrained(model, tmp_path / "twice")
    assert torch.equal(logits(attprune.from_pretrained(tmp_path / "twice"), inputs), logits(model, inputs))


def test_checkpoint_errors(tmp_path):
    model = tiny.bert_cls(dtype=torch.float32)
    attprune.compact(model, aggressive_plan(model))
    path = attprune.save_pretrained(model, tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError):
        attprune.from_pretrained(tmp_path / "missing")
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(attprune.CheckpointError, match="truncated or damaged"):
        attprune.from_pretrained(path)
    weights.unlink()
    with pytest.raises(attprune.CheckpointError, match="missing its weights file"):
        attprune.from_pretrained(path)
    weights.write_bytes(good)
    import json
    manifest = json.loads((path / "attprune.json").read_text())
    site = next(iter(manifest["plan"]["ffn"]))
    manifest["plan"]["ffn"][site] = list(range(5))  # plan no longer matches the weights
    (path / "attprune.json").write_text(json.dumps(manifest))
    with pytest.raises(attprune.CheckpointError, match=f"site {site}"):
        attprune.from_pretrained(path)
    (path / "attprune.json").unlink()
    with pytest.raises(attprune.CheckpointError, match="not an attprune checkpoint"):
        attprune.from_pretrained(path)


def test_plan_for_a_compacted_or_other_model_is_refused():
    model = tiny.bert_cls()
    plan = aggressive_plan(model, empty=False)
    attprune.compact(model, plan)
    with pytest.raises(attprune.PlanMismatchError, match="already compacted"):
        attprune.mask(model, plan)


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny.bert_cls(dtype=torch.float32)
    path = attprune.save_pretrained(model, tmp_path / "ckpt")
    before = sorted(p.name for p in path.iterdir())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        attprune.save_pretrained(model, tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
