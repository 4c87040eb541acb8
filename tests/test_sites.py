"""Site discovery for every supported family: counts, sizes, paths, producers."""

import pytest
from torch import nn

import attprune
from attprune.architectures import unregister_architecture
from attprune.errors import UnsupportedModelError
from attprune.sites import find_embeddings

import tiny

# family -> (n ffn sites, n head sites, neurons per ffn site, heads per site, head_dim, kv heads)
EXPECTED = {
    "bert": (2, 2, 37, 4, 6, 4),
    "roberta": (2, 2, 29, 3, 8, 3),
    "electra": (2, 2, 31, 4, 6, 4),
    "distilbert": (2, 2, 35, 4, 6, 4),
    "t5": (4, 6, 27, 3, 6, 3),
    "t5-gated": (4, 6, 27, 3, 6, 3),
    "llama": (2, 2, 33, 6, 4, 2),
    "mistral": (2, 2, 33, 6, 4, 2),
    "qwen2": (2, 2, 33, 6, 4, 2),
    "gpt2": (2, 2, 35, 4, 6, 4),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_sites_of_every_family(family):
    model = tiny.FAMILIES[family]()
    n_ffn, n_att, neurons, heads, head_dim, kv = EXPECTED[family]
    sites = attprune.find_sites(model)
    ffn = [s for s in sites if s.kind == "ffn"]
    att = [s for s in sites if s.kind == "heads"]
    assert (len(ffn), len(att)) == (n_ffn, n_att)
    modules = dict(model.named_modules())
    for s in sites:
        assert s.path in modules and s.block in modules
        assert all(p in modules for p in s.producers) and s.producers
    assert all(s.n_units == neurons and s.unit_size == 1 for s in ffn)
    assert all(s.n_units == heads and s.unit_size == head_dim and s.n_kv_heads == kv for s in att)
    # the units exactly tile the projection's input features
    for s in sites:
        module = modules[s.path]
        width = module.weight.shape[0] if type(module).__name__ == "Conv1D" else module.in_features
        assert width == s.n_features


def test_paths_and_producers_of_known_layouts():
    llama = attprune.find_sites(tiny.llama())
    assert [s.path for s in llama] == ["model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj",
                                       "model.layers.1.self_attn.o_proj", "model.layers.1.mlp.down_proj"]
    assert llama[1].producers == ("model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj")
    gpt2 = attprune.find_sites(tiny.gpt2(), units=("heads",))
    assert gpt2[0].fused_qkv and gpt2[0].producers == ("transformer.h.0.attn.c_attn",)
    t5 = attprune.find_sites(tiny.t5())
    decoder = [s.path for s in t5 if s.stream == "decoder"]
    assert decoder[:3] == ["decoder.block.0.layer.0.SelfAttention.o", "decoder.block.0.layer.1.EncDecAttention.o",
                           "decoder.block.0.layer.2.DenseReluDense.wo"]
    gated = attprune.find_sites(tiny.t5(gated=True), units=("ffn",))
    assert gated[0].producers[-2:] == ("encoder.block.0.layer.1.DenseReluDense.wi_0",
                                       "encoder.block.0.layer.1.DenseReluDense.wi_1")


def test_base_model_without_head_has_the_same_sites_unprefixed():
    model = tiny.bert_cls()
    base = attprune.find_sites(model.bert)
    assert [s.path for s in base] == [s.path.removeprefix("bert.") for s in attprune.find_sites(model)]


def test_units_filter_and_bad_units():
    model = tiny.bert_cls()
    assert {s.kind for s in attprune.find_sites(model, units=("heads",))} == {"heads"}
    with pytest.raises(ValueError, match="units"):
        attprune.find_sites(model, units=("neurons",))


def test_unknown_architecture_names_class_and_the_fix():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Cfg", (), {"model_type": "toy"})()
            self.lin = nn.Linear(3, 3)

    with pytest.raises(UnsupportedModelError, match=r"Toy \(model_type='toy'\).*register_architecture"):
        attprune.find_sites(Toy())


def test_register_custom_architecture():
    """A user-described family works end to end (a BERT clone registered under a new type)."""
    model = tiny.bert_cls()
    model.config.model_type = "my_bert"
    spec = attprune.ArchSpec(
        name="my-bert", model_types=("my_bert",), blocks=(("encoder.layer", "input"),),
        attention=(attprune.AttentionSpec(module="attention", out="output.dense", q="self.query",
                                          k="self.key", v="self.value"),),
        ffn=(attprune.FFNSpec(module="", down="output.dense", up=("intermediate.dense",)),),
        head_dim=lambda cfg: cfg.hidden_size // cfg.num_attention_heads, embeddings=("embeddings",))
    attprune.register_architecture(spec)
    try:
        sites = attprune.find_sites(model)
        assert len(sites) == 4
        with pytest.raises(ValueError, match="already has the spec"):
            attprune.register_architecture(attprune.ArchSpec(**{**spec.__dict__, "name": "other"}))
        scores = attprune.attribute(model, [tiny.batch_for(model)], steps=2, progress=False)
        assert set(scores.sites) == {s.path for s in sites}
    finally:
        unregister_architecture(spec)


def test_embeddings_found():
    assert find_embeddings(tiny.bert_cls()) == ["bert.embeddings"]
    assert find_embeddings(tiny.gpt2()) == ["transformer.drop"]
    assert "encoder.embed_tokens" in find_embeddings(tiny.t5())
