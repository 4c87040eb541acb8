"""The IG attribute step alone: the PyTorch reference vs the fused backends, same inputs, same run.

The attribute step turns a site's step gradients G [m, B, T, O] into per-example unit scores
(step sum -> GEMM with W -> x activation -> token and unit sums; ``attprune.ops``). Shapes
are MiniLM's sites (FFN: O=384 -> I=1536, neurons; attention: O=384 -> I=384, heads of 32)
or BERT-base's with ``--model bert-base``. Reports the best of ``--repeats`` per backend and
the speed-up over the reference, and checks every backend agrees with it.

    python bench/ig_step_ops.py                       # CPU: torch vs native
    python bench/ig_step_ops.py --device cuda         # GPU: torch vs triton
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from attprune import ops
from attprune.ops import reference

RESULTS = Path(__file__).parent / "results"
SHAPES = {"minilm": {"ffn": (384, 1536, 1), "heads": (384, 384, 32)},
          "bert-base": {"ffn": (768, 3072, 1), "heads": (768, 768, 64)}}


def inputs(steps, rows, tokens, d_out, d_in, dtype, device):
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(steps, rows, tokens, d_out, generator=g).to(device, dtype)
    weight = (torch.randn(d_out, d_in, generator=g) / d_out ** 0.5).to(device, dtype)
    x = torch.randn(rows, tokens, d_in, generator=g).to(device, dtype)
    mask = torch.ones(rows, tokens, device=device)
    mask[rows // 2:, tokens * 3 // 4:] = 0
    return grads, torch.rand(steps, generator=g).to(device), weight, x, mask


def timed(fn, repeats: int, cuda: bool) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (allocator, compilation)
    best = float("inf")
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=tuple(SHAPES), default="minilm", help="whose site shapes")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype of the gradients, weight and activations (scores accumulate in float32)")
    p.add_argument("--steps", type=int, default=20, help="IG steps in the chunk")
    p.add_argument("--rows", type=int, default=16, help="examples")
    p.add_argument("--tokens", type=int, default=64, help="tokens per example")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per backend (the fastest is reported)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/ig_step_ops_<device>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    backends = [b for b in ops.available_backends(device) if b != "torch"]
    report = {"config": vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "sites": {}}
    for kind, (d_out, d_in, unit) in SHAPES[args.model].items():
        grads, w, weight, x, mask = inputs(args.steps, args.rows, args.tokens, d_out, d_in, dtype, device)
        ref_s, expected = timed(lambda: reference.ig_attribute(grads, w, weight, x, mask, unit), args.repeats,
                                device.type == "cuda")
        entry = {"torch_ms": round(1000 * ref_s, 3)}
        for backend in backends:
            seconds, got = timed(lambda: ops.ig_attribute(grads, w, weight, x, mask, unit, backend=backend),
                                 args.repeats, device.type == "cuda")
            entry[f"{backend}_ms"] = round(1000 * seconds, 3)
            entry[f"{backend}_speedup"] = round(ref_s / seconds, 3)
            entry[f"{backend}_max_rel_diff"] = float((got - expected).abs().max() / expected.abs().max())
        report["sites"][kind] = entry
    out = Path(args.out) if args.out else RESULTS / f"ig_step_ops_{args.device}_{args.model}_{args.dtype}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"attribute step, {args.model} shapes, {args.steps} steps x {args.rows} examples x {args.tokens} tokens, "
          f"{args.dtype}, {args.device}:")
    for kind, e in report["sites"].items():
        print(f"  {kind}: torch {e['torch_ms']} ms; " + "; ".join(
            f"{b} {e[f'{b}_ms']} ms ({e[f'{b}_speedup']}x, max rel diff {e[f'{b}_max_rel_diff']:.1e})"
            for b in backends))
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
