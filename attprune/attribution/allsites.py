r"""Methods that read every site in the same passes: conductance and the cheap baselines.

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
token-summed grad x act), summed over examples.  ``activation``: |X| averaged over a unit's
features, reduced over tokens.
"""

from __future__ import annotations

import torch

from ..sites import Site
from ..hooks import patched_forwards
from .runner import Clean, Runner, tile_batch
from .tokens import per_unit, reduce_tokens, token_mask


def _site_mask(clean: Clean, site: Site, x: torch.Tensor) -> torch.Tensor:
    return token_mask(clean.objective_batch, site.stream, x.shape[1], clean.rows).to(x.device)


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
        raise RuntimeError(f"no embedding module of {type(runner.model).__name__} ran in the clean pass")

    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(site):
        def hook(module, args, output):
            seen[site.path] = (args[0].detach(), output)
        return hook

    handles = [runner.model.get_submodule(s.path).register_forward_hook(capture(s)) for s in runner.sites]
    try:
        with torch.enable_grad(), patched_forwards(runner.model, replacements):
            outputs = runner.forward(tile_batch(clean.inputs, times))
            objective = runner.objective(outputs, tile_batch(clean.objective_batch, times))
            grads = torch.autograd.grad(objective.sum(), [seen[s.path][1] for s in runner.sites],
                                        allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    result = {}
    for site, g in zip(runner.sites, grads):
        x = seen[site.path][0]
        weight = runner.site_weight(site, x.device).to(runner.acc_dtype)
        dx = torch.zeros(x.shape, dtype=runner.acc_dtype, device=x.device) if g is None \
            else g.to(runner.acc_dtype) @ weight
        result[site.path] = (x.to(runner.acc_dtype), dx)
    return result


def _scaled_embeddings(clean: Clean, name: str, calls: list[int], alphas: list[float]):
    """A forward replacement returning call n's recorded embeddings scaled by every alpha."""
    counter = [0]

    def forward(original, args, kwargs):
        e = clean.log.outputs[(name, calls[min(counter[0], len(calls) - 1)])]
        counter[0] += 1
        if not torch.is_tensor(e):
            raise TypeError(f"the embedding module {name} must return a tensor to be interpolated")
        a = torch.tensor(alphas, dtype=e.dtype, device=e.device).view(-1, *([1] * e.dim()))
        return (a * e.unsqueeze(0)).reshape(len(alphas) * e.shape[0], *e.shape[1:]).requires_grad_(True)
    return forward


def grad_x_act(runner: Runner, clean: Clean, *, reduce: str) -> dict[str, torch.Tensor]:
    per_site = interpolated_pass(runner, clean, [1.0])
    return {s.path: reduce_tokens(per_unit(x * dx, s.unit_size), _site_mask(clean, s, x), reduce)
            for s in runner.sites for x, dx in [per_site[s.path]]}


def fisher(runner: Runner, clean: Clean) -> dict[str, torch.Tensor]:
    mask_gradient = grad_x_act(runner, clean, reduce="sum")
    return {path: g.square() for path, g in mask_gradient.items()}


def activation(runner: Runner, clean: Clean, *, reduce: str) -> dict[str, torch.Tensor]:
    out = {}
    for site in runner.sites:
        x = clean.site_inputs[site.path].to(runner.acc_dtype).abs()
        out[site.path] = reduce_tokens(per_unit(x, site.unit_size) / site.unit_size,
                                       _site_mask(clean, site, x), reduce)
    return out


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
                                  _site_mask(clean, s, totals[s.path]), reduce) for s in runner.sites}

