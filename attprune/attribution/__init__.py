"""Attribution: a score for every FFN neuron and attention head of a model on a task.

``attribute`` (``api.py``) runs a registered method (``methods/``) with an
``AttributionConfig`` (``config.py``) through the ``Runner`` (the clean pass, replays and the
objective F) and returns ``Scores``.
"""

from .api import attribute
from .config import AttributionConfig
from .means import input_means
from .methods import METHODS, Method, register_method, unregister_method
from .quadrature import QUADRATURES, quadrature
from .scores import Scores, SiteScores

__all__ = ["AttributionConfig", "METHODS", "Method", "QUADRATURES", "Scores", "SiteScores", "attribute", "input_means", "quadrature",
           "register_method", "unregister_method"]
