"""Sites: where the prunable units (FFN neurons, attention heads) of a model live."""

from .find import find_embeddings, find_sites, first_token_tail
from .site import FFN, HEADS, UNIT_KINDS, Site, is_conv1d, weight_out_in

__all__ = ["FFN", "HEADS", "UNIT_KINDS", "Site", "find_embeddings", "find_sites", "first_token_tail", "is_conv1d",
           "weight_out_in"]
