"""Structural facts of the code, checked: a family is described in one place (one
``register_architecture`` call, here for OPT, which attprune does not ship, taking it through
every stage and export), no per-family table outside ``architectures/``, extension axes
dispatched through registries, no import cycle, and no experiment pipeline written twice."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import transformers as tf

import attprune
from attprune.architectures import (ArchSpec, AttentionSpec, ConfigKeys, FFNSpec, HeadLayout, register_architecture,
                                    unregister_architecture)
from attprune.architectures.spec import _REGISTRY
from attprune.errors import ExportError

PACKAGE = Path(attprune.__file__).resolve().parent

# -- one call adds a family ---------------------------------------------------------------------

#: OPT, described from its transformers modules only (no edit inside attprune/)
OPT = ArchSpec(
    name="opt", model_types=("opt",),
    blocks=(("decoder.layers", "input"),),
    attention=(AttentionSpec(module="self_attn", out="out_proj", q="q_proj", k="k_proj", v="v_proj"),),
    ffn=(FFNSpec(module="", down="fc2", up=("fc1",)),),
    head_dim=lambda config: config.hidden_size // config.num_attention_heads,
    embeddings=("embed_tokens",),
    heads=HeadLayout(lambda n_heads, n_kv_heads, head_dim: {"num_heads": n_heads}, empty_out="out_proj",
                     empty_outputs=2),
    widths=ConfigKeys("ffn_dim"),  # heads: OPT's head size is hidden_size / heads, so removed heads are no config
)


@pytest.fixture()
def opt():
    register_architecture(OPT)
    torch.manual_seed(0)
    config = tf.OPTConfig(vocab_size=61, hidden_size=24, num_hidden_layers=3, num_attention_heads=4, ffn_dim=37,
                          max_position_embeddings=64, word_embed_proj_dim=24)
    model = tf.OPTForCausalLM(config).double().eval()
    yield model
    unregister_architecture(OPT)


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 61, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_a_family_registered_outside_the_package_goes_through_every_stage(opt, tmp_path):
    batch = _batch()
    scores = attprune.attribute(opt, [batch], steps=3, progress=False)
    assert len(scores.ffn) == 3 and len(scores.heads) == 3
    plan = attprune.make_plan(scores, ffn=0.4, heads=0.5)
    with attprune.mask(opt, plan):
        masked = _logits(opt, batch)
    attprune.compact(opt, plan)
    torch.testing.assert_close(_logits(opt, batch), masked, rtol=1e-10, atol=1e-12)
    attprune.save_pretrained(opt, tmp_path / "compact")
    reloaded = attprune.from_pretrained(tmp_path / "compact")
    torch.testing.assert_close(_logits(reloaded, batch), masked, rtol=1e-10, atol=1e-12)


def test_a_family_registered_outside_the_package_exports_to_what_can_express_it(opt, tmp_path):
    ort = pytest.importorskip("onnxruntime")  # an "export" extra: installed by make setup
    batch = _batch()
    scores = attprune.attribute(opt, None, method="random", seed=1)
    varied = attprune.compact(opt.float(), attprune.make_plan(scores, ffn=0.4, heads=0.5))
    path = attprune.export(varied, tmp_path / "opt.onnx", format="onnx", example=batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {i.name: batch[i.name].numpy() for i in session.get_inputs()})
    assert (torch.from_numpy(out) - _logits(varied, batch)).abs().max() <= 1e-4
    with pytest.raises(ExportError, match="GGUFLayout.*'opt'"):
        attprune.export(varied, tmp_path / "opt.gguf", format="gguf", tokenizer=object())
    with pytest.raises(ExportError, match="scope='uniform'"):
        attprune.export(varied, tmp_path / "plain", format="hf")


def test_a_registered_family_with_config_keys_exports_a_plain_checkpoint(opt, tmp_path):
    batch = _batch()
    scores = attprune.attribute(opt, None, method="random", seed=2)
    attprune.compact(opt, attprune.make_plan(scores, ffn=0.4, scope="uniform"))
    out = attprune.export(opt, tmp_path / "plain", format="hf")
    assert json.loads((out / "config.json").read_text())["ffn_dim"] == opt.model.decoder.layers[0].fc1.out_features
    plain = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float64).eval()
    torch.testing.assert_close(_logits(plain, batch), _logits(opt, batch), rtol=1e-10, atol=1e-12)


# -- the built-in families that share a spec export too --------------------------------------

def _tiny(name):
    torch.manual_seed(0)
    if name == "mt5":
        config = tf.MT5Config(vocab_size=61, d_model=16, d_kv=4, d_ff=27, num_layers=2, num_heads=4,
                              decoder_start_token_id=0, relative_attention_num_buckets=8)
        return tf.MT5ForConditionalGeneration(config).double().eval()
    cls = {"xlm-roberta": (tf.XLMRobertaConfig, tf.XLMRobertaForSequenceClassification),
           "camembert": (tf.CamembertConfig, tf.CamembertForSequenceClassification)}[name]
    config = cls[0](vocab_size=61, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=29,
                    max_position_embeddings=40, num_labels=2, pad_token_id=1)
    return cls[1](config).double().eval()


@pytest.mark.parametrize("name", ["xlm-roberta", "camembert", "mt5"])
def test_families_sharing_a_spec_export_to_plain_transformers(name, tmp_path):
    model = _tiny(name)
    scores = attprune.attribute(model, None, method="random", seed=4)
    attprune.compact(model, attprune.make_plan(scores, ffn=0.3, scope="uniform"))
    out = attprune.export(model, tmp_path / name, format="hf")
    ids = torch.randint(3, 61, (2, 6), generator=torch.Generator().manual_seed(3))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if name == "mt5":
        inputs["decoder_input_ids"] = ids[:, :4]
    auto = tf.AutoModelForSeq2SeqLM if name == "mt5" else tf.AutoModelForSequenceClassification
    plain = auto.from_pretrained(out, dtype=torch.float64).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, model(**inputs).logits, rtol=1e-10, atol=1e-12)
    if name != "mt5":  # RoBERTa's positions start after padding_idx + 1 rows
        assert attprune.attribution.inputs.max_tokens(model) == 40 - 2


# -- no per-family table, no dispatch chains, no cycles, one pipeline --------------------------

def _sources(folder: Path = PACKAGE):
    for path in sorted(folder.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


#: strings that equal a model type but name something else
NOT_FAMILIES = {("export/gguf.py", "gpt2"): "llama.cpp's tokenizer type of byte-level BPE vocabularies"}


def test_no_family_is_named_outside_architectures():
    """Every model_type string lives in architectures/: a family is described in one place."""
    model_types = set(_REGISTRY)
    found = []
    for path, tree in _sources():
        where = str(path.relative_to(PACKAGE))
        if "architectures" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in model_types and (where, node.value) not in NOT_FAMILIES:
                found.append(f"{where}:{node.lineno} {node.value!r}")
    assert not found, "model types named outside architectures/: " + ", ".join(found)


def _compared_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


@pytest.mark.parametrize("axis", ["backend", "format"])
def test_extension_axes_dispatch_through_registries(axis):
    """No ``if backend == "..."`` / ``if args.format == "..."``: backends and export formats are registries."""
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and _compared_name(node.left) == axis and any(
                    isinstance(c, ast.Constant) and isinstance(c.value, str) for c in node.comparators):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, f"{axis} compared with a name: " + ", ".join(found)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, tree: ast.AST) -> set[str]:
    """Every attprune module ``path`` imports, wherever the import stands (in a function too)."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("attprune")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("attprune"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def test_no_import_cycle_in_the_package():
    modules = {_module_name(p): _imports(p, t) for p, t in _sources()}
    graph = {m: {i for i in imports if i in modules and i != m} for m, imports in modules.items()}
    # a package's __init__ importing its own modules is how it hands names on, not a cycle of code
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_library_never_imports_the_research_harness():
    """Only the command line (``attprune demo`` / ``fetch``) calls into ``attprune.experiments``."""
    found = []
    for path, tree in _sources():
        module = _module_name(path)
        if module.startswith("attprune.experiments") or module == "attprune.cli":
            continue
        if any(i.startswith("attprune.experiments") for i in _imports(path, tree)):
            found.append(module)
    assert not found, f"library modules importing the harness: {found}"


#: the steps of the experiment pipeline: each defined once in the package
PIPELINE_STEPS = ("score", "evaluate", "pruned_copy", "attribution_rows", "draw_rows", "text_batches",
                  "answer_batches", "answer_log_likelihoods", "padded", "encode")


def test_no_pipeline_step_is_written_twice():
    where: dict[str, list[str]] = {}
    for path, tree in _sources():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in PIPELINE_STEPS:
                where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
    twice = {name: files for name, files in where.items() if len(files) > 1}
    assert not twice, f"written twice: {twice}"
    assert where["score"] == ["experiments/pipeline.py"] and where["evaluate"] == ["experiments/pipeline.py"]
