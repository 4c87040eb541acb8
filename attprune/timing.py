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


@torch.inference_mode()
def forward_latency(models: dict[str, nn.Module], inputs: dict, repeats: int = 15,
                    warmup: int = 2) -> dict[str, Latency]:
    """``Latency`` of ``model(**inputs)`` for each model: ``warmup`` untimed rounds, then
    ``repeats`` rounds that time every model once each, in turn."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    devices = {name: next(model.parameters()).device for name, model in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(warmup + repeats):
        for name, model in models.items():
            _synchronize(devices[name])
            start = time.perf_counter()
            model(**inputs)
            _synchronize(devices[name])
            if round_index >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return {name: Latency.of(values) for name, values in seconds.items()}
