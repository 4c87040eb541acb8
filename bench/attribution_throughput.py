"""Attribution throughput: attprune's per-site IG vs the idiomatic Captum loop, same run.

Every FFN and attention site of the model, the same examples, the same steps:

* ``attprune``: ``attprune.attribute(model, [batch], method="ig", steps=m)``;
* ``captum-lig``: the idiomatic loop, ``LayerIntegratedGradients`` per site with
  ``attribute_to_layer_input=True`` (input baseline: all-[PAD] ids, Captum's usual choice;
  its layer baseline is therefore not 0, so its scores differ from ours by definition);
* ``captum-ig``: Captum ``IntegratedGradients`` on each site's input with a zero baseline
  (a hook feeds the scaled site input to the model): the same quantity attprune
  computes; the script checks the scores agree.

Each method runs in its own process (peak RSS on CPU, ``max_memory_allocated`` on GPU),
after one warm-up call.  Results: ``bench/results/attribution_<device>.json`` and a
markdown table on stdout.

    python bench/attribution_throughput.py                     # packaged MiniLM, CPU
    python bench/attribution_throughput.py --device cuda --model bert-base --seq 128
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def build(model_name: str, n: int, seq: int | None, device: str):
    import transformers as tf

    import attprune
    from attprune.models import load_minilm_classifier
    from attprune.samples import LABELS, SENTENCES

    model, tokenizer = load_minilm_classifier()
    if model_name == "bert-base":  # random weights: values do not matter for speed
        torch.manual_seed(0)
        model = tf.BertForSequenceClassification(tf.BertConfig(num_labels=2)).eval()
    sentences = (SENTENCES * ((n + len(SENTENCES) - 1) // len(SENTENCES)))[:n]
    labels = (LABELS * ((n + len(LABELS) - 1) // len(LABELS)))[:n]
    if seq:
        enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=seq, return_tensors="pt")
    else:
        enc = tokenizer(sentences, padding=True, return_tensors="pt")
    batch = {k: v.to(device) for k, v in dict(enc, labels=torch.tensor(labels)).items()}
    return model.to(device), batch, attprune.find_sites(model)


def run_attprune(model, batch, sites, steps):
    import attprune
    scores = attprune.attribute(model, [batch], steps=steps, progress=False)
    return {p: s.mean for p, s in scores.sites.items()}


def _objective(model, input_ids, attention_mask):
    return torch.log_softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits.float(), -1)


def run_captum_lig(model, batch, sites, steps):
    from captum.attr import LayerIntegratedGradients

    out = {}
    for site in sites:
        lig = LayerIntegratedGradients(lambda ids, mask: _objective(model, ids, mask), model.get_submodule(site.path))
        attr = lig.attribute(batch["input_ids"], baselines=torch.zeros_like(batch["input_ids"]),
                             additional_forward_args=(batch["attention_mask"],), target=batch["labels"],
                             n_steps=steps, method="riemann_right", attribute_to_layer_input=True)
        out[site.path] = _reduce(attr, site, batch)
    return out


def run_captum_ig(model, batch, sites, steps):
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
            target=batch["labels"], n_steps=steps, method="riemann_right")
        out[site.path] = _reduce(attr, site, batch)
    return out


def _reduce(attr, site, batch):
    b, t, _ = attr.shape
    per_token = attr.reshape(b, t, site.n_units, site.unit_size).sum(-1) * batch["attention_mask"][..., None]
    return per_token.sum(1).mean(0).detach().float()


RUNNERS = {"attprune": run_attprune, "captum-lig": run_captum_lig, "captum-ig": run_captum_ig}


def measure(method: str, args, queue) -> None:
    torch.set_num_threads(args.threads)
    model, batch, sites = build(args.model, args.n, args.seq, args.device)
    run = RUNNERS[method]
    cuda = args.device == "cuda"
    # peak memory above the loaded model; the short warm-up (2 steps) peaks lower than the runs
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(model, batch, sites, 2)  # warm-up (allocator, kernels)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = run(model, batch, sites, args.steps)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024)
    queue.put({"seconds": min(times), "all_seconds": times, "peak_bytes": peak,
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
    p.add_argument("--model", choices=("minilm", "bert-base"), default="minilm",
                   help="packaged MiniLM (real weights) or a random BERT-base-shaped model")
    p.add_argument("--n", type=int, default=16, help="sentences")
    p.add_argument("--seq", type=int, default=None, help="pad every sentence to this length (default: longest)")
    p.add_argument("--steps", type=int, default=20, help="IG steps")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per method (the fastest is reported)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--methods", default="attprune,captum-lig,captum-ig", help="comma-separated")
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
    ours = results.get("attprune")
    for method, r in results.items():
        entry = {"seconds": round(r["seconds"], 3), "peak_MiB": round(r["peak_bytes"] / 2**20, 1)}
        if ours is not None and method != "attprune":
            entry["speedup_of_attprune"] = round(r["seconds"] / ours["seconds"], 3)
            entry["peak_memory_ratio_vs_attprune"] = round(r["peak_bytes"] / max(ours["peak_bytes"], 1), 3)
            diffs = [float((torch.tensor(r["scores"][p]) - torch.tensor(ours["scores"][p])).abs().max()
                           / torch.tensor(ours["scores"][p]).abs().max())
                     for p in ours["scores"]]
            entry["max_rel_score_difference"] = max(diffs)
        report["methods"][method] = entry
    out = Path(args.out) if args.out else RESULTS / f"attribution_{args.device}_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("| method | seconds | peak MiB | attprune speedup | max rel. score diff |\n|---|---|---|---|---|")
    for method, e in report["methods"].items():
        print(f"| {method} | {e['seconds']} | {e['peak_MiB']} | {e.get('speedup_of_attprune', '-')} | "
              f"{e.get('max_rel_score_difference', '-')} |")
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
