r"""Gradient methods that read every site in the same passes, from the input embeddings.

``conductance`` (Dhamdhere et al. 2018): one IG path that interpolates the input
embeddings E (baseline 0) at m + 1 nodes; the conductance of unit u is the
Riemann-Stieltjes sum

.. math:: C_u = \sum_{k=0}^{m-1} \sum_{t, i \in u} \frac{\partial F}{\partial X_{t,i}}(\alpha_k)
               \,\big(X_{t,i}(\alpha_{k+1}) - X_{t,i}(\alpha_k)\big)

with X the site input along the path.  This is Captum's ``LayerConductance`` (nodes from
the same quadrature rule with ``steps + 1`` points).  It costs one IG pass for all sites
together, but it is a *different estimator* from per-site IG (the path runs through the
embeddings, not the site), so its scores rank units differently.

``grad_x_act``: X * dF/dX at the input (alpha = 1 only).  ``fisher`` (Kwon et al. 2022):
the squared gradient of F with respect to a unit mask (at mask = 1 that gradient is the
token-summed grad x act), summed over examples.

``positions`` (``attribution/tokens.py``) restricts the token reduction only: the path
still scales the embeddings of every token. Conductance: the per-token conductances at
the chosen tokens, reduced; grad_x_act: X * dF/dX at the chosen tokens, reduced; fisher:
the squared gradient of F w.r.t. a unit mask applied at the chosen tokens only (the square
of grad x act summed over them).
"""

from __future__ import annotations

from typing import Iterator

import torch

from ...errors import InputError, UnsupportedModelError
from ..memory import halving_on_oom
from ...ops.reference import per_unit, reduce_tokens
from ..quadrature import AUTO, quadrature
from ..replay import replaced_forwards
from ..runner import Clean, Runner
from .base import Method, register_method

#: conductance's nodes under ``steps="auto"``
AUTO_STEPS = 20


def interpolated_pass(runner: Runner, clean: Clean, alphas: list[float]):
    """One forward/backward with the embeddings scaled by each alpha (rows step-major).

    Returns, per site, the site input X(alpha) and dF/dX(alpha), both [len(alphas) * B, T, d_in].
    """
    times = len(alphas)
    replacements = {}
    for name in sorted(runner.record_modules):  # the embedding modules, found once by attribute()
        calls = sorted(i for (n, i) in clean.log.outputs if n == name)
        if calls:
            replacements[name] = _scaled_embeddings(clean, name, calls, alphas)
    if not replacements:
        raise UnsupportedModelError(f"no embedding module of {type(runner.model).__name__} ran in the clean pass")

    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(site):
        def hook(module, args, output):
            seen[site.path] = (args[0].detach(), output)
        return hook

    handles = [runner.model.get_submodule(s.path).register_forward_hook(capture(s)) for s in runner.sites]
    try:
        with torch.enable_grad(), replaced_forwards(runner.model, replacements):
            objective = runner.pass_objective(clean, times)
            grads = torch.autograd.grad(objective.sum(), [seen[s.path][1] for s in runner.sites],
                                        allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    result = {}
    for site, g in zip(runner.sites, grads):
        x = runner.by_token(site, seen[site.path][0], times * clean.rows)
        weight = runner.site_weight(site, x.device).to(runner.acc_dtype)
        dx = torch.zeros(x.shape, dtype=runner.acc_dtype, device=x.device) if g is None \
            else runner.by_token(site, g, times * clean.rows).to(runner.acc_dtype) @ weight
        result[site.path] = (x.to(runner.acc_dtype), dx)
    return result


def _scaled_embeddings(clean: Clean, name: str, calls: list[int], alphas: list[float]):
    """A forward replacement returning call n's recorded embeddings scaled by every alpha."""
    counter = [0]

    def forward(original, args, kwargs):
        e = clean.log.outputs[(name, calls[min(counter[0], len(calls) - 1)])]
        counter[0] += 1
        if not torch.is_tensor(e):
            raise UnsupportedModelError(f"the embedding module {name} must return a tensor to be interpolated")
        a = torch.tensor(alphas, dtype=e.dtype, device=e.device).view(-1, *([1] * e.dim()))
        return (a * e.unsqueeze(0)).reshape(len(alphas) * e.shape[0], *e.shape[1:]).requires_grad_(True)
    return forward


def conductance(runner: Runner, clean: Clean, alphas: list[float], *, reduce: str,
                chunk: int) -> dict[str, torch.Tensor]:
    """Conductance of every unit of every site from one interpolation of the embeddings."""
    totals: dict[str, torch.Tensor] = {}
    previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rows = clean.rows
    for start in range(0, len(alphas), chunk):
        per_site = interpolated_pass(runner, clean, alphas[start:start + chunk])
        for site in runner.sites:
            x, dx = per_site[site.path]
            times = x.shape[0] // rows
            x = x.view(times, rows, *x.shape[1:])
            dx = dx.view(times, rows, *dx.shape[1:])
            if site.path in previous:  # stitch the chunk to the last node of the previous one
                px, pdx = previous[site.path]
                x, dx = torch.cat([px[None], x]), torch.cat([pdx[None], dx])
            contribution = (dx[:-1] * (x[1:] - x[:-1])).sum(0)
            totals[site.path] = totals.get(site.path, 0) + contribution
            previous[site.path] = (x[-1], dx[-1])
    return {s.path: reduce_tokens(per_unit(totals[s.path], s.unit_size),
                                  runner.token_mask(clean, s), reduce) for s in runner.sites}



def grad_x_act(runner: Runner, clean: Clean, *, reduce: str) -> dict[str, torch.Tensor]:
    per_site = interpolated_pass(runner, clean, [1.0])
    return {s.path: reduce_tokens(per_unit(x * dx, s.unit_size), runner.token_mask(clean, s), reduce)
            for s in runner.sites for x, dx in [per_site[s.path]]}


@register_method
class Conductance(Method):
    """Captum's ``LayerConductance`` of every unit, one interpolation of the embeddings."""

    name = "conductance"
    records_embeddings = True
    follows_gradient = True
    takes_positions = True  # the reduction only

    @classmethod
    def check(cls, config) -> None:
        if config.quadrature is not None and config.steps is not None:  # unset: checked once the recipe fills them
            quadrature(config.quadrature, cls._steps(config) + 1)

    def nodes(self):
        return quadrature(self.config.quadrature, self._steps(self.config) + 1)

    @staticmethod
    def _steps(config) -> int:
        """``steps="auto"`` has no per-site completeness to follow here: Captum's usual 20."""
        return AUTO_STEPS if config.steps == AUTO else config.steps

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        alphas, _ = self.nodes()
        run = lambda nodes_per_pass: conductance(runner, clean, alphas, reduce=self.config.reduce_tokens,  # noqa: E731
                                                 chunk=nodes_per_pass)
        yield from halving_on_oom(run, chunk).items()


@register_method
class GradXAct(Method):
    """Input x gradient at each site (first-order Taylor, LLM-Pruner's element-wise criterion)."""

    name = "grad_x_act"
    records_embeddings = True
    follows_gradient = True
    takes_positions = True  # the reduction only

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        yield from grad_x_act(runner, clean, reduce=self.config.reduce_tokens).items()


@register_method
class Fisher(Method):
    """Kwon et al. 2022: the squared gradient of F with respect to each unit's mask."""

    name = "fisher"
    records_embeddings = True
    follows_gradient = True
    takes_positions = True  # the unit mask at the chosen tokens

    @classmethod
    def check(cls, config) -> None:
        if config.reduce_tokens != "sum":
            raise InputError("method='fisher' is the squared gradient of a unit mask, a sum over tokens: "
                             "use reduce_tokens='sum'")

    def score_batch(self, runner: Runner, clean: Clean, chunk: int) -> Iterator[tuple[str, torch.Tensor]]:
        runner.select_positions(clean, self.config.positions)
        for path, mask_gradient in grad_x_act(runner, clean, reduce="sum").items():
            yield path, mask_gradient.square()
