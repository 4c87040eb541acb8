"""How many interpolation rows fit one forward/backward pass, from a memory budget.

The budget is ``memory_budget`` (bytes, or a string such as ``"8GB"`` / ``"512MiB"``), else
half the free memory of the CUDA device the model runs on (of the fullest one, for a model
dispatched over several); on CPU without a budget a fixed
token budget applies (``TOKEN_BUDGET``).  Activation memory per token of a pass is
estimated from the config (a conservative count of what backward keeps per layer:
~18 hidden-size vectors, the FFN activations twice, the attention probabilities); an
under-estimate is caught at run time, where a CUDA out-of-memory error halves the chunk
(``halving_on_oom``).
"""

from __future__ import annotations

import re
from typing import Callable, TypeVar

import torch

from .. import devices
from ..errors import InputError

#: Without a memory budget on CPU, one forward/backward pass holds at most this many tokens
#: (examples x steps x sequence length).
TOKEN_BUDGET = 1 << 16
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_memory(value: int | str) -> int:
    """Bytes from ``123``, ``"8GB"``, ``"512 MiB"``.

    >>> parse_memory("1.5GiB")
    1610612736
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B?)\s*", str(value), flags=re.IGNORECASE)
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"memory_budget must be a positive number of bytes or a size such as '8GB', got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def bytes_per_token(config, tokens: int, itemsize: int) -> int:
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 12)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 768)
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 12)
    return layers * itemsize * (18 * hidden + 2 * ffn + 2 * heads * tokens)


def token_budget(model, memory_budget: int | str | None, dtype: torch.dtype | None, tokens: int) -> int:
    """Tokens (rows x sequence length) one pass may hold under the budget."""
    if memory_budget is None:
        gpus = [d for d in devices.execution_devices(model) if d.type == "cuda"]
        if not gpus:
            return TOKEN_BUDGET
        # a dispatched model's pass runs on each of its devices: the one with least room decides
        budget = min(torch.cuda.mem_get_info(d)[0] for d in gpus) // 2
    else:
        budget = parse_memory(memory_budget)
    itemsize = (dtype or next(model.parameters()).dtype).itemsize
    return max(1, budget // bytes_per_token(model.config, tokens, itemsize))


def nodes_per_pass(steps: int, rows: int, tokens: int, batch_size: int | None, token_budget: int) -> int:
    """How many nodes (steps) of a batch go into one forward/backward pass: ``batch_size`` rows
    when given, else what the token budget holds; at least one."""
    if batch_size is not None:
        return max(1, min(steps, batch_size // rows))
    return max(1, min(steps, token_budget // max(rows * tokens, 1)))


T = TypeVar("T")


def halving_on_oom(run: Callable[[int], T], chunk: int) -> T:
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
