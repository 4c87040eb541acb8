"""Attribution: a score for every FFN neuron and attention head of a model on a task."""

from .api import METHODS, attribute
from .quadrature import QUADRATURES, quadrature
from .scores import Scores, SiteScores

__all__ = ["METHODS", "QUADRATURES", "Scores", "SiteScores", "attribute", "quadrature"]
