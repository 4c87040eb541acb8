"""pytest-benchmark entries: dense vs masked vs compact forward of the packaged MiniLM.

    .venv/bin/python -m pytest bench/ --benchmark-only --benchmark-group-by=param:shape

The compact model removes 50% of FFN neurons and 25% of heads (magnitude plan);
``bench/compaction_latency.py`` reports the same with the ideal (FLOP) speedup beside it.
"""

import copy

import pytest
import torch

import attprune
from attprune.models import load_minilm_classifier


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(2)
    dense = load_minilm_classifier()[0]
    plan = attprune.make_plan(attprune.attribute(dense, None, method="magnitude"), ffn=0.5, heads=0.25)
    return dense, attprune.compact(copy.deepcopy(dense), plan), plan


@pytest.mark.parametrize("shape", [(8, 128)], ids=["b8-s128"])
@pytest.mark.parametrize("variant", ["dense", "masked", "compact"])
def test_forward(benchmark, models, shape, variant):
    dense, compacted, plan = models
    ids = torch.randint(1000, 2000, shape)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    model = compacted if variant == "compact" else dense
    handle = attprune.mask(dense, plan) if variant == "masked" else None
    try:
        with torch.inference_mode():
            out = benchmark.pedantic(lambda: model(**inputs), rounds=5, warmup_rounds=1)
    finally:
        if handle is not None:
            handle.remove()
    assert out.logits.shape == (shape[0], 2)
