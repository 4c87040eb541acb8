"""Attribution throughput: attprune's per-site IG vs the idiomatic Captum loop, same run.

Every FFN and attention site of the model, the same examples, the same steps:

* ``attprune``: ``attprune.attribute(model, [batch], method="ig", steps=m)``;
* ``captum-lig``: the idiomatic loop, ``LayerIntegratedGradients`` per site with
  ``attribute_to_layer_input=True`` (input baseline: all-[PAD] ids, Captum's usual choice;
  its layer baseline is therefore not 0, so its scores differ from ours by definition);
* ``captum-ig``: Captum ``IntegratedGradients`` on each site's input with a zero baseline
  (a hook feeds the scaled site input to the model): the same quantity attprune
  computes; the script checks the scores agree;
* ``attprune-torch`` / ``attprune-triton`` / ``attprune-native``: attprune with one step-op
  backend forced (``attprune.ops``); ``attprune`` is ``backend="auto"``.

Models: the packaged MiniLM (real weights), or randomly initialised ``bert-base`` (seq 128
on GPU) and ``llama-1b`` (TinyLlama-shaped: 22 layers, hidden 2048, GQA 32 query / 4 KV
heads; seq 512 on GPU). ``--dtype bfloat16`` casts the model for every method (equal
precision); scores still accumulate in float32. On CUDA the report adds the model FLOP
utilisation of each method: the FLOPs per-site IG must do (for every site, m steps of the
forward and the input-gradient backward of what lies above it, plus one clean forward)
over the time taken, against the bf16 matmul peak measured in the same run.

Each method runs in its own process (peak RSS on CPU, ``max_memory_allocated`` on GPU),
after one warm-up call.  Results: ``bench/results/attribution_<device>.json`` and a
markdown table on stdout.

    python bench/attribution_throughput.py                     # packaged MiniLM, CPU
    python bench/attribution_throughput.py --device cuda --model bert-base --seq 128 --dtype bfloat16 \
        --methods attprune-torch,attprune-triton,captum-lig
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4, vocab_size=32000, num_labels=2, pad_token_id=0)


def build(model_name: str, n: int, seq: int | None, device: str, dtype: str = "float32"):
    import transformers as tf

    import attprune
    from attprune.models import load_minilm_classifier
    from attprune.samples import LABELS, SENTENCES

    torch.manual_seed(0)  # the random models: values do not matter for speed
    if model_name in ("bert-base", "llama-1b"):
        if model_name == "bert-base":
            model = tf.BertForSequenceClassification(tf.BertConfig(num_labels=2)).eval()
        else:
            model = tf.LlamaForSequenceClassification(tf.LlamaConfig(**LLAMA_1B)).eval()
        ids = torch.randint(1000, 2000, (n, seq or 128))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (n,))}
        model = model.to(device, getattr(torch, dtype))
        return model, {k: v.to(device) for k, v in batch.items()}, attprune.find_sites(model)
    model, tokenizer = load_minilm_classifier()
    model = model.to(getattr(torch, dtype))
    sentences = (SENTENCES * ((n + len(SENTENCES) - 1) // len(SENTENCES)))[:n]
    labels = (LABELS * ((n + len(LABELS) - 1) // len(LABELS)))[:n]
    if seq:
        enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq, return_tensors="pt")
    else:
        enc = tokenizer(sentences, padding=True, return_tensors="pt")
    batch = {k: v.to(device) for k, v in dict(enc, labels=torch.tensor(labels)).items()}
    return model.to(device), batch, attprune.find_sites(model)


def run_attprune(model, batch, sites, args, backend="auto"):
    """attprune with ``--steps`` / ``--quadrature`` (default: the library's defaults); the mean
    nodes per site (``steps="auto"`` chooses them)."""
    import attprune
    settings = {k: v for k, v in (("steps", args.steps), ("quadrature", args.quadrature)) if v is not None}
    scores = attprune.attribute(model, [batch], progress=False, backend=backend, **settings)
    gaps = scores.meta.get("completeness")
    nodes = (sum(g["mean_nodes"] for g in gaps.values()) / len(gaps) + 1 / 3) if gaps else scores.meta["steps"]
    return {p: s.mean for p, s in scores.sites.items()}, nodes  # auto: + the site-off forward


def _objective(model, input_ids, attention_mask):
    return torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), -1)


def run_captum_lig(model, batch, sites, args):
    from captum.attr import LayerIntegratedGradients

    out = {}
    for site in sites:
        lig = LayerIntegratedGradients(lambda ids, mask: _objective(model, ids, mask), model.get_submodule(site.path))
        attr = lig.attribute(batch["input_ids"], baselines=torch.zeros_like(batch["input_ids"]),
                             additional_forward_args=(batch["attention_mask"],), target=batch["labels"],
                             n_steps=args.captum_steps, method=args.captum_method, attribute_to_layer_input=True)
        out[site.path] = _reduce(attr, site, batch)
    return out, args.captum_steps


def run_captum_ig(model, batch, sites, args):
    from captum.attr import IntegratedGradients

    out = {}
    for site in sites:
        module = model.get_submodule(site.path)
        captured = {}
        h = module.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0].detach()))
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h.remove()

        def forward(x_site, ids, mask):
            handle = module.register_forward_pre_hook(lambda m, a: (x_site,))
            try:
                return _objective(model, ids, mask)
            finally:
                handle.remove()

        x = captured["x"]
        attr = IntegratedGradients(forward).attribute(
            x, baselines=torch.zeros_like(x), additional_forward_args=(batch["input_ids"], batch["attention_mask"]),
            target=batch["labels"], n_steps=args.captum_steps, method=args.captum_method)
        out[site.path] = _reduce(attr, site, batch)
    return out, args.captum_steps


def _reduce(attr, site, batch):
    b, t, _ = attr.shape
    per_token = attr.reshape(b, t, site.n_units, site.unit_size).sum(-1) * batch["attention_mask"][..., None]
    return per_token.sum(1).mean(0).detach().float()


RUNNERS = {"attprune": run_attprune, "captum-lig": run_captum_lig, "captum-ig": run_captum_ig,
           **{f"attprune-{b}": functools.partial(run_attprune, backend=b) for b in ("torch", "triton", "native")}}


def _layer_index(path: str) -> int:
    parts = path.split(".")
    return next(int(p) for p in parts if p.isdigit())


def required_flops(model, batch, sites, steps: float) -> float:
    """FLOPs per-site IG must do: per site, ``steps`` x (forward + input-gradient backward, ~= the
    forward) of everything above the site, plus one clean forward of the model."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)][0]
    tokens = batch["input_ids"].numel()
    seq = batch["input_ids"].shape[1]
    hidden = model.config.hidden_size

    def forward_flops(module) -> float:  # 2 per weight per token, plus the attention scores and mix
        params = sum(p.numel() for p in module.parameters() if p.dim() > 1)
        return 2 * params * tokens

    per_layer = [forward_flops(layer) + 4 * tokens * seq * hidden for layer in layers]
    total = sum(per_layer)  # the clean pass (embeddings and head are negligible)
    for site in sites:
        i = _layer_index(site.path)
        above = sum(per_layer[i + 1:])
        if site.kind == "heads":  # the FFN of the site's own layer lies above the attention output
            mlp = [m for name, m in layers[i].named_children() if name in ("mlp", "intermediate", "output")]
            above += sum(forward_flops(m) for m in mlp)
        total += steps * 2 * above
    return float(total)


def bf16_peak_flops(device: str) -> float:
    """Measured dense bf16 matmul throughput (FLOP/s) on this GPU."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * reps / (time.perf_counter() - start)


def measure(method: str, args, queue) -> None:
    torch.set_num_threads(args.threads)
    model, batch, sites = build(args.model, args.n, args.seq, args.device, args.dtype)
    run = RUNNERS[method]
    cuda = args.device == "cuda"
    # peak memory above the loaded model; the short warm-up (2 steps) peaks lower than the runs
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm_up = argparse.Namespace(**dict(vars(args), steps=2, quadrature=None, captum_steps=2))
    run(model, batch, sites, warm_up)  # warm-up (allocator, kernels)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores, nodes = run(model, batch, sites, args)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024)
    queue.put({"seconds": min(times), "all_seconds": times, "peak_bytes": peak,
               "flops": required_flops(model, batch, sites, nodes), "nodes": nodes,
               "examples": batch["input_ids"].shape[0],
               "scores": {p: v.cpu().tolist() for p, v in scores.items()}})  # no shared-memory fds


def _result_of(proc, queue, method: str) -> dict:
    """The child's result; a clear error (not a hang) if it died."""
    import queue as queues
    while True:
        try:
            result = queue.get(timeout=5)
            proc.join()
            return result
        except queues.Empty:
            if not proc.is_alive():
                raise SystemExit(f"the {method} measurement process failed (exit code {proc.exitcode})")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("minilm", "bert-base", "llama-1b"), default="minilm",
                   help="packaged MiniLM (real weights), or a random BERT-base- or TinyLlama-shaped model")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="the model's dtype for every method")
    p.add_argument("--n", type=int, default=16, help="sentences")
    p.add_argument("--seq", type=int, default=None, help="pad every sentence to this length (default: longest)")
    p.add_argument("--steps", type=lambda t: t if t == "auto" else int(t), default=None,
                   help="attprune's IG nodes, or auto (default: attprune's default)")
    p.add_argument("--quadrature", default=None, help="attprune's node rule (default: attprune's default)")
    p.add_argument("--captum-steps", type=int, default=50, help="Captum's n_steps (its default: 50)")
    p.add_argument("--captum-method", default="gausslegendre", help="Captum's method (its default: gausslegendre)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method (the fastest is reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--methods", default="attprune,captum-lig,captum-ig",
                   help=f"comma-separated, of: {', '.join(RUNNERS)}")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/attribution_<device>.json)")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    results = {}
    for method in args.methods.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(target=measure, args=(method, args, queue))
        proc.start()
        results[method] = _result_of(proc, queue, method)
        print(f"{method}: {results[method]['seconds']:.2f} s, peak {results[method]['peak_bytes'] / 2**20:.0f} MiB",
              file=sys.stderr)
    report = {"config": vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "methods": {}}
    peak = None
    if args.device == "cuda":
        peak = bf16_peak_flops(args.device)
        report.update(device=torch.cuda.get_device_name(), bf16_peak_tflops=round(peak / 1e12, 1))
    baseline = "attprune" if "attprune" in results else next(m for m in results if m.startswith("attprune"))
    ours = results.get(baseline)
    report["speedups_against"] = baseline
    for method, r in results.items():
        entry = {"seconds": round(r["seconds"], 3), "nodes": round(r["nodes"], 2),
                 "peak_MiB": round(r["peak_bytes"] / 2**20, 1),
                 "examples_per_s": round(r["examples"] / r["seconds"], 3)}
        if peak:
            entry["flop_utilisation"] = round(r["flops"] / r["seconds"] / peak, 4)
        if ours is not None and method != baseline:
            entry["speedup_of_attprune"] = round(r["seconds"] / ours["seconds"], 3)
            entry["peak_memory_ratio_vs_attprune"] = round(r["peak_bytes"] / max(ours["peak_bytes"], 1), 3)
            diffs = [float((torch.tensor(r["scores"][p]) - torch.tensor(ours["scores"][p])).abs().max()
                           / torch.tensor(ours["scores"][p]).abs().max())
                     for p in ours["scores"]]
            entry["max_rel_score_difference"] = max(diffs)
        report["methods"][method] = entry
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = Path(args.out) if args.out else RESULTS / f"attribution_{args.device}_{args.model}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"| method | seconds | examples/s | peak MiB | {baseline} speedup | max rel. score diff | FLOP util. |\n"
          "|---|---|---|---|---|---|---|")
    for method, e in report["methods"].items():
        print(f"| {method} | {e['seconds']} | {e['examples_per_s']} | {e['peak_MiB']} | "
              f"{e.get('speedup_of_attprune', '-')} | {e.get('max_rel_score_difference', '-')} | "
              f"{e.get('flop_utilisation', '-')} |")
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
