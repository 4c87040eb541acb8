"""Forward latency of models measured side by side: warm-up, interleaved rounds, medians and spread.

Timing one model after another lets machine noise (another process, frequency changes) land
on one of them; here every round times each model once, in turn, so noise hits all alike,
and the report is the median over rounds with its interquartile range.

>>> timings = forward_latency({"dense": model, "compact": small}, batch, repeats=15)
>>> timings["dense"].median_ms / timings["compact"].median_ms     # the speedup
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Latency:
    """Forward times of one model over the timed rounds, in milliseconds."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    rounds: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        ms = sorted(1000 * s for s in seconds)
        q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0], ms[0], ms[0])
        return cls(round(statistics.median(ms), 3), round(q1, 3), round(q3, 3), round(ms[0], 3), len(ms))

    def __str__(self) -> str:
        return f"{self.median_ms:.1f} ms (IQR {self.p25_ms:.1f}-{self.p75_ms:.1f}, {self.rounds} runs)"

    def to_dict(self) -> dict:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_latency(calls: dict[str, Callable[[], object]], repeats: int = 15,
                        warmup: int = 2) -> dict[str, Latency]:
    """``Latency`` of each zero-argument call (a model, an ONNX Runtime session, llama.cpp...):
    ``warmup`` untimed rounds, then ``repeats`` rounds that time every call once each, in turn.
    A call must return only once its work is done (synchronize inside it on a GPU)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: Latency.of(values) for name, values in seconds.items()}


@torch.inference_mode()
def forward_latency(models: dict[str, nn.Module], inputs: dict, repeats: int = 15,
                    warmup: int = 2) -> dict[str, Latency]:
    """``Latency`` of ``model(**inputs)`` for each model, timed in interleaved rounds."""
    def call(model: nn.Module):
        device = next(model.parameters()).device

        def run():
            model(**inputs)
            _synchronize(device)
        return run

    return interleaved_latency({name: call(model) for name, model in models.items()}, repeats, warmup)
