"""Adapting by pruning: the estimator against a hand-derived step, the stopping rule,
recovery, bit-identical kept weights, bit-packed round trips (and old folders), the
settings object, the structured variant's compaction, the baselines, and clear errors."""

import copy
import json

import pytest
import tiny
import torch
from torch import nn

import attprune
from attprune.adaptation import (
    AdaptConfig,
    AdaptedMismatchError,
    LayerWeightedHead,
    MaskScores,
    apply_adapted,
    keep_top,
    mask_targets,
    pack_bits,
    tempered_sigmoid,
    unpack_bits,
)
from attprune.adaptation.baselines import (
    fine_tune,
    fit_head,
    gmp_masks,
    gmp_sparsity,
    imp_levels,
    imp_masks,
    magnitude_masks,
    random_masks,
)
from attprune.adaptation.model import encoder_features
from attprune.adaptation.targets import masked_weights
from attprune.adaptation.train import MaskTrainer, auto_decay
from attprune.errors import InputError


def batches(model, n=3, batch_size=4, seed=1):
    return [tiny.batch_for(model, batch_size=batch_size, seq_len=9, seed=seed + i) for i in range(n)]


@pytest.fixture()
def model():
    return tiny.bert_cls(num_labels=3)


def sparsity_of(masks):
    return 1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


# -- the estimator ------------------------------------------------------------------------


def test_tempered_sigmoid_forward_and_backward_temperatures():
    theta = torch.tensor([-0.3, -1e-3, 2e-3, 0.5], requires_grad=True)
    m = tempered_sigmoid(theta, t_forward=1e5, t_backward=2.0)
    assert torch.equal(m.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0]))  # a step away from 0
    (m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    s = torch.sigmoid(2.0 * theta.detach())
    assert torch.allclose(theta.grad, torch.tensor([1.0, 2.0, 3.0, 4.0]) * 2.0 * s * (1 - s))


def test_one_step_matches_the_hand_derived_update(model):
    """theta_1 = theta_0 - lr * g / (|g| + eps) - decay (Adam's first step), with
    g = dL/dW_eff * w0 * t_b * s(t_b theta_0) (1 - s(t_b theta_0)) from the chain rule."""
    encoder = model.base_model
    targets = mask_targets(encoder, "weights")
    head = LayerWeightedHead(2, 24, 3).double()
    lr, decay, t_b = 1e-3, 1e-4, 3.0
    trainer = MaskTrainer(encoder, targets, head, lr_mask=lr, lr_head=1e-3, decay=decay, t_backward=t_b, seed=3)
    theta0 = {name: t.detach().clone() for name, t in trainer.thetas.items()}
    batch = batches(model, n=1)[0]
    # the reference: plain autograd w.r.t. the effective weights, chain rule written out
    params = dict(encoder.named_parameters())
    w_eff = {n: (params[n].detach() * torch.sigmoid(1e5 * theta0[n]).double()).requires_grad_(True)
             for n in theta0}
    loss = nn.functional.cross_entropy(copy.deepcopy(head)(encoder_features(encoder, w_eff, batch)),
                                       batch["labels"])
    grads = torch.autograd.grad(loss, list(w_eff.values()))
    trainer.step(batch)
    for (name, theta1), grad in zip(trainer.thetas.items(), grads):
        s = torch.sigmoid(t_b * theta0[name])
        g = (grad * params[name].detach()).float() * t_b * s * (1 - s)
        expected = theta0[name] - lr * g / (g.abs() + 1e-8) - decay
        assert torch.allclose(theta1.detach(), expected, atol=1e-6), name


def test_stops_when_the_negative_share_reaches_the_target(model):
    data = batches(model, n=4)
    result = attprune.adapt(model, data, sparsity=0.6, epochs=20, lr_mask=0.02, decay=0.01, lr_head=1e-3,
                            progress=False)
    assert result.stats["stopped"] == "sparsity reached"
    assert result.stats["steps"] < 20 * len(data)
    assert result.stats["final_negative"] >= 0.6 > result.history[-2]["pruned"]
    assert abs(sparsity_of(result.masks) - 0.6) < 1e-3  # exact: the largest theta are kept


def test_runs_every_epoch_when_the_initial_share_is_above_the_target(model):
    data = batches(model, n=2)
    result = attprune.adapt(model, data, sparsity=0.2, epochs=2, lr_head=1e-3, progress=False)
    assert result.stats["initial_pruned"] > 0.2  # N(0.01, 0.001): ~38% start negative
    assert result.stats["stopped"] == "epochs done" and result.stats["steps"] == 4
    assert abs(sparsity_of(result.masks) - 0.2) < 1e-3


def test_pruned_connections_recover(model):
    result = attprune.adapt(model, batches(model), sparsity=0.5, epochs=3, lr_mask=0.05, decay=0.0,
                            lr_head=1e-3, progress=False)
    assert result.stats["recovered"] > 0  # negative at some step (from the start included), kept at the end


def test_keep_top_is_exact_and_global():
    values = {"a": torch.tensor([[5.0, 1.0], [3.0, 0.0]]), "b": torch.tensor([4.0, 2.0, 6.0])}
    kept = keep_top(values, 3 / 7)
    assert torch.equal(kept["a"], torch.tensor([[True, False], [True, False]]))
    assert torch.equal(kept["b"], torch.tensor([True, False, True]))


# -- the task model -----------------------------------------------------------------------


def test_kept_weights_are_bit_identical_and_the_pretrained_model_untouched(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = attprune.adapt(model, batches(model), sparsity=0.5, epochs=1, lr_head=1e-3, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    encoder = model.base_model
    params = dict(encoder.named_parameters())
    for name, weight in masked_weights(encoder, result.targets, result.masks).items():
        keep = result.masks[name]
        assert torch.equal(weight[keep], params[name][keep]) and not weight[~keep].any()


def test_two_tasks_share_one_model_without_interfering(model, tmp_path):
    data = batches(model)
    a = attprune.adapt(model, data, sparsity=0.5, epochs=1, lr_head=1e-3, seed=1, progress=False)
    b = attprune.adapt(model, data, sparsity=0.9, epochs=1, lr_head=1e-3, seed=2, progress=False)
    task_a = apply_adapted(model, a.save(tmp_path / "a"))
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    first = task_a(**inputs).logits
    task_b = apply_adapted(model, b.save(tmp_path / "b"))
    task_b(**inputs)
    assert torch.equal(task_a(**inputs).logits, first)
    assert not torch.equal(task_b(**inputs).logits, first)


@pytest.mark.parametrize("shape", [(13,), (3, 7, 5), (8,), (1,)])
def test_bit_packing_round_trips(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_bits(packed, shape), mask)


def test_saved_task_reloads_with_one_bit_per_weight(model, tmp_path):
    data = batches(model)
    result = attprune.adapt(model, data, sparsity=0.7, epochs=1, lr_head=1e-3, head="linear", progress=False)
    path = result.save(tmp_path / "task")
    n_masked = sum(m.numel() for m in result.masks.values())
    assert (path / "masks.safetensors").stat().st_size < n_masked / 8 + 4096
    reloaded = apply_adapted(model, path)
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    assert torch.equal(reloaded(**inputs).logits, result.model(model)(**inputs).logits)
    assert json.loads((path / "attprune_adapted.json").read_text())["config"]["head"] == "linear"


def old_pack_bits(mask):
    """The hand-written packer that defined the saved format (the reference for np.packbits)."""
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    flat = mask.flatten().to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def test_pack_bits_equals_the_previous_packer_on_odd_sizes():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        dims = int(torch.randint(1, 4, (1,), generator=generator))
        shape = tuple(int(2 * n + 1) for n in torch.randint(0, 9, (dims,), generator=generator))
        mask = torch.rand(shape, generator=generator) > 0.5
        assert torch.equal(pack_bits(mask), old_pack_bits(mask)), shape
        assert torch.equal(unpack_bits(old_pack_bits(mask), shape), mask), shape
    with pytest.raises(AdaptedMismatchError, match="needs 1 bytes, found 2"):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), (3,))


# -- the settings object and the saved folder ---------------------------------------------


def test_the_config_round_trips_through_the_saved_folder(model, tmp_path):
    data = batches(model)
    config = AdaptConfig(sparsity=0.7, epochs=2, lr_head=1e-3, decay="auto", head="linear", init="magnitude", seed=4)
    result = attprune.adapt(model, data, config, progress=False)
    assert result.config is config
    path = result.save(tmp_path / "task")
    assert sorted(p.name for p in path.iterdir()) == ["attprune_adapted.json", "head.safetensors",
                                                      "masks.safetensors"]
    assert AdaptConfig.from_pretrained(path) == config
    saved = json.loads((path / "attprune_adapted.json").read_text())
    assert saved["config"] == config.to_dict() and saved["config"]["decay"] == "auto"
    expected = auto_decay(0.7, 2 * len(data), config.init_mean, config.init_std)
    assert saved["stats"]["decay"] == result.stats["decay"] == expected > 0  # the push actually used


def test_a_folder_in_the_old_layout_still_loads(model, tmp_path):
    from safetensors.torch import save_file

    data = batches(model)
    result = attprune.adapt(model, data, sparsity=0.6, epochs=1, lr_head=1e-3, decay="auto", progress=False)
    path = result.save(tmp_path / "task")
    new = json.loads((path / "attprune_adapted.json").read_text())
    (path / "attprune_adapted.json").unlink()
    # as written before the rename: adapter_config.json, a top-level granularity, the resolved
    # settings in "config", masks from the hand-written packer
    old = {"format": "attprune.adapted/1", "granularity": "weights",
           "config": dict(new["config"], decay=result.stats["decay"], num_labels=3, optimizer="adam"),
           "head": new["head"], "stats": {k: v for k, v in new["stats"].items() if k != "decay"},
           "targets": new["targets"], "fingerprint": new["fingerprint"]}
    (path / "adapter_config.json").write_text(json.dumps(old))
    save_file({name: old_pack_bits(mask) for name, mask in result.masks.items()}, str(path / "masks.safetensors"))
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    assert torch.equal(apply_adapted(model, path)(**inputs).logits, result.model(model)(**inputs).logits)
    assert AdaptConfig.from_pretrained(path) == result.config.replace(decay=result.stats["decay"], num_labels=3)
    (path / "adapter_config.json").write_text(json.dumps(dict(old, format="other/1")))
    with pytest.raises(AdaptedMismatchError, match="has format 'other/1'"):
        apply_adapted(model, path)


def test_keywords_override_the_config(model):
    data = batches(model, n=2)
    config = AdaptConfig(sparsity=0.2, epochs=3, lr_head=1e-3)
    result = attprune.adapt(model, data, config=config, epochs=1, seed=5, progress=False)
    assert result.config == config.replace(epochs=1, seed=5) and config.epochs == 3
    assert result.stats["steps"] == len(data)  # one epoch (0.2 is below the initial share: no early stop)


def test_an_unknown_keyword_is_a_type_error(model):
    with pytest.raises(TypeError, match="unexpected keyword argument.*lr"):
        attprune.adapt(model, batches(model), lr=1e-3, progress=False)
    with pytest.raises(InputError, match="expected a AdaptConfig"):
        attprune.adapt(model, batches(model), {"sparsity": 0.5}, progress=False)


@pytest.mark.parametrize("changes, match", [
    (dict(epochs=0), "epochs must be an integer >= 1"),
    (dict(epochs=1.5), "epochs must be an integer >= 1"),
    (dict(decay=-1e-3), "decay must be a number >= 0 or 'auto'"),
    (dict(granularity="units", embeddings=True), "embeddings are masked only with granularity='weights'"),
    (dict(num_labels=1), "num_labels must be an integer >= 2"),
    (dict(t_backward=0.0), "t_backward must be a number > 0"),
    (dict(init="xavier"), "unknown init"),
])
def test_the_config_checks_its_fields(changes, match):
    with pytest.raises(InputError, match=match):
        AdaptConfig(**changes)
    with pytest.raises(InputError, match=match):
        AdaptConfig().replace(**changes)


def test_a_baseline_records_its_config_and_reloads(model, tmp_path):
    data = batches(model)
    result = fit_head(model, data, random_masks(model, 0.75), epochs=1, lr=1e-3, method="random")
    assert result.config == AdaptConfig(sparsity=result.config.sparsity, epochs=1, lr_mask=0.0, lr_head=1e-3,
                                        decay=0.0)
    assert abs(result.config.sparsity - 0.75) < 1e-3 and result.stats["method"] == "random"
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    reloaded = apply_adapted(model, result.save(tmp_path / "random"))
    assert torch.equal(reloaded(**inputs).logits, result.model(model)(**inputs).logits)


def test_units_variant_gives_a_plan_that_compacts_to_the_masked_model(model):
    result = attprune.adapt(model, batches(model), granularity="units", sparsity=0.5, epochs=1, lr_head=1e-3,
                            progress=False)
    plan = result.plan
    assert sum(v.numel() for v in plan.ffn.values()) == round(0.5 * 2 * 37)
    assert sum(v.numel() for v in plan.heads.values()) == round(0.5 * 2 * 4)
    masked = result.model(model)
    small = masked.compact()
    inputs = {k: v for k, v in batches(model, seed=9)[0].items() if k != "labels"}
    assert torch.allclose(small(**inputs).logits, masked(**inputs).logits, atol=1e-10)
    assert sum(p.numel() for p in small.encoder.parameters()) < sum(p.numel() for p in model.base_model.parameters())
    with attprune.mask(model.base_model, plan):  # the plan means the same to attprune.mask
        reference = masked.head(encoder_features(model.base_model, {}, inputs))
    assert torch.allclose(reference, masked(**inputs).logits, atol=1e-10)


def test_units_variant_reloads_from_its_plan(model, tmp_path):
    result = attprune.adapt(model, batches(model), granularity="units", sparsity=0.3, epochs=1, lr_head=1e-3,
                            progress=False)
    path = result.save(tmp_path / "units")
    assert (path / "plan.json").is_file() and not (path / "masks.safetensors").exists()
    inputs = {k: v for k, v in batches(model)[0].items() if k != "labels"}
    assert torch.equal(apply_adapted(model, path)(**inputs).logits, result.model(model)(**inputs).logits)


# -- baselines ----------------------------------------------------------------------------


def test_magnitude_and_random_masks(model):
    params = dict(model.base_model.named_parameters())
    masks = magnitude_masks(model, 0.75)
    assert abs(sparsity_of(masks) - 0.75) < 1e-3
    kept = torch.cat([params[n].detach().abs()[m] for n, m in masks.items()])
    pruned = torch.cat([params[n].detach().abs()[~m] for n, m in masks.items()])
    assert kept.min() >= pruned.max()
    a, b = random_masks(model, 0.75, seed=0), random_masks(model, 0.75, seed=1)
    assert abs(sparsity_of(a) - 0.75) < 1e-3
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_schedules():
    assert imp_levels([0.2, 0.5], 0.2) == [0.2, 0.36, 0.488, 0.5]
    assert [round(gmp_sparsity(s, 0.9, 0, 10), 6) for s in (0, 5, 10, 20)] == [0.0, 0.7875, 0.9, 0.9]


def test_imp_and_gmp_reach_their_targets_and_leave_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = batches(model, n=2)
    found = imp_masks(model, data, [0.2, 0.5], epochs_per_round=1, lr=1e-3, progress=False)
    assert [round(sparsity_of(found[s]), 3) for s in (0.2, 0.5)] == [0.2, 0.5]
    assert all(not (found[0.2][n] < found[0.5][n]).any() for n in found[0.2])  # nested: pruned stays pruned
    gmp = gmp_masks(model, data, 0.6, epochs=2, lr=1e-3)
    assert abs(sparsity_of(gmp) - 0.6) < 1e-3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_feature_extraction_and_fine_tuning(model):
    data = batches(model)
    fe = fit_head(model, data, epochs=2, lr=1e-3)
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    with torch.no_grad():
        plain = fe.head(encoder_features(model.base_model, {}, inputs))
    assert torch.equal(fe.model(model)(**inputs).logits, plain)
    tuned = fine_tune(model, data, epochs=1, lr=1e-3)
    changed = [not torch.equal(p, q) for p, q in zip(tuned.encoder.parameters(), model.base_model.parameters())]
    assert any(changed)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, "0.5", True])
def test_sparsity_outside_the_unit_interval(model, sparsity):
    with pytest.raises(ValueError, match="sparsity must be a fraction"):
        attprune.adapt(model, batches(model), sparsity=sparsity, progress=False)


def test_empty_data_and_missing_labels(model):
    with pytest.raises(ValueError, match="empty"):
        attprune.adapt(model, [], progress=False)
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in batches(model)]
    with pytest.raises(ValueError, match="needs input_ids and labels"):
        attprune.adapt(model, unlabelled, progress=False)


class NoSites(nn.Module):
    """An encoder-like module with nothing attprune can mask."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"num_hidden_layers": 1, "hidden_size": 4, "model_type": "none"})()
        self.embed = nn.Embedding(10, 4)


def test_model_without_sites():
    data = [{"input_ids": torch.tensor([[1, 2]]), "labels": torch.tensor([1])}]
    with pytest.raises(attprune.UnsupportedModelError):
        attprune.adapt(NoSites(), data, granularity="units", progress=False)
    with pytest.raises(ValueError, match="no Linear layers"):
        attprune.adapt(NoSites(), data, granularity="weights", progress=False)


def test_bad_granularity_head_and_encoder_decoder(model):
    with pytest.raises(ValueError, match="unknown granularity"):
        attprune.adapt(model, batches(model), granularity="rows", progress=False)
    with pytest.raises(ValueError, match="unknown head"):
        attprune.adapt(model, batches(model), head="svm", progress=False)
    t5 = tiny.t5()
    with pytest.raises(ValueError, match="encoder-decoder"):
        attprune.adapt(t5, batches(t5), progress=False)


def test_apply_refuses_other_weights_and_damaged_files(model, tmp_path):
    path = attprune.adapt(model, batches(model), sparsity=0.5, epochs=1, lr_head=1e-3,
                          progress=False).save(tmp_path / "task")
    other = tiny.bert_cls(num_labels=3)
    with torch.no_grad():
        other.bert.encoder.layer[0].output.dense.weight.add_(1e-3)
    with pytest.raises(AdaptedMismatchError, match="fingerprint"):
        apply_adapted(other, path)
    apply_adapted(other, path, check_fingerprint=False)
    with pytest.raises(AdaptedMismatchError, match="architecture|does not fit"):
        apply_adapted(tiny.distilbert_cls(), path, check_fingerprint=False)
    masks = path / "masks.safetensors"
    masks.write_bytes(masks.read_bytes()[:40])
    with pytest.raises(AdaptedMismatchError, match="truncated or damaged"):
        apply_adapted(model, path)
    with pytest.raises(AdaptedMismatchError, match="not an adapted task folder"):
        apply_adapted(model, tmp_path)


def test_a_failed_save_leaves_the_previous_folder(model, tmp_path, monkeypatch):
    result = attprune.adapt(model, batches(model), sparsity=0.5, epochs=1, lr_head=1e-3, progress=False)
    path = result.save(tmp_path / "task")
    before = (path / "masks.safetensors").read_bytes()
    monkeypatch.setattr("attprune.adaptation.store.pack_bits", lambda mask: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        result.save(path)
    assert (path / "masks.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task"]


def test_theta_state_memory_is_float32():
    scores = MaskScores({"a": (3, 5), "b": (7,)}, seed=0)
    assert all(t.dtype == torch.float32 for t in scores.thetas) and scores.numel() == 22


def test_the_head_has_as_many_classes_as_the_labels(model):
    bare = model.base_model  # a bare encoder's config says num_labels=2
    data = batches(model)
    for b in data:
        b["labels"] = b["labels"] + 2  # classes 2..4
    result = attprune.adapt(bare, data, epochs=1, lr_head=1e-3, progress=False)
    assert result.head.num_labels == 5
    data[0]["labels"][0] = -3
    with pytest.raises(ValueError, match="class ids >= 0"):
        attprune.adapt(bare, data, epochs=1, progress=False)


def test_magnitude_init_without_training_is_magnitude_pruning(model):
    """init="magnitude" hands theta out in the order of |w|: with nothing learned (no mask
    steps, no decay) the final mask is exactly one-shot magnitude pruning."""
    result = attprune.adapt(model, batches(model), sparsity=0.6, epochs=1, lr_mask=0.0, decay=0.0, lr_head=1e-3,
                            init="magnitude", progress=False)
    expected = magnitude_masks(model, 0.6)
    assert all(torch.equal(result.masks[name], expected[name]) for name in expected)
    with pytest.raises(ValueError, match="unknown init"):
        attprune.adapt(model, batches(model), init="xavier", progress=False)


# -- recovery and IMP, recomputed from the masks themselves ---------------------------------


def test_recovered_is_what_the_masks_at_each_step_say(model, monkeypatch):
    """stats["recovered"]: connections pruned (theta <= 0: off in the hard mask) at some step,
    the start included, and kept by the final mask.  Recomputed here from the hard masks
    recorded before the first update and after every update."""
    hard = []
    step = MaskTrainer.step

    def recording(self, batch):
        if not hard:
            hard.append(self.thetas.hard())
        loss = step(self, batch)
        hard.append(self.thetas.hard())
        return loss

    monkeypatch.setattr(MaskTrainer, "step", recording)
    result = attprune.adapt(model, batches(model), sparsity=0.5, epochs=3, lr_mask=0.05, decay=0.0, lr_head=1e-3,
                            progress=False)
    assert len(hard) == result.stats["steps"] + 1
    final = result.masks

    def pruned_then_kept(a, kept):
        """Connections off at step a and on in ``kept``."""
        return sum(int((~hard[a][n] & kept[n]).sum()) for n in kept)

    ever_pruned = {n: torch.stack([~h[n] for h in hard]).any(0) for n in final}
    recovered = sum(int((ever_pruned[n] & final[n]).sum()) for n in final)
    assert result.stats["recovered"] == recovered
    assert result.stats["recovered_share_of_kept"] == round(recovered / result.stats["kept"], 5)
    assert result.stats["kept"] == sum(int(m.sum()) for m in final.values())
    # each pair of steps (a, the end) bounds it from below; some connection came back after the start
    by_step = [pruned_then_kept(a, final) for a in range(len(hard))]
    assert 0 < max(by_step) <= recovered <= sum(by_step)
    # and recovery within training: off at step a, on at a later step b
    assert any(pruned_then_kept(a, hard[b]) for a in range(len(hard)) for b in range(a + 1, len(hard)))


def test_imp_keeps_the_largest_tuned_weights_each_round_and_rewinds(model, monkeypatch):
    """Every IMP round, read from what fine_tune was given and returned: it starts from the
    pre-trained weights (rewinding) under the previous round's mask, the pruned weights stay
    at zero while it trains, and the next mask keeps the (1 - level) share of all weights with
    the largest fine-tuned |w| among those still kept; the levels follow imp_levels; the task
    model of the final mask runs the pre-trained values of the kept weights."""
    from attprune.adaptation import baselines
    from attprune.adaptation.model import encoder_of

    encoder = encoder_of(model)
    pretrained = {k: v.detach().clone() for k, v in encoder.named_parameters()}
    calls = []
    real = baselines.fine_tune

    def spy(m, train_batches, *, masks=None, **kwargs):
        start = {k: v.detach().clone() for k, v in encoder_of(m).named_parameters()}
        tuned = real(m, train_batches, masks=masks, **kwargs)
        calls.append((start, {k: v.clone() for k, v in masks.items()},
                      {k: v.detach().clone() for k, v in tuned.encoder.named_parameters()}))
        return tuned

    monkeypatch.setattr(baselines, "fine_tune", spy)
    data = batches(model, n=2)
    found = imp_masks(model, data, [0.2, 0.5], epochs_per_round=1, lr=1e-3, progress=False)
    levels = imp_levels([0.2, 0.5], 0.2)
    assert len(calls) == len(levels) == 4
    names = list(found[0.5])
    n_total = sum(m.numel() for m in found[0.5].values())
    after = [c[1] for c in calls[1:]] + [found[0.5]]  # the mask each round leaves
    assert all(torch.equal(after[0][n], found[0.2][n]) for n in names)
    previous = {n: torch.ones_like(m) for n, m in found[0.5].items()}
    for level, (start, given, tuned), mask in zip(levels, calls, after):
        assert all(torch.equal(start[k], pretrained[k]) for k in pretrained)  # rewound: pre-trained values
        assert all(torch.equal(given[n], previous[n]) for n in names)
        assert not any(tuned[n][~given[n]].any() for n in names)  # pruned stays zero while training
        assert sum(int(mask[n].sum()) for n in names) == round((1 - level) * n_total)  # the schedule
        assert not any((mask[n] & ~given[n]).any() for n in names)  # nested
        kept = torch.cat([tuned[n].abs()[mask[n]] for n in names])
        dropped = torch.cat([tuned[n].abs()[given[n] & ~mask[n]] for n in names])
        assert dropped.numel() and kept.min() > dropped.max()  # the largest tuned |w| among the kept
        previous = mask
    # the pruned-by-tuned-magnitude mask differs from one-shot pre-trained magnitude pruning
    one_shot = magnitude_masks(model, 0.5)
    assert any(not torch.equal(one_shot[n], found[0.5][n]) for n in names)
    # evaluated on the pre-trained values: a copy with w0 * mask gives the task model's features
    result = fit_head(model, data, found[0.5], epochs=1, lr=1e-3, method="imp")
    reference = copy.deepcopy(encoder)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name in found[0.5]:
                p.mul_(found[0.5][name].to(p.dtype))
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    with torch.no_grad():
        expected = result.head(encoder_features(reference, None, inputs))
        assert torch.equal(result.model(model)(**inputs).logits, expected)
