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

``baseline="mean"``: the path starts at the site input's mean over the attribution data
(``attribution/means.py``) instead of 0, :math:`X' = \bar X` at every token (the same
arithmetic, with :math:`Z' = \bar X W^\top + b`).  ``path="joint"``: one path per example
for all sites of a kind at once (every FFN site, or every head site, moved from its baseline
together, as Captum's ``LayerIntegratedGradients`` does for a list of layers): each site's
output is held at its interpolated clean value whatever the layers below compute, so one
pass of the whole model per node scores every unit of the kind; completeness then holds for
the kind as a whole (its scores sum to F(x) - F(every site of the kind at its baseline)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ... import devices, ops
from ...errors import InputError
from ...sites import Site
from ..memory import halving_on_oom
from ..quadrature import AUTO, quadrature
from ..replay import replaced_forwards
from ..runner import Clean, Runner
from .base import Method, register_method

BASELINES = ("zero", "mean")
PATHS = ("site", "joint")


@register_method
class IntegratedGradients(Method):
    """Integrated gradients of every site's input, from 0 (or from its mean over the data), one
    path per site (the layers above it run at every node) or one path per kind (``path="joint"``)."""

    name = "ig"
    follows_gradient = True
    #: ``positions``: interpolates the site at the chosen tokens only and reduces over them
    takes_positions = True

    def __init__(self, config):
        super().__init__(config)
        self.gaps: dict[str, SiteGaps] = {}

    @property
    def replays_sites(self) -> bool:
        """Per-site paths replay the layers below each site; a joint path runs the whole model."""
        return self.config.path == "site"

    @property
    def needs_input_means(self) -> bool:
        return self.config.baseline == "mean"

    @classmethod
    def check(cls, config) -> None:
        if config.quadrature is not None and config.steps is not None:  # unset: checked once the recipe fills them
            quadrature(config.quadrature, _first_steps(config))  # refuses a rule / count that does not exist

    def nodes(self) -> tuple[list[float], list[float]]:
        return quadrature(self.config.quadrature, _first_steps(self.config))

    def max_nodes(self) -> int:
        return AUTO_MAX if self.config.steps == AUTO else self.config.steps

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        groups = [[site] for site in runner.sites] if self.config.path == "site" else \
            [[s for s in runner.sites if s.kind == kind] for kind in dict.fromkeys(s.kind for s in runner.sites)]
        for group in groups:
            yield from self._group_scores(runner, clean, group, chunk).items()

    # -- one path: a site, or every site of a kind ------------------------------------------

    def _group_scores(self, runner: Runner, clean: Clean, group: list[Site], chunk: int) -> dict[str, torch.Tensor]:
        if self.config.steps == AUTO:
            return self._adaptive(runner, clean, group, chunk)
        return self._fixed(runner, clean, group, self.config.steps, chunk)[0]

    def _fixed(self, runner: Runner, clean: Clean, group: list[Site], steps: int, chunk: int):
        """({path: [B, units] scores}, [B] every unit and real token of the group summed)."""
        alphas, weights = quadrature(self.config.quadrature, steps)

        def run(steps_per_pass: int):
            options = dict(reduce=self.config.reduce_tokens, chunk=steps_per_pass, backend=self.config.backend,
                           means=self.input_means)
            if len(group) > 1:
                return ig_group(runner, clean, group, alphas, weights, **options)
            scores, sums = ig_site(runner, clean, group[0], alphas, weights, with_token_sums=True, **options)
            return {group[0].path: scores}, sums
        return halving_on_oom(run, min(chunk, steps))

    def _adaptive(self, runner: Runner, clean: Clean, group: list[Site], chunk: int) -> dict[str, torch.Tensor]:
        """The group's scores with ``AUTO_FIRST`` nodes, the examples whose completeness gap
        exceeds the tolerance computed again with twice the nodes, and so on up to ``AUTO_MAX``;
        an example whose gap a doubling did not cut by ``1 / AUTO_STALL`` stops there (its
        integrand is too rough for the rule to converge within the budget: more nodes buy
        little) and keeps whichever of its estimates has the smaller gap."""
        off = runner.value_with_site_outputs(clean, {s.path: baseline_outputs(runner, clean, s, self.input_means)
                                                     for s in group})
        delta = clean.value - off  # completeness: the unit scores of an example sum to this
        scale = delta.abs().mean().clamp_min(torch.finfo(delta.dtype).tiny)
        rows, steps, sub = torch.arange(clean.rows), AUTO_FIRST, clean
        scores = gap = nodes = None
        stalled = torch.zeros(clean.rows, dtype=torch.bool)
        while True:
            part, sums = self._fixed(runner, sub, group, steps, max(1, chunk * clean.rows // sub.rows))
            part_gap = (sums - delta[rows]).abs() / scale
            if scores is None:
                scores, gap, nodes = part, part_gap, torch.full((clean.rows,), steps)
                converging = torch.ones(clean.rows, dtype=torch.bool)
            else:
                converging = (part_gap <= AUTO_STALL * gap[rows]).cpu()
                stalled[rows[~converging]] = True
                better = (part_gap < gap[rows]).cpu()  # an example keeps its better-completing estimate
                kept = rows[better]
                for path in scores:
                    scores[path][kept] = part[path][better]
                gap[kept], nodes[kept] = part_gap[better], steps
            failing = (part_gap > self.config.tolerance).cpu() & converging
            if not failing.any() or steps >= AUTO_MAX:
                break
            rows, steps = rows[failing], 2 * steps
            sub = runner.select_rows(clean, rows.to(clean.value.device))
        for site in group:
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


# -- the path's start -------------------------------------------------------------------------

def _bias(projection: torch.nn.Module, z: torch.Tensor) -> torch.Tensor | None:
    """The projection's bias (its output at the zero baseline), or None."""
    if getattr(projection, "bias", None) is None:
        return None
    return devices.read(projection, "bias").detach().to(z.device, z.dtype)


def baseline_output(runner: Runner, clean: Clean, site: Site, means: dict | None) -> torch.Tensor | None:
    """[d_out] (or None: zeros): the site's output at the path's start, the same at every token:
    its bias (zero baseline), or its projection of the mean input (mean baseline)."""
    z = clean.site_outputs[site.path]
    bias = _bias(site.module(runner.model), z)
    if means is None:
        return bias
    weight = runner.site_weight(site, z.device).to(z.dtype)
    start = means[site.path].to(z.device, z.dtype) @ weight.T
    return start if bias is None else start + bias


def baseline_outputs(runner: Runner, clean: Clean, site: Site, means: dict | None) -> torch.Tensor:
    """[B, T, d_out]: the site's output with the site at its start at the chosen tokens (every
    token without ``positions``), its clean output elsewhere."""
    z = clean.site_outputs[site.path]
    start = baseline_output(runner, clean, site, means)
    off = torch.zeros_like(z) if start is None else start.expand_as(z)
    chosen = runner.interpolation_mask(clean, site)
    return off if chosen is None else torch.where(chosen.to(z.device)[..., None], off, z)


def input_difference(clean: Clean, site: Site, means: dict | None) -> torch.Tensor:
    """X - X': the site input less the path's start."""
    x = clean.site_inputs[site.path]
    return x if means is None else x - means[site.path].to(x.device, x.dtype)


# -- the passes -------------------------------------------------------------------------------

def step_gradients(runner: Runner, clean: Clean, sites: Site | list[Site], alphas: list[float],
                   weights: list[float], chunk: int, backend: str = "torch", means: dict | None = None
                   ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    r"""Per chunk of steps: ({path: :math:`\partial F / \partial Z_k` [steps, B, T, d_out]}, the
    steps' weights), every site interpolated in the same pass (one site: the layers below it
    replayed; several: the whole model runs, each site held at its interpolated output)."""
    group = [sites] if isinstance(sites, Site) else sites
    rows = clean.rows
    for start in range(0, len(alphas), chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=torch.float64)  # cast by the op: exact nodes
        times = a.numel()
        z_k = {}
        replacements = runner.replacements_above(clean, group[0], times) if len(group) == 1 else {}
        for site in group:
            z = clean.site_outputs[site.path]
            chosen = runner.interpolation_mask(clean, site)
            z_k[site.path] = ops.ig_interpolate(z, baseline_output(runner, clean, site, means), a, positions=chosen,
                                                backend=backend).requires_grad_(True)
            replacements[site.path] = runner.output_replacement(site, z_k[site.path])
        w = torch.tensor(weights[start:start + chunk], dtype=runner.acc_dtype,
                         device=next(iter(z_k.values())).device)
        with torch.enable_grad(), replaced_forwards(runner.model, replacements):
            objective = runner.pass_objective(clean, times)
            grads = torch.autograd.grad(objective.sum(), list(z_k.values()), allow_unused=True)
        yield {site.path: (torch.zeros_like(z_k[site.path]) if g is None else g).view(
            times, rows, *clean.site_outputs[site.path].shape[1:]) for site, g in zip(group, grads)}, w


def ig_group(runner: Runner, clean: Clean, group: list[Site], alphas: list[float], weights: list[float], *,
             reduce: str, chunk: int, backend: str = "torch", means: dict | None = None):
    """({path: [B, units] per-example IG scores in the accumulation dtype}, [B]: every unit and
    real token of the group summed: what completeness compares with F(x) - F(group at its start))."""
    steps = {}
    for site in group:
        x = input_difference(clean, site, means)
        steps[site.path] = ops.IGStepScores(runner.site_weight(site, x.device), x,
                                            runner.token_mask(clean, site).to(x.device), site.unit_size, reduce,
                                            backend)
    for grads, w in step_gradients(runner, clean, group[0] if len(group) == 1 else group, alphas, weights, chunk,
                                   backend, means):
        for path, g in grads.items():
            steps[path].add(g, w)
    scores = {path: acc.scores().to(runner.acc_dtype) for path, acc in steps.items()}
    sums = sum(scores[p].sum(-1) if reduce == "sum" else steps[p].token_sums().to(runner.acc_dtype) for p in steps)
    return scores, sums


def ig_site(runner: Runner, clean: Clean, site: Site, alphas: list[float], weights: list[float], *,
            reduce: str, chunk: int, backend: str = "torch", with_token_sums: bool = False,
            means: dict | None = None):
    """Per-example IG scores of one site's units, [B, n_units] in the accumulation dtype; with
    ``with_token_sums`` also each example's total over units and real tokens, [B]."""
    scores, sums = ig_group(runner, clean, [site], alphas, weights, reduce=reduce, chunk=chunk, backend=backend,
                            means=means)
    return (scores[site.path], sums) if with_token_sums else scores[site.path]
