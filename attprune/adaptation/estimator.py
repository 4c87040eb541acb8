"""The mask estimator of adapting by pruning (Gao, Colombo & Wang, arXiv 2105.03343).

Every masked connection (a weight, or a whole unit) has a real score theta.  The mask is
the relaxation m = sigmoid(t * theta) with two temperatures: a large one in the forward
pass (t_forward = 1e5: m is a 0/1 step except within ~1e-4 of zero) and a small one in the
derivative (t_backward = 1: a smooth, non-vanishing gradient), a straight-through-style
estimator.  After each gradient step every theta is pushed down by a constant ``decay`` (an
L1 pull toward pruning); training stops once the fraction of negative theta reaches the
target sparsity, and the final mask keeps the connections with the largest theta.
"""

from __future__ import annotations

import torch
from torch import nn


class _TemperedSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, theta: torch.Tensor, t_forward: float, t_backward: float) -> torch.Tensor:
        ctx.save_for_backward(theta)
        ctx.t_backward = t_backward
        return torch.sigmoid(t_forward * theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (theta,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.t_backward * theta)
        return grad * ctx.t_backward * s * (1 - s), None, None


def tempered_sigmoid(theta: torch.Tensor, t_forward: float = 1e5, t_backward: float = 1.0) -> torch.Tensor:
    """sigmoid(t_forward * theta) forward; d/dtheta = t_backward * sigmoid'(t_backward * theta).

    >>> m = tempered_sigmoid(theta)          # ~ (theta > 0), with a usable gradient
    """
    return _TemperedSigmoid.apply(theta, float(t_forward), float(t_backward))


class MaskScores(nn.Module):
    """One float32 theta tensor per masked tensor, initialised N(mean, std^2) (seeded).

    ``order``: optional values (e.g. |w|) of the same shapes; the same N(mean, std^2) draws
    are then handed out in their global order (the largest value gets the largest theta), so
    an untrained mask equals pruning by that value.  Names are kept in ``names`` (module
    paths contain dots, which parameter names cannot).
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], mean: float = 0.01, std: float = 0.001 ** 0.5,
                 seed: int = 0, order: dict[str, torch.Tensor] | None = None):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.names = list(shapes)
        draws = [mean + std * torch.randn(shape, generator=generator, dtype=torch.float32)
                 for shape in shapes.values()]
        if order is not None:
            draws = _assign_in_order(draws, [order[name] for name in self.names])
        self.thetas = nn.ParameterList(nn.Parameter(d) for d in draws)

    def items(self):
        return zip(self.names, self.thetas)

    def numel(self) -> int:
        return sum(t.numel() for t in self.thetas)

    @torch.no_grad()
    def negative_fraction(self) -> float:
        return sum(int((t < 0).sum()) for t in self.thetas) / self.numel()

    @torch.no_grad()
    def push_down(self, decay: float) -> None:
        for t in self.thetas:
            t.sub_(decay)

    def relaxed(self, t_forward: float, t_backward: float) -> dict[str, torch.Tensor]:
        return {name: tempered_sigmoid(t, t_forward, t_backward) for name, t in self.items()}

    @torch.no_grad()
    def hard(self) -> dict[str, torch.Tensor]:
        """The current 0/1 mask, theta > 0."""
        return {name: t > 0 for name, t in self.items()}

    @torch.no_grad()
    def keep_top(self, sparsity: float) -> dict[str, torch.Tensor]:
        """Boolean masks that keep exactly the (1 - sparsity) share with the largest theta."""
        return keep_top({name: t.detach() for name, t in self.items()}, sparsity)


def _assign_in_order(draws: list[torch.Tensor], order: list[torch.Tensor]) -> list[torch.Tensor]:
    flat_draws = torch.cat([d.flatten() for d in draws]).sort().values
    ranks = torch.cat([o.detach().flatten().float() for o in order]).argsort(stable=True)
    flat = torch.empty_like(flat_draws)
    flat[ranks] = flat_draws
    out, start = [], 0
    for d in draws:
        out.append(flat[start:start + d.numel()].view(d.shape).clone())
        start += d.numel()
    return out


def keep_top(values: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global top-k over all tensors: keep round((1 - sparsity) * n) entries with the largest
    values (ties broken by position), as boolean masks of the tensors' shapes.

    >>> keep_top({"a": torch.tensor([3., 1.]), "b": torch.tensor([2.])}, 1 / 3)
    {'a': tensor([ True, False]), 'b': tensor([True])}
    """
    flat = torch.cat([v.detach().flatten().float() for v in values.values()])
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    n_keep = round((1 - sparsity) * flat.numel())
    keep[flat.argsort(descending=True, stable=True)[:n_keep]] = True
    out, start = {}, 0
    for name, v in values.items():
        out[name] = keep[start:start + v.numel()].view(v.shape)
        start += v.numel()
    return out
