"""Quadrature rules for the path integral of integrated gradients.

Names, nodes and weights follow Captum (``captum.attr._utils.approximation_methods``) so
that ``steps`` / ``quadrature`` here mean what ``n_steps`` / ``method`` mean there:

==================  =================================  ============================
name                nodes alpha_k (k = 1..m)           weights w_k
==================  =================================  ============================
riemann_right       k / m  (knowledge-neuron rule)     1/m
riemann_left        (k - 1) / m                        1/m
riemann_middle      (k - 1/2) / m                      1/m
riemann_trapezoid   (k - 1) / (m - 1)                  1/m, halved at both ends
gausslegendre       Gauss-Legendre nodes on [0, 1]     Gauss-Legendre weights / 2
==================  =================================  ============================
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..settings import check_int

#: ``steps=AUTO``: per-site IG chooses its nodes from its completeness gap (``methods/ig.py``)
AUTO = "auto"
QUADRATURES = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre")


def quadrature(name: str, steps: int) -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of the rule ``name`` with ``steps`` nodes.

    >>> quadrature("riemann_right", 4)[0]
    [0.25, 0.5, 0.75, 1.0]
    """
    if name not in QUADRATURES:
        raise InputError(f"unknown quadrature {name!r}; choose one of {', '.join(QUADRATURES)}")
    check_int("steps", steps)
    if name == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    if name == "riemann_trapezoid" and steps < 2:
        raise InputError("riemann_trapezoid needs steps >= 2")
    weights = [1.0 / steps] * steps
    # torch.linspace in float32, as Captum computes its nodes
    if name == "riemann_right":
        alphas = torch.linspace(1 / steps, 1, steps)
    elif name == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / steps, steps)
    elif name == "riemann_middle":
        alphas = torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps)
    else:
        alphas = torch.linspace(0, 1, steps)
        weights[0] /= 2
        weights[-1] /= 2
    return alphas.tolist(), weights
