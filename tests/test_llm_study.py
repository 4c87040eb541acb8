"""The LLM study's design: every variant changes one setting of its criterion's base arm, and
contrasts pair a variant with its base on the attribution draws both have."""

import numpy as np
import pytest
import torch

from attprune.experiments.llm_benchmark import contrasts
from attprune.experiments.llm_study import FACTORS, base_arms, factor_contrasts, variant_arms


def _fields(arm) -> dict:
    return {"settings": arm.settings, "n": arm.n, "plan": arm.plan, "compensate": arm.compensate}


@pytest.mark.parametrize("factor", list(FACTORS))
def test_each_variant_changes_one_setting_of_its_base_arm(factor):
    bases = {arm.label: arm for arm in base_arms()}
    variants = variant_arms(factor)
    applies = {c for _, criteria, _ in FACTORS[factor] for c in criteria}
    assert {arm.method for arm in variants} == applies
    for arm in variants:
        base = bases[arm.label.split(" [")[0]]
        assert arm.method == base.method and arm.key() != base.key()
        changed = [name for name, value in _fields(arm).items() if value != _fields(base)[name]]
        assert len(changed) == 1, (arm.label, changed)
    assert len({arm.key() for arm in variants}) == len(variants)


def _row(method, draw, correct, task="t"):
    return {"task": task, "kind": "ffn", "method": method, "sparsity": 0.3, "draw": draw,
            "correct": list(map(float, correct))}


def test_contrasts_pair_a_variant_with_its_base_on_the_draws_both_have():
    rng = np.random.default_rng(0)
    base = {d: rng.random(40) < 0.7 for d in range(3)}
    variant = {d: rng.random(40) < 0.6 for d in range(2)}           # a study stopped before draw 2
    rows = [_row("ig", d, c) for d, c in base.items()] + [_row("ig [x]", d, c) for d, c in variant.items()]
    (row,) = contrasts(rows, "ig [x]", ["ig"])["per_task"]
    expected = np.mean([variant[d].mean() - base[d].mean() for d in range(2)])
    assert row["draws"] == 2 and row["difference"]["value"] == pytest.approx(expected)
    assert factor_contrasts(rows, "aggregation") == {"per_task": [], "pooled": []}  # no "[rank_by=...]" rows


def test_a_one_draw_method_is_compared_with_every_draw_of_the_other():
    one = np.r_[np.ones(30), np.zeros(10)]
    rows = [_row("random", 0, one)] + [_row("ig", d, np.ones(40)) for d in range(3)]
    (row,) = contrasts(rows, "ig", ["random"])["per_task"]
    assert row["draws"] == 3 and row["difference"]["value"] == pytest.approx(0.25)


def test_rank_agreement_is_spearmans_rho():
    from attprune.experiments.llm_study import rank_agreement

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    d = np.argsort(np.argsort(a.numpy())) - np.argsort(np.argsort(b.numpy()))
    n = len(d)
    assert rank_agreement(a, b) == pytest.approx(1 - 6 * (d ** 2).sum() / (n * (n ** 2 - 1)), abs=1e-12)  # no ties
    assert rank_agreement(a, 3 * a.exp()) == pytest.approx(1.0)
