"""The real decoder LLM, SmolLM2-135M-Instruct (Llama, 30 layers, grouped KV), from the cache
``attprune fetch`` fills; skipped cleanly when it is not there."""

import pytest
import torch

import attprune
from attprune.models import load_smollm2

pytestmark = pytest.mark.llm


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2()


def test_it_answers_as_the_original(smollm2):
    model, tokenizer = smollm2
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])


def test_compact_equals_mask_and_reloads(tmp_path):
    model, tokenizer = load_smollm2(dtype=torch.float64)  # its own copy: compaction is in place
    scores = attprune.attribute(model, None, method="magnitude")
    plan = attprune.make_plan(scores, ffn=0.3, heads=0.34)  # grouped KV: 3 groups of 3 query heads
    batch = tokenizer(["The capital of France is", "Two plus two"], padding=True, return_tensors="pt")
    with torch.no_grad(), attprune.mask(model, plan):
        masked = model(**batch).logits
    attprune.compact(model, plan)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, masked, rtol=1e-9, atol=1e-9)
    attprune.save_pretrained(model, tmp_path / "small")
    reloaded = attprune.from_pretrained(tmp_path / "small")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, masked, rtol=1e-9, atol=1e-9)
