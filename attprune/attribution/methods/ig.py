r"""Exact integrated gradients at one site, batched over steps.

For a site with projection :math:`Z = X W^\top + b` (X: [B, T, d_in], the site's whole
input, all tokens at once), baseline :math:`X' = 0` and quadrature nodes/weights
:math:`(\alpha_k, w_k)_{k=1..m}`, the score of unit u of example b is

.. math::

    S[b, u] = \sum_{t \in \text{real tokens}} \sum_{i \in u}
              (X - X')[b, t, i] \; \sum_k w_k \frac{\partial F_b}{\partial X[b, t, i]}
              \Big|_{X' + \alpha_k (X - X')}

which is Captum's ``IntegratedGradients`` on the site input, summed over a unit's
features and reduced over tokens.  With ``positions`` (``attribution/tokens.py``) the path
scales the site input at the chosen tokens P only, :math:`X_{t}(\alpha) = \alpha X_t` for
:math:`t \in P` and :math:`X_t` elsewhere, and the token sum runs over P: the IG of F with
respect to the site input at P, the other tokens held at their clean values (completeness:
the scores sum to F(x) - F(site off at P)).  How it is computed:

(a) the model runs up to the site once (the clean pass); every module call that finished
    before the site is replayed from that pass (``attribution/replay.py``), so an m-step pass computes
    only what lies above the site;
(b) the m steps run as one [m * B] batch (step-major), chunked to a row budget;
(c) the projection is linear, so its interpolated *output* is
    :math:`Z_k = Z' + \alpha_k (Z - Z')` with :math:`Z' = X' W^\top + b`: no scaled
    input is projected again (the projection itself is skipped in the m-step pass);
(d) the output gradients are summed over steps with their weights first,
    :math:`\bar G = \sum_k w_k\, \partial F / \partial Z_k` ([B, T, d_out]), and multiplied
    by the weight once: :math:`\partial F / \partial X` summed over steps is
    :math:`\bar G W`, because :math:`\partial Z / \partial X = W` at every step;
(e) the token reduction follows at once: no [m, B, T, d] gradient is ever kept.

Steps (c)-(e) are the IG step ops (``attprune.ops``: the PyTorch reference, or fused Triton /
native kernels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from ... import devices, ops
from ...sites import Site
from ..memory import halving_on_oom
from ..quadrature import AUTO, quadrature
from ..replay import replaced_forwards
from ..runner import Clean, Runner
from .base import Method, register_method


@register_method
class IntegratedGradients(Method):
    """Per-site integrated gradients: each site's input scaled from 0, the layers above it run
    at every node (``steps`` nodes of the ``quadrature`` rule)."""

    name = "ig"
    replays_sites = True
    follows_gradient = True
    #: ``positions``: interpolates the site at the chosen tokens only and reduces over them
    takes_positions = True

    def __init__(self, config):
        super().__init__(config)
        self.gaps: dict[str, SiteGaps] = {}

    @classmethod
    def check(cls, config) -> None:
        quadrature(config.quadrature, _first_steps(config))  # refuses a rule / count that does not exist

    def nodes(self) -> tuple[list[float], list[float]]:
        return quadrature(self.config.quadrature, _first_steps(self.config))

    def max_nodes(self) -> int:
        return AUTO_MAX if self.config.steps == AUTO else self.config.steps

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        for site in runner.sites:
            if self.config.steps == AUTO:
                yield site.path, self._adaptive(runner, clean, site, chunk)
            else:
                yield site.path, self._fixed(runner, clean, site, self.config.steps, chunk)

    def _fixed(self, runner: Runner, clean: Clean, site: Site, steps: int, chunk: int, with_token_sums=False):
        alphas, weights = quadrature(self.config.quadrature, steps)

        def run(steps_per_pass: int):
            return ig_site(runner, clean, site, alphas, weights, reduce=self.config.reduce_tokens,
                           chunk=steps_per_pass, backend=self.config.backend, with_token_sums=with_token_sums)
        return halving_on_oom(run, min(chunk, steps))

    def _adaptive(self, runner: Runner, clean: Clean, site: Site, chunk: int) -> torch.Tensor:
        """The site's scores with ``AUTO_FIRST`` nodes, the examples whose completeness gap
        exceeds the tolerance computed again with twice the nodes, and so on up to ``AUTO_MAX``;
        an example whose gap a doubling did not cut by ``1 / AUTO_STALL`` stops there (its
        integrand is too rough for the rule to converge within the budget: more nodes buy
        little) and keeps whichever of its estimates has the smaller gap."""
        z = clean.site_outputs[site.path]
        bias = _bias(site.module(runner.model), z)
        off_output = torch.zeros_like(z) if bias is None else bias.expand_as(z)
        chosen = runner.interpolation_mask(clean, site)
        if chosen is not None:  # the site off at the chosen tokens only
            off_output = torch.where(chosen.to(z.device)[..., None], off_output, z)
        off = runner.value_with_site_output(clean, site, off_output)
        delta = clean.value - off  # completeness: the unit scores of an example sum to this
        scale = delta.abs().mean().clamp_min(torch.finfo(delta.dtype).tiny)
        rows, steps, sub = torch.arange(clean.rows), AUTO_FIRST, clean
        scores = gap = nodes = None
        stalled = torch.zeros(clean.rows, dtype=torch.bool)
        while True:
            part, sums = self._fixed(runner, sub, site, steps, max(1, chunk * clean.rows // sub.rows),
                                     with_token_sums=True)
            part_gap = (sums - delta[rows]).abs() / scale
            if scores is None:
                scores, gap, nodes = part, part_gap, torch.full((clean.rows,), steps)
                converging = torch.ones(clean.rows, dtype=torch.bool)
            else:
                converging = (part_gap <= AUTO_STALL * gap[rows]).cpu()
                stalled[rows[~converging]] = True
                better = (part_gap < gap[rows]).cpu()  # an example keeps its better-completing estimate
                kept = rows[better]
                scores[kept], gap[kept], nodes[kept] = part[better], part_gap[better], steps
            failing = (part_gap > self.config.tolerance).cpu() & converging
            if not failing.any() or steps >= AUTO_MAX:
                break
            rows, steps = rows[failing], 2 * steps
            sub = runner.select_rows(clean, rows.to(clean.value.device))
        self.gaps.setdefault(site.path, SiteGaps()).add(gap, nodes, stalled)
        return scores

    def statistics(self) -> dict:
        if not self.gaps:
            return {}
        return {"completeness": {path: gaps.summary() for path, gaps in self.gaps.items()}}


#: ``steps="auto"``: Gauss-Legendre-style doubling from 4 nodes (``bench/ig_fidelity.py``: GL-4
#: keeps the reference's 50% plan on MiniLM) up to 64 per example, while each doubling cuts the
#: example's gap at least 4x: a smooth integrand's gap falls by orders of magnitude per doubling;
#: a slower fall means the rule is in its slow regime (a kink or spike, as in SmolLM2's first
#: layers), where each doubling costs as much as all before it for little change in ranking
#: (``bench/README.md``, "IG nodes": 0.5 instead of 0.25 cost 40% more there for the same plans)
AUTO_FIRST, AUTO_MAX, AUTO_STALL = 4, 64, 0.25


def _first_steps(config) -> int:
    return AUTO_FIRST if config.steps == AUTO else config.steps


@dataclass
class SiteGaps:
    """What ``steps="auto"`` achieved at one site, over every example it scored."""

    max_gap: float = 0.0
    examples: int = 0
    node_sum: int = 0
    max_nodes: int = 0
    refined: int = 0
    stalled: int = 0

    def add(self, gap: torch.Tensor, nodes: torch.Tensor, stalled: torch.Tensor) -> None:
        self.max_gap = max(self.max_gap, float(gap.max()))
        self.examples += int(nodes.numel())
        self.node_sum += int(nodes.sum())
        self.max_nodes = max(self.max_nodes, int(nodes.max()))
        self.refined += int((nodes > AUTO_FIRST).sum())
        self.stalled += int(stalled.sum())

    def summary(self) -> dict:
        return {"max_gap": self.max_gap, "mean_nodes": round(self.node_sum / max(self.examples, 1), 3),
                "max_nodes": self.max_nodes, "refined_examples": self.refined, "stalled_examples": self.stalled,
                "examples": self.examples}


def step_gradients(runner: Runner, clean: Clean, site: Site, alphas: list[float], weights: list[float],
                   chunk: int, backend: str = "torch") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk of steps: (:math:`\\partial F / \\partial Z_k` [steps, B, T, d_out], the steps' weights)."""
    z = clean.site_outputs[site.path]
    bias = _bias(site.module(runner.model), z)
    chosen = runner.interpolation_mask(clean, site)
    rows = clean.rows
    for start in range(0, len(alphas), chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=torch.float64)  # cast by the op: exact nodes
        w = torch.tensor(weights[start:start + chunk], dtype=runner.acc_dtype, device=z.device)
        times = a.numel()
        z_k = ops.ig_interpolate(z, bias, a, positions=chosen, backend=backend).requires_grad_(True)
        replacements = runner.replacements_above(clean, site, times)
        replacements[site.path] = lambda original, args, kwargs, z_k=z_k: z_k
        with torch.enable_grad(), replaced_forwards(runner.model, replacements):
            objective = runner.pass_objective(clean, times)
            (grad,) = torch.autograd.grad(objective.sum(), z_k)
        yield grad.view(times, rows, *z.shape[1:]), w


def _bias(projection: torch.nn.Module, z: torch.Tensor) -> torch.Tensor | None:
    """The projection's bias (its output at the zero baseline), or None."""
    if getattr(projection, "bias", None) is None:
        return None
    return devices.read(projection, "bias").detach().to(z.device, z.dtype)


def ig_site(runner: Runner, clean: Clean, site: Site, alphas: list[float], weights: list[float], *,
            reduce: str, chunk: int, backend: str = "torch", with_token_sums: bool = False):
    """Per-example IG scores of one site's units, [B, n_units] in the accumulation dtype; with
    ``with_token_sums`` also each example's total over units and real tokens, [B]."""
    x = clean.site_inputs[site.path]  # X - X' with X' = 0
    steps = ops.IGStepScores(runner.site_weight(site, x.device), x, runner.token_mask(clean, site).to(x.device),
                             site.unit_size, reduce, backend)
    for grads, w in step_gradients(runner, clean, site, alphas, weights, chunk, backend):
        steps.add(grads, w)
    scores = steps.scores().to(runner.acc_dtype)
    if not with_token_sums:
        return scores
    sums = scores.sum(-1) if reduce == "sum" else steps.token_sums().to(runner.acc_dtype)
    return scores, sums
