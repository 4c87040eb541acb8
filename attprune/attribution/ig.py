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
    before the site is replayed from that pass (``replay.py``), so an m-step pass computes
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
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from .. import devices, ops
from ..hooks import patched_forwards
from ..sites import Site
from .runner import Clean, Runner, tile_batch
from .tokens import per_unit, reduce_tokens, token_mask


def steps_per_pass(steps: int, rows: int, tokens: int, batch_size: int | None, token_budget: int) -> int:
    """How many steps of a batch go into one forward/backward pass."""
    if batch_size is not None:
        return max(1, min(steps, batch_size // rows))
    return max(1, min(steps, token_budget // max(rows * tokens, 1)))


def step_gradients(runner: Runner, clean: Clean, site: Site, alphas: list[float], weights: list[float],
                   chunk: int, backend: str = "torch") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per chunk of steps: (:math:`\\partial F / \\partial Z_k` [steps, B, T, d_out], the steps' weights)."""
    z = clean.site_outputs[site.path]
    z_base = _baseline_output(site.module(runner.model), z)
    rows = clean.rows
    for start in range(0, len(alphas), chunk):
        a = torch.tensor(alphas[start:start + chunk], dtype=torch.float64)  # cast by the op: exact nodes
        w = torch.tensor(weights[start:start + chunk], dtype=runner.acc_dtype, device=z.device)
        times = a.numel()
        z_k = ops.ig_interpolate(z, z_base, a, backend=backend).requires_grad_(True)
        replacements = runner.replacements_above(clean, site, times)
        replacements[site.path] = lambda original, args, kwargs, z_k=z_k: z_k
        with torch.enable_grad(), patched_forwards(runner.model, replacements):
            outputs = runner.forward(tile_batch(clean.inputs, times))
            objective = runner.objective(outputs, tile_batch(clean.objective_batch, times))
            (grad,) = torch.autograd.grad(objective.sum(), z_k)
        yield grad.view(times, rows, *z.shape[1:]), w


def summed_output_gradient(runner: Runner, clean: Clean, site: Site, alphas: list[float],
                           weights: list[float], chunk: int) -> torch.Tensor:
    """:math:`\\bar G = \\sum_k w_k\\, \\partial F / \\partial Z_k` for one site, [B, T, d_out]."""
    acc = None
    for grads, w in step_gradients(runner, clean, site, alphas, weights, chunk):
        part = torch.einsum("k,kbtd->btd", w, grads.to(runner.acc_dtype))
        acc = part if acc is None else acc.add_(part)
    return acc


def _baseline_output(projection: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Z' = P(0): the bias (or zeros), broadcast as [1, 1, d_out]."""
    if getattr(projection, "bias", None) is None:
        return torch.zeros(1, 1, z.shape[-1], dtype=z.dtype, device=z.device)
    return devices.read(projection, "bias").detach().to(z.device, z.dtype).view(1, 1, -1)


def ig_site(runner: Runner, clean: Clean, site: Site, alphas: list[float], weights: list[float], *,
            reduce: str, chunk: int, backend: str = "torch") -> torch.Tensor:
    """Per-example IG scores of one site's units, [B, n_units] in the accumulation dtype.

    ``backend="torch"`` sums the step gradients first (any token reduction); a fused backend
    (``ops.resolve_backend``) adds each chunk's scores straight from its step gradients.
    """
    x = clean.site_inputs[site.path]  # X - X' with X' = 0
    weight = runner.site_weight(site, x.device)
    mask = token_mask(clean.objective_batch, site.stream, x.shape[1], clean.rows).to(x.device)
    if backend == "torch":
        g_bar = summed_output_gradient(runner, clean, site, alphas, weights, chunk)
        per_token = per_unit(x.to(runner.acc_dtype) * (g_bar @ weight.to(runner.acc_dtype)), site.unit_size)
        return reduce_tokens(per_token, mask, reduce)
    scores = None
    for grads, w in step_gradients(runner, clean, site, alphas, weights, chunk, backend):
        scores = ops.ig_attribute(grads, w, weight, x, mask, site.unit_size, out=scores, backend=backend)
    if reduce == "mean":
        scores = scores / mask.sum(1, keepdim=True).clamp_min(1)
    return scores.to(runner.acc_dtype)


def halving_on_oom(run: Callable[[int], torch.Tensor], chunk: int) -> torch.Tensor:
    """``run(chunk)``; on a device out-of-memory error retry with half the steps per pass,
    down to one step (then the error stands: one example does not fit)."""
    while True:
        try:
            return run(chunk)
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
