"""The real packaged pretrained model: exact IG on real sentences, and the demo end to end."""

import pytest
import torch
from captum.attr import IntegratedGradients

import attprune
from attprune.experiments.demo import run_demo
from attprune.models import load_minilm_classifier
from attprune.samples import LABELS, SENTENCES

import reference

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = load_minilm_classifier()
    enc = tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    return model, dict(enc, labels=torch.tensor(LABELS[:4]))


def test_minilm_sites(minilm):
    model, _ = minilm
    sites = attprune.find_sites(model)
    assert len(sites) == 12
    assert sum(s.n_units for s in sites if s.kind == "ffn") == 6 * 1536
    assert all(s.n_units == 12 and s.unit_size == 32 for s in sites if s.kind == "heads")


def test_minilm_ig_matches_captum_in_float64(minilm):
    model, batch = minilm
    model = model.double()
    try:
        scores = attprune.attribute(model, [batch], steps=8, quadrature="riemann_right", units=("ffn", "heads"),
                                    progress=False)
        for site in [attprune.find_sites(model)[i] for i in (0, 7, 11)]:
            module = model.get_submodule(site.path)

            def forward(x_site, ids, mask):
                h = module.register_forward_pre_hook(lambda m, a: (x_site,))
                try:
                    out = model(input_ids=ids, attention_mask=mask)
                finally:
                    h.remove()
                return reference.objective(model, out, batch["labels"].repeat(x_site.shape[0] // 4))

            x = reference.site_input(model, site.path, batch)
            attr = IntegratedGradients(forward).attribute(
                x, baselines=torch.zeros_like(x), additional_forward_args=(batch["input_ids"], batch["attention_mask"]),
                n_steps=8, method="riemann_right")
            expected = reference.reduce_units(attr, site, batch["attention_mask"].bool()).mean(0)
            torch.testing.assert_close(scores.sites[site.path].mean, expected, rtol=1e-6,
                                       atol=1e-9 * expected.abs().max().item())
    finally:
        model.float()


def test_demo_end_to_end(tmp_path, capsys):
    scores = run_demo(out=tmp_path, steps=4, n_examples=4, progress=False)
    text = capsys.readouterr().out
    assert "(accuracy 1.00)" in text and "ideal speedup" in text and "compact (reloaded)" in text
    loaded = attprune.Scores.load(tmp_path / "scores.safetensors")
    assert loaded.n_examples == 4 and len(loaded.sites) == 12
    for p, s in scores.sites.items():
        assert torch.equal(loaded.sites[p].sum, s.sum)
    import json
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["compact_accuracy"] == summary["masked_accuracy"]
    model = attprune.from_pretrained(tmp_path / "model")
    assert sum(p.numel() for p in model.parameters()) < 22_000_000


def test_prune_cli_on_minilm(tmp_path, capsys):
    from attprune.cli import main
    scores_dir = tmp_path / "scores"
    attprune.attribute(load_minilm_classifier()[0], None, method="magnitude").save(scores_dir / "scores.safetensors")
    assert main(["prune", "--model", "minilm", "--scores", str(scores_dir), "--ffn", "0.5", "--heads", "0.25",
                 "--round-to", "8", "--out", str(tmp_path / "compact")]) == 0
    text = capsys.readouterr().out
    assert "parameters: 22,713,986 ->" in text and "ideal speedup" in text
    model = attprune.from_pretrained(tmp_path / "compact")
    widths = [model.bert.encoder.layer[i].intermediate.dense.out_features for i in range(6)]
    assert all(w % 8 == 0 for w in widths) and sum(widths) < 6 * 1536
    assert (tmp_path / "compact" / "plan.json").is_file() and (tmp_path / "compact" / "tokenizer.json").is_file()
    assert main(["prune", "--model", "minilm", "--scores", str(scores_dir), "--ffn", "1.5",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "fraction to remove" in capsys.readouterr().err and not (tmp_path / "bad").exists()
