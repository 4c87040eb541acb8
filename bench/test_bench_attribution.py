"""pytest-benchmark entries: attprune IG vs the idiomatic Captum loop on the packaged MiniLM.

    .venv/bin/python -m pytest bench/test_bench_attribution.py --benchmark-group-by=param:n

Compare the two rows of a group (same examples, same steps, same sites); the ratio with
peak memory is what ``bench/attribution_throughput.py`` reports.
"""

import argparse

import pytest
import torch

import attribution_throughput as throughput

STEPS = 20


@pytest.fixture(scope="module", params=[8])
def setup(request):
    torch.set_num_threads(2)
    model, batch, sites = throughput.build("minilm", request.param, None, "cpu")
    return model, batch, sites


@pytest.mark.parametrize("method", ["attprune", "captum-lig"])
def test_ig_all_sites(benchmark, setup, method):
    model, batch, sites = setup
    run = throughput.RUNNERS[method]
    args = argparse.Namespace(steps=STEPS, quadrature="riemann_right", captum_steps=STEPS,
                              captum_method="riemann_right")
    scores, _ = benchmark.pedantic(run, args=(model, batch, sites, args), rounds=2, warmup_rounds=1)
    assert set(scores) == {s.path for s in sites}
