r"""Exact integrated gradients at one site, batched over steps.

For a site with projection :math:`Z = X W^\top + b` (X: [B, T, d_in], the site's whole
input, all tokens at once), baseline :math:`X' = 0` and quadrature nodes/weights
:math:`(\alpha_k, w_k)_{k=1..m}`, the score of unit u of example b is

.. math::

    S[b, u] = \sum_{t \in \text{real tokens}} \sum_{i \in u}
              (X - X')[b, t, i] \; \sum_k w_k \frac{\partial F_b}{\partial X[b, t, i]}
              \Big|_{X' + \alpha_k (X - X')}

which is Captum's ``IntegratedGradients`` on the site input, summed over a unit's
features and reduced over tokens.  How it is computed:

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

from typing import Iterator

import torch

from ... import devices, ops
from ...sites import Site
from ..memory import halving_on_oom
from ..quadrature import quadrature
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

    @classmethod
    def check(cls, config) -> None:
        quadrature(config.quadrature, config.steps)  # refuses a rule / count that does not exist

    def nodes(self) -> tuple[list[float], list[float]]:
        return quadrature(self.config.quadrature, self.config.steps)

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        alphas, weights = self.nodes()
        for site in runner.sites:
            def run(steps_per_pass: int, site: Site = site) -> torch.Tensor:
                return ig_site(runner, clean, site, alphas, weights, reduce=self.config.reduce_tokens,
                               chunk=steps_per_pass, backend=self.config.backend)
            yield site.path, halving_on_oom(run, chunk)


def step_gradients(runner: Runner, clean: Clean, site: Site, alphas: list[float], weights: list[float],
                   chunk: int, backend: str = "torch") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk of steps: (:math:`\\partial F / \\partial Z_k` [steps, B, T, d_out], the steps' weights)."""
    z = clean.site_outputs[site.path]
    bias = _bias(site.module(runner.model), z)
    rows = clean.rows
    for start in range(0, len(alphas), chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=torch.float64)  # cast by the op: exact nodes
        w = torch.tensor(weights[start:start + chunk], dtype=runner.acc_dtype, device=z.device)
        times = a.numel()
        z_k = ops.ig_interpolate(z, bias, a, backend=backend).requires_grad_(True)
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
            reduce: str, chunk: int, backend: str = "torch") -> torch.Tensor:
    """Per-example IG scores of one site's units, [B, n_units] in the accumulation dtype."""
    x = clean.site_inputs[site.path]  # X - X' with X' = 0
    scores = ops.IGStepScores(runner.site_weight(site, x.device), x, runner.token_mask(clean, site).to(x.device),
                              site.unit_size, reduce, backend)
    for grads, w in step_gradients(runner, clean, site, alphas, weights, chunk, backend):
        scores.add(grads, w)
    return scores.scores().to(runner.acc_dtype)
