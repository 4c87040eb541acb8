"""attprune.export: plain transformers (loaded in a process that never imports attprune),
ONNX (run in ONNX Runtime) and GGUF (run in llama.cpp), each against the torch compact model."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap

import pytest
import torch

import attprune
from attprune.errors import ExportError
from attprune.export import layer_shapes
from test_compact import aggressive_plan, logits, model_inputs

import tiny

# most exports here have odd widths on purpose; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore:pruned FFN widths:UserWarning")


def uniform_plan(model, ffn=0.4, heads=0.34):
    scores = attprune.attribute(model, None, method="random", seed=3)
    return attprune.make_plan(scores, ffn=ffn, heads=heads, scope="uniform")


# ---------------------------------------------------------------------------------------------
# plans of one shape

@pytest.mark.parametrize("family", ["llama", "qwen2", "t5", "bert", "gpt2"])
def test_uniform_plans_give_every_layer_the_same_shape(family):
    model = tiny.FAMILIES[family]()
    if family in ("llama", "qwen2"):
        model = tiny.causal_lm(family, layers=4, dtype=torch.float64)
    attprune.compact(model, uniform_plan(model, ffn=0.37, heads=0.5))
    shapes = layer_shapes(model)
    assert len(shapes) >= 2
    assert len({(s.ffn, s.heads, s.kv_heads) for s in shapes}) == 1
    assert 0 < shapes[0].ffn < model.config.to_dict().get("intermediate_size", 10 ** 9)


def test_uniform_grouped_heads_keep_the_best_units_per_layer():
    model = tiny.causal_lm("llama", layers=4, dtype=torch.float64)
    scores = attprune.attribute(model, None, method="random", seed=5)
    layer = attprune.make_plan(scores, heads=0.5, scope="layer")
    uniform = attprune.make_plan(scores, heads=0.5, scope="uniform")
    assert len({len(v) for v in uniform.heads.values()}) == 1
    for path, kept in uniform.heads.items():  # the same count as per-layer ranking, the best heads of each group
        values = scores.mean_abs("heads")[path]
        per_group = values.numel() // 2
        groups = (kept // per_group).unique()
        for g in groups:
            mine = kept[kept // per_group == g]
            best = values.view(2, per_group)[g].topk(mine.numel()).indices + g * per_group
            assert set(mine.tolist()) == set(best.tolist())
        assert len(kept) == len(layer.heads[path]) or abs(len(kept) - len(layer.heads[path])) <= per_group


# ---------------------------------------------------------------------------------------------
# plain transformers

LOAD_PLAIN = textwrap.dedent("""
    import sys, torch, transformers
    folder, auto, inputs, out = sys.argv[1:]
    model = getattr(transformers, auto).from_pretrained(folder, dtype=torch.float64).eval()
    batch = torch.load(inputs)
    with torch.no_grad():
        logits = model(**batch).logits
    assert not any(name.startswith("attprune") for name in sys.modules), "attprune was imported"
    torch.save(logits, out)
""")

AUTO = {"llama": "AutoModelForCausalLM", "mistral": "AutoModelForCausalLM", "qwen2": "AutoModelForCausalLM",
        "gpt2": "AutoModelForCausalLM", "bert": "AutoModelForSequenceClassification",
        "distilbert": "AutoModelForSequenceClassification", "t5": "AutoModelForSeq2SeqLM"}
FFN_ONLY = ("gpt2", "bert", "distilbert", "t5")


def run_plain(folder, auto, inputs, tmp_path):
    torch.save(inputs, tmp_path / "inputs.pt")
    subprocess.run([sys.executable, "-c", LOAD_PLAIN, str(folder), auto, str(tmp_path / "inputs.pt"),
                    str(tmp_path / "out.pt")], check=True, capture_output=True, text=True, timeout=300)
    return torch.load(tmp_path / "out.pt")


@pytest.mark.parametrize("family", sorted(AUTO))
def test_hf_export_loads_in_plain_transformers_with_equal_logits(family, tmp_path):
    model = tiny.FAMILIES[family]()
    plan = uniform_plan(model, heads=0.0 if family in FFN_ONLY else 0.34)
    attprune.compact(model, plan)
    inputs = model_inputs(model, tiny.batch_for(model, labels=family == "t5"))
    out = attprune.export(model, tmp_path / "plain", format="hf")
    config = json.loads((out / "config.json").read_text())
    assert "attprune" not in json.dumps(config)
    plain = run_plain(out, AUTO[family], inputs, tmp_path)
    assert torch.allclose(plain, logits(model, inputs), atol=1e-10, rtol=0)


def test_hf_export_refuses_what_a_config_cannot_state(tmp_path):
    model = tiny.llama()
    attprune.compact(model, aggressive_plan(model, empty=False))  # per-layer widths differ
    with pytest.raises(ExportError, match="scope='uniform'"):
        attprune.export(model, tmp_path / "x", format="hf")
    bert = tiny.bert_cls()
    attprune.compact(bert, uniform_plan(bert, ffn=0.2, heads=0.5))
    with pytest.raises(ExportError, match="cannot express removed heads"):
        attprune.export(bert, tmp_path / "y", format="hf")
    empty = tiny.llama()
    attprune.compact(empty, attprune.make_plan(attprune.attribute(empty, None, method="random"), ffn=0.99,
                                               scope="uniform", min_keep=0))
    with pytest.raises(ExportError, match="without an FFN"):
        attprune.export(empty, tmp_path / "z", format="hf")
    with pytest.raises(attprune.InputError, match="unknown export format"):
        attprune.export(empty, tmp_path / "z", format="tflite")
    assert not any(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------------------------------------
# ONNX Runtime

@pytest.mark.parametrize("family", sorted(tiny.FAMILIES))
def test_onnx_export_runs_in_onnxruntime_with_different_widths_per_layer(family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = tiny.FAMILIES[family](dtype=torch.float32)
    attprune.compact(model, aggressive_plan(model))  # widths differ; the first FFN and head sites emptied
    example = model_inputs(model, tiny.batch_for(model))
    path = attprune.export(model, tmp_path / "model.onnx", format="onnx", example=tiny.batch_for(model))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = model_inputs(model, tiny.batch_for(model, batch_size=2, seq_len=11, seed=7))  # dynamic axes
    for inputs in (example, other):
        names = [i.name for i in session.get_inputs()]
        (out,) = session.run(None, {n: inputs[n].numpy() for n in names})
        expected = logits(model, inputs)
        assert out.shape == tuple(expected.shape)
        assert (torch.from_numpy(out) - expected).abs().max() <= 1e-4 * max(1.0, expected.abs().max())


def test_onnx_export_needs_an_example(tmp_path):
    model = tiny.t5(dtype=torch.float32)
    with pytest.raises(attprune.InputError, match="example"):
        attprune.export(model, tmp_path / "m.onnx", format="onnx", example=[1, 2])
    with pytest.raises(ExportError, match="decoder_input_ids"):
        attprune.export(model, tmp_path / "m.onnx", format="onnx", example={"input_ids": torch.ones(1, 3).long()})
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# llama.cpp

TEXTS = ["The quick brown fox: 1,234 tokens!", "  Pruning, then   llama.cpp reads it.\nNew line <s> here"]


def llama_cpp_model(path, **kw):
    llama_cpp = pytest.importorskip("llama_cpp")
    # f32 KV cache: the comparison is of the weights and the graph, not of llama.cpp's f16 cache
    return llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2,
                           type_k=0, type_v=0, **kw)


def llama_cpp_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(llm.scores[:len(ids)].copy())


def llama_cpp_greedy(llm, ids, steps):
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(steps):
        out.append(int(llm.scores[llm.n_tokens - 1].argmax()))
        llm.eval([out[-1]])
    return out


def torch_greedy(model, ids, steps):
    """Greedy continuation by full forward passes (no end-of-text stop, as the llama.cpp loop above)."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[-steps:]


def check_in_llama_cpp(model, tokenizer, path, dtype):
    llm = llama_cpp_model(path)
    try:
        for text in TEXTS:
            ids = tokenizer(text)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # tokenizes as the original
            got = llama_cpp_logits(llm, ids)
            with torch.no_grad():
                expected = model(torch.tensor([ids])).logits[0].float()
            error, spread = (got - expected).abs().max(), expected.max() - expected.min()
            if dtype == "f32":
                assert error <= 1e-3 * spread
            else:  # the same top-1, except where the float32 model's own top-2 margin is within the rounding
                assert error <= (1e-2 if dtype == "q8_0" else 5e-3) * spread
                top2 = expected.topk(2).values
                agree = got.argmax(-1) == expected.argmax(-1)
                assert agree.float().mean() >= 0.9
                assert torch.all(agree | (top2[:, 0] - top2[:, 1] < 2 * error))
        if dtype == "f32":
            ids = tokenizer(TEXTS[0])["input_ids"]
            assert llama_cpp_greedy(llm, ids, 32) == torch_greedy(model, ids, 32)
    finally:
        llm.close()


@pytest.mark.parametrize("family,dtype,scope", [("llama", "f32", "aggressive"), ("llama", "f16", "aggressive"),
                                                ("llama", "q8_0", "aggressive"), ("qwen2", "f32", "aggressive"),
                                                ("mistral", "f32", "uniform"), ("llama", "f32", "uniform")])
def test_gguf_export_runs_in_llama_cpp_with_equal_logits(family, dtype, scope, tmp_path):
    pytest.importorskip("llama_cpp")
    tokenizer = tiny.byte_bpe_tokenizer()
    # q8_0 quantizes rows in blocks of 32: a hidden size of 96 gives it whole blocks
    model = tiny.causal_lm(family, vocab_size=len(tokenizer), hidden=96 if dtype == "q8_0" else 48)
    plan = aggressive_plan(model) if scope == "aggressive" else uniform_plan(model)  # aggressive: empty layers too
    attprune.compact(model, plan)
    path = attprune.export(model, tmp_path / "m.gguf", format="gguf", tokenizer=tokenizer, dtype=dtype)
    import gguf

    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == ("llama" if scope == "uniform" else "deci")
    if dtype == "q8_0":
        assert "Q8_0" in {t.tensor_type.name for t in reader.tensors}
    check_in_llama_cpp(model, tokenizer, path, dtype)


def test_gguf_export_warns_of_widths_llama_cpp_runs_slowly(tmp_path, recwarn):
    tokenizer = tiny.byte_bpe_tokenizer()
    model = tiny.causal_lm("llama", vocab_size=len(tokenizer))
    scores = attprune.attribute(model, None, method="random")
    odd = attprune.compact(copy.deepcopy(model), attprune.make_plan(scores, ffn=0.3, heads=0.34))
    with pytest.warns(UserWarning, match="round_to"):
        attprune.export(odd, tmp_path / "odd.gguf", format="gguf", tokenizer=tokenizer)
    even = attprune.compact(model, attprune.make_plan(scores, ffn=0.3, heads=0.34, round_to={"ffn": 32}))
    recwarn.clear()
    attprune.export(even, tmp_path / "even.gguf", format="gguf", tokenizer=tokenizer)
    assert not [w for w in recwarn if "round_to" in str(w.message)]


def test_gguf_export_refuses_what_llama_cpp_cannot_run(tmp_path):
    tokenizer = tiny.byte_bpe_tokenizer()
    with pytest.raises(ExportError, match="Llama family"):
        attprune.export(tiny.gpt2(), tmp_path / "a.gguf", format="gguf", tokenizer=tokenizer)
    model = tiny.causal_lm("llama", vocab_size=len(tokenizer))
    with pytest.raises(ExportError, match="tokenizer="):
        attprune.export(model, tmp_path / "a.gguf", format="gguf", tokenizer=None)
    with pytest.raises(ExportError, match="dtype"):
        attprune.export(model, tmp_path / "a.gguf", format="gguf", tokenizer=tokenizer, dtype="q4_k")
    small = tiny.causal_lm("llama", vocab_size=len(tokenizer) - 5)
    with pytest.raises(ExportError, match="embeddings"):
        attprune.export(small, tmp_path / "a.gguf", format="gguf", tokenizer=tokenizer)
    assert not any(tmp_path.iterdir())


@pytest.mark.llm
@pytest.mark.slow
def test_smollm2_pruned_unevenly_runs_in_llama_cpp(tmp_path):
    from attprune.models import load_smollm2

    model, tokenizer = load_smollm2()
    scores = attprune.attribute(model, None, method="random", seed=1)
    attprune.compact(model, attprune.make_plan(scores, ffn=0.3, heads=0.34))  # global: widths differ per layer
    assert len({(s.ffn, s.heads) for s in layer_shapes(model)}) > 1
    for dtype in ("f32", "f16"):
        path = attprune.export(model, tmp_path / f"smollm2-{dtype}.gguf", format="gguf", tokenizer=tokenizer,
                               dtype=dtype)
        check_in_llama_cpp(model, tokenizer, path, dtype)


# ---------------------------------------------------------------------------------------------
# the command line

def test_cli_exports_a_compact_checkpoint_in_every_format(tmp_path, capsys):
    from attprune.cli import main

    tokenizer = tiny.byte_bpe_tokenizer()
    model = tiny.causal_lm("llama", vocab_size=len(tokenizer))
    attprune.compact(model, uniform_plan(model))
    attprune.save_pretrained(model, tmp_path / "ckpt", tokenizer=tokenizer)
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    expected = logits(model, {"input_ids": ids})
    for fmt, out in (("hf", "plain"), ("onnx", "m.onnx"), ("gguf", "m.gguf")):
        assert main(["export", "--model", str(tmp_path / "ckpt"), "--format", fmt, "--out", str(tmp_path / out),
                     "--dtype", "f32"]) == 0
        assert f"wrote {fmt}" in capsys.readouterr().out
    plain = run_plain(tmp_path / "plain", "AutoModelForCausalLM", {"input_ids": ids}, tmp_path)
    assert (plain.float() - expected).abs().max() <= 1e-5
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy()}
    assert (torch.from_numpy(session.run(None, feed)[0]) - expected).abs().max() <= 1e-4
    llm = llama_cpp_model(tmp_path / "m.gguf")
    try:
        got = llama_cpp_logits(llm, ids[0].tolist())
    finally:
        llm.close()
    assert (got - expected[0]).abs().max() <= 1e-3 * (expected.max() - expected.min())
    bert = tiny.bert_cls(dtype=torch.float32)
    attprune.compact(bert, uniform_plan(bert, heads=0.5))
    attprune.save_pretrained(bert, tmp_path / "bert", tokenizer=tokenizer)
    assert main(["export", "--model", str(tmp_path / "bert"), "--format", "hf", "--out", str(tmp_path / "b")]) == 2
    assert "cannot express removed heads" in capsys.readouterr().err
