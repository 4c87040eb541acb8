"""Models larger than one device: attribution, masking and compaction on a model that
accelerate dispatched (``device_map``) with layers offloaded to disk give exactly what they
give on the same model in memory; compact checkpoints reload dispatched.

Without a GPU the offload path is exercised with disk offload (parameters on the meta device,
real tensors read from the offload store by a hook for every forward), which is the same
mechanism as CPU offload on a GPU machine; the GPU test at the end runs it across devices.
"""

import pytest
import torch
import transformers as tf

import attprune
from attprune import devices
from attprune.errors import CheckpointError
from attprune.cli import main

import tiny

pytest.importorskip("accelerate")

LAYERS = {"bert": "bert.encoder.layer", "t5": "encoder.block", "llama": "model.layers", "gpt2": "transformer.h",
          "distilbert": "distilbert.transformer.layer"}


def alternating_map(model, layers: str, offloaded="disk", kept="cpu") -> dict:
    """Every module on ``kept`` except the even layers of ``layers``, which go to ``offloaded``."""
    placement = {"": kept}
    parts = layers.split(".")
    for depth in range(len(parts)):  # split the parents of the layer list into their children
        parent = ".".join(parts[:depth])
        placement.pop(parent, None)
        for name, _ in (model.get_submodule(parent) if parent else model).named_children():
            placement[f"{parent}.{name}" if parent else name] = kept
    placement.pop(layers)
    for i in range(len(model.get_submodule(layers))):
        placement[f"{layers}.{i}"] = offloaded if i % 2 == 0 else kept
    return placement


def offloaded(family: str, folder, **placement):
    model = tiny.FAMILIES[family]()
    return devices.dispatch(model, alternating_map(model, LAYERS[family], **placement), offload_folder=folder)


def model_inputs(model, batch) -> dict:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = batch["labels"].clamp_min(0)
    return inputs


def assert_same(a: attprune.Scores, b: attprune.Scores):
    assert set(a.sites) == set(b.sites)
    for path in a.sites:
        for stat in ("sum", "sum_abs", "sum_sq"):
            assert torch.allclose(getattr(a.sites[path], stat), getattr(b.sites[path], stat), rtol=0, atol=1e-12)


def score_and_compact_both(plain, model, batch, atol: float = 0.0) -> None:
    """IG scores of ``model`` equal ``plain``'s; both compacted with one plan give the same logits."""
    reference = attprune.attribute(plain, [batch], steps=4, progress=False)
    assert_same(attprune.attribute(model, [batch], steps=4, progress=False), reference)
    plan = attprune.make_plan(reference, ffn=0.5, heads=0.5)
    attprune.compact(plain, plan)
    attprune.compact(model, plan)
    inputs = model_inputs(plain, batch)
    ours, theirs = model(**inputs).logits, plain(**inputs).logits
    assert torch.equal(ours, theirs) if atol == 0 else torch.allclose(ours, theirs, rtol=0, atol=atol)


def offloaded_sites(model) -> list[str]:
    return [s.path for s in attprune.find_sites(model) if devices.is_offloaded(s.module(model))]


@pytest.mark.parametrize("family", sorted(LAYERS))
def test_ig_and_compaction_on_a_disk_offloaded_model_equal_the_model_in_memory(family, tmp_path):
    plain = tiny.FAMILIES[family]()
    model = offloaded(family, tmp_path / "offload")
    assert offloaded_sites(model), "the map must offload some sites"
    assert all(s.module(model).weight.is_meta for s in attprune.find_sites(model) if s.path in offloaded_sites(model))
    score_and_compact_both(plain, model, tiny.batch_for(plain))
    for site in attprune.find_sites(plain):  # the sliced weights stay offloaded, in compact shapes
        ours = site.module(model)
        if devices.is_offloaded(ours):
            assert ours.weight.is_meta and ours.weight.shape == site.module(plain).weight.shape
            assert torch.equal(devices.read(ours, "weight"), site.module(plain).weight)


@pytest.mark.parametrize("method", ["conductance", "grad_x_act", "fisher", "activation", "wanda", "flap", "magnitude"])
def test_every_method_agrees_on_an_offloaded_model(method, tmp_path):
    plain = tiny.bert_cls()
    batch = tiny.batch_for(plain)
    reference = attprune.attribute(plain, [batch], method=method, steps=3, progress=False)
    got = attprune.attribute(offloaded("bert", tmp_path), [batch], method=method, steps=3, progress=False)
    assert_same(got, reference)


def test_mask_on_an_offloaded_model_equals_mask_in_memory(tmp_path):
    plain, model = tiny.llama(), offloaded("llama", tmp_path)
    batch = tiny.batch_for(plain)
    plan = attprune.make_plan(attprune.attribute(plain, None, method="random", progress=False), ffn=0.4, heads=0.5)
    with attprune.mask(plain, plan), attprune.mask(model, plan):
        assert torch.equal(model(**model_inputs(plain, batch)).logits, plain(**model_inputs(plain, batch)).logits)


@pytest.mark.filterwarnings("ignore:Attempting to save a model with offloaded modules")
def test_transformers_device_map_auto_then_score_compact_save_and_reload(tmp_path):
    """The user's path: from_pretrained(device_map="auto") with too little CPU memory, so
    transformers offloads to disk; score, compact, save, reload dispatched or whole."""
    plain = tiny.bert_cls()
    plain.save_pretrained(tmp_path / "dense")
    model = tf.BertForSequenceClassification.from_pretrained(
        tmp_path / "dense", device_map="auto", max_memory={"cpu": "30KB"}, offload_folder=tmp_path / "offload")
    assert "disk" in model.hf_device_map.values() and offloaded_sites(model)
    batches = [tiny.batch_for(plain, seed=s) for s in range(2)]
    reference = attprune.attribute(plain, batches, steps=3, progress=False)
    assert_same(attprune.attribute(model, batches, steps=3, progress=False), reference)

    plan = attprune.make_plan(reference, ffn=0.5, heads=0.25)
    attprune.compact(plain, plan)
    attprune.compact(model, plan)
    attprune.save_pretrained(model, tmp_path / "compact")
    inputs = model_inputs(plain, batches[0])
    expected = plain(**inputs).logits
    assert torch.equal(attprune.from_pretrained(tmp_path / "compact")(**inputs).logits, expected)
    for budget in ("20KB", "45KB"):  # all on disk; part in CPU memory, part on disk
        back = attprune.from_pretrained(tmp_path / "compact", device_map="auto", max_memory={"cpu": budget})
        assert "disk" in back.hf_device_map.values()
        assert torch.equal(back(**inputs).logits, expected)
    assert not (tmp_path / "compact" / "index.json").exists()  # disk weights are read from the checkpoint


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_dispatched_reload_of_tied_weights_and_dtypes(family, tmp_path):
    plain = tiny.FAMILIES[family]()
    scores = attprune.attribute(plain, None, method="magnitude", progress=False)
    attprune.compact(plain, attprune.make_plan(scores, ffn=0.5, heads=0.34))
    attprune.save_pretrained(plain, tmp_path)
    inputs = model_inputs(plain, tiny.batch_for(plain))
    placement = alternating_map(plain, LAYERS[family])
    back = attprune.from_pretrained(tmp_path, device_map=placement)
    assert back.lm_head.weight is back.get_input_embeddings().weight  # still tied
    # (T5's reloaded per-layer position tables sum in another order: ~1e-15)
    assert torch.allclose(back(**inputs).logits, plain(**inputs).logits, rtol=0, atol=1e-12)
    single = attprune.from_pretrained(tmp_path, torch_dtype=torch.float32, device_map={"": "disk"})
    assert {p.dtype for p in single.parameters()} == {torch.float32}
    assert torch.allclose(single(**inputs).logits.double(), plain(**inputs).logits, atol=1e-4)
    embeddings = "transformer.wte" if family == "gpt2" else "shared"
    apart = {**{name: "cpu" for name, _ in plain.named_children()}, embeddings: "disk"}
    with pytest.raises(ValueError, match="is tied to .* give both modules the same device"):
        attprune.from_pretrained(tmp_path, device_map=apart if family == "t5" else
                                 {**{f"transformer.{n}": "cpu" for n, _ in plain.transformer.named_children()},
                                  "lm_head": "cpu", embeddings: "disk"})


def test_dispatch_errors_are_clear(tmp_path):
    plain = tiny.bert_cls()
    attprune.save_pretrained(plain, tmp_path / "ck")
    with pytest.raises(ValueError, match="max_memory applies to a dispatched model"):
        attprune.from_pretrained(tmp_path / "ck", max_memory={"cpu": "1GB"})
    with pytest.raises(ValueError, match="device_map must be a device"):
        attprune.from_pretrained(tmp_path / "ck", device_map=3.5)
    with pytest.raises(ValueError, match="pass offload_folder"):
        devices.dispatch(tiny.bert_cls(), {"": "disk"})
    with pytest.raises(ValueError, match="device_map gives no device for classifier"):
        attprune.from_pretrained(tmp_path / "ck", device_map={"bert": "cpu"})
    with pytest.raises(ValueError, match="with a {module: device} dict it would be ignored"):
        attprune.from_pretrained(tmp_path / "ck", device_map={"": "cpu"}, max_memory={"cpu": "1GB"})
    with pytest.raises(ValueError, match="adapting by pruning needs the model's weights in memory"):
        attprune.adapt(offloaded("bert", tmp_path / "offload"), [tiny.batch_for(plain)], sparsity=0.5)
    weights = tmp_path / "ck" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        attprune.from_pretrained(tmp_path / "ck", device_map="auto")


def test_cli_scores_a_dispatched_model_like_an_undispatched_one(float64_model_dir, eleven_rows, tmp_path, capsys,
                                                               monkeypatch):
    from attprune import cli

    loaded = []
    load = cli.load_model
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: loaded.append(load(*a, **k)) or loaded[-1])
    common = ["score", "--model", str(float64_model_dir), "--data", str(eleven_rows), "--steps", "3",
              "--batch-size", "4", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "whole")]) == 0
    assert main(common + ["--out", str(tmp_path / "spread"), "--device-map", "auto", "--max-memory", "cpu=200KB",
                          "--offload-folder", str(tmp_path / "offload")]) == 0
    assert not hasattr(loaded[0][0], "hf_device_map") and "disk" in loaded[1][0].hf_device_map.values()
    assert_same(attprune.Scores.load(tmp_path / "spread" / "scores.safetensors"),
                attprune.Scores.load(tmp_path / "whole" / "scores.safetensors"))
    capsys.readouterr()
    assert main(common + ["--out", str(tmp_path / "x"), "--max-memory", "cpu=1GB"]) == 2
    assert "--max-memory and --offload-folder apply with --device-map" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(common + ["--out", str(tmp_path / "x"), "--device-map", "auto", "--max-memory", "lots"])
    assert exit_info.value.code == 2 and "DEVICE=SIZE" in capsys.readouterr().err


def test_the_memory_budget_follows_the_fullest_gpu_of_a_dispatched_model(monkeypatch):
    from attprune.attribution import memory

    model = tiny.bert_cls()
    free = {0: 8 * 2**30, 1: 2 * 2**30}
    monkeypatch.setattr(devices, "execution_devices", lambda m: {torch.device("cuda", 0), torch.device("cuda", 1)})
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (free[torch.device(d).index], 80 * 2**30))
    per_token = memory.bytes_per_token(model.config, 16, 8)
    assert memory.token_budget(model, None, None, 16) == (2 * 2**30 // 2) // per_token


def test_execution_device_follows_hooks_then_parameters():
    from accelerate.hooks import AlignDevicesHook, SequentialHook

    model = tiny.bert_cls()
    layer = model.bert.encoder.layer[1]
    assert devices.execution_device(model, "bert.encoder.layer.1.output.dense") == torch.device("cpu")
    layer._hf_hook = AlignDevicesHook(execution_device=3)  # an ancestor's hook decides (cuda:3 here)
    assert devices.execution_device(model, "bert.encoder.layer.1.output.dense") == torch.device("cuda", 3)
    assert devices.execution_devices(model) == {torch.device("cpu"), torch.device("cuda", 3)}
    layer.output.dense._hf_hook = SequentialHook(AlignDevicesHook(execution_device="meta"))  # the nearest wins
    assert devices.execution_device(model, "bert.encoder.layer.1.output.dense") == torch.device("meta")
    assert devices.input_device(model) == torch.device("cpu")
    model.bert.embeddings.word_embeddings._hf_hook = AlignDevicesHook(execution_device=1)
    assert devices.input_device(model) == torch.device("cuda", 1)
    assert devices.execution_device(tiny.bert_cls().to("meta")) == torch.device("cpu")


def test_a_hook_that_offloads_its_submodules_is_refused(tmp_path):
    import accelerate

    model = tiny.bert_cls()
    placement = alternating_map(model, LAYERS["bert"])
    accelerate.dispatch_model(model, placement, offload_dir=str(tmp_path),
                              preload_module_classes=["BertSelfOutput", "BertSelfAttention"])
    batch = tiny.batch_for(model)
    for use in (lambda: attprune.attribute(model, [batch], steps=2, progress=False),
                lambda: attprune.compact(model, attprune.make_plan(attprune.attribute(model, None, method="random",
                                                                                      progress=False), ffn=0.5))):
        with pytest.raises(ValueError, match="preload_module_classes"):
            use()


@pytest.mark.gpu
def test_cpu_offload_to_a_gpu_equals_the_model_on_the_gpu(tmp_path):
    """Layers alternately on cuda:0 and offloaded to CPU memory (run on cuda:0 by a hook)."""
    plain = tiny.bert_cls().cuda()
    model = tiny.bert_cls()
    model = devices.dispatch(model, alternating_map(model, LAYERS["bert"], offloaded="cpu", kept=0))
    assert offloaded_sites(model) and devices.input_device(model) == torch.device("cuda", 0)
    score_and_compact_both(plain, model, {k: v.cuda() for k, v in tiny.batch_for(plain).items()}, atol=1e-12)
