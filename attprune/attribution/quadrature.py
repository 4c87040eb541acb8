"""Quadrature rules for the path integral of integrated gradients.

Names, nodes and weights follow Captum (``captum.attr._utils.approximation_methods``) so
that ``steps`` / ``quadrature`` here mean what ``n_steps`` / ``method`` mean there:

==================  =================================  ============================
name                nodes alpha_k (k = 1..m)           weights w_k
==================  =================================  ============================
riemann_right       k / m                              1/m
riemann_left        (k - 1) / m                        1/m
riemann_middle      (k - 1/2) / m                      1/m
riemann_trapezoid   (k - 1) / (m - 1)                  1/m, halved at both ends
gausslegendre       Gauss-Legendre nodes on [0, 1]     Gauss-Legendre weights / 2
linspace            (k - 1) / (m - 1)                  1/m  (not Captum's)
==================  =================================  ============================

``linspace`` is the knowledge-neurons rule (Dai et al. 2022, "Knowledge Neurons in Pretrained
Transformers", as the EleutherAI ``knowledge-neurons`` library computes it): the activation
scaled by ``torch.linspace(0, 1, m)``, the m gradients summed and divided by m. It has
``riemann_trapezoid``'s nodes without halving the end weights: exact for a linear integrand,
an O(1/m) error otherwise (the trapezoid's is O(1/m^2)); it is here to reproduce that
definition (``steps >= 2``). Its nodes are exact (k / (m - 1) in float64), the others' are
float32 as Captum computes them. The paper's written formula, (1/m) sum over k = 1..m at
alpha = k / m, is ``riemann_right``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..settings import check_int

#: ``steps=AUTO``: per-site IG chooses its nodes from its completeness gap (``methods/ig.py``)
AUTO = "auto"
QUADRATURES = ("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid", "gausslegendre", "linspace")


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
    if name in ("riemann_trapezoid", "linspace") and steps < 2:
        raise InputError(f"{name} needs steps >= 2")
    weights = [1.0 / steps] * steps
    if name == "linspace":  # the knowledge-neurons rule: both ends, every weight 1/m
        return [k / (steps - 1) for k in range(steps)], weights
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
