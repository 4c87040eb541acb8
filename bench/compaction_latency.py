"""Latency of the compacted model vs the dense and the masked one, next to the ideal speedup.

For each model, a plan removing ``--ffn`` of the FFN neurons and ``--heads`` of the heads
(data-free magnitude scores: speed does not depend on which units go) is applied with
``round_to`` 1 and 8.  For every batch size and sequence length: the fastest of
``--repeats`` forward passes (inference mode) of the dense, masked and compact models,
the achieved speedup (dense / compact), the ideal one from the FLOP count, and their
ratio.  Weight memory is reported exactly (bytes of parameters).

    python bench/compaction_latency.py                                  # CPU, MiniLM + BERT-base
    python bench/compaction_latency.py --device cuda --dtype bfloat16 --models bert-base
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from pathlib import Path

import torch

import attprune
from attprune.compact.cost import plan_cost
from attprune.timing import forward_latency

RESULTS = Path(__file__).parent / "results"


def load(name: str):
    import transformers as tf

    from attprune.models import load_minilm_classifier

    if name == "minilm":
        return load_minilm_classifier()[0]
    torch.manual_seed(0)
    if name == "bert-base":
        return tf.BertForSequenceClassification(tf.BertConfig(num_labels=2)).eval()
    if name == "llama-1b":  # Llama-3.2-1B-shaped, random weights
        cfg = tf.LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                             num_key_value_heads=8, vocab_size=32000, max_position_embeddings=2048)
        return tf.LlamaForCausalLM(cfg).eval()
    raise ValueError(name)


def weight_mib(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20


def bench_model(name: str, args) -> list[dict]:
    dtype = getattr(torch, args.dtype)
    dense = load(name).to(args.device, dtype)
    scores = attprune.attribute(dense, None, method="magnitude")
    rows = []
    for round_to in (1, 8):
        plan = attprune.make_plan(scores, ffn=args.ffn, heads=args.heads, round_to=round_to)
        compacted = attprune.compact(copy.deepcopy(dense), plan)
        masked = copy.deepcopy(dense)
        attprune.mask(masked, plan)
        for seq in args.seq:
            ideal = plan_cost(dense, plan, seq_len=seq)
            for batch in args.batch:
                if name != "minilm" and args.device == "cpu" and batch * seq > args.max_cpu_tokens:
                    continue
                ids = torch.randint(1000, 2000, (batch, seq), device=args.device)
                inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
                timing = forward_latency({"dense": dense, "masked": masked, "compact": compacted}, inputs,
                                         args.repeats, warmup=1)
                # the fastest round counts (as this table has always been measured); medians beside it
                dense_ms, masked_ms, compact_ms = (timing[k].min_ms for k in ("dense", "masked", "compact"))
                achieved = dense_ms / compact_ms
                ideal_speedup = ideal["flops_before"] / ideal["flops_after"]
                rows.append(dict(model=name, round_to=round_to, batch=batch, seq=seq, dense_ms=round(dense_ms, 2),
                                 masked_ms=round(masked_ms, 2), compact_ms=round(compact_ms, 2),
                                 speedup=round(achieved, 3),
                                 median_speedup=round(timing["dense"].median_ms / timing["compact"].median_ms, 3),
                                 ideal_speedup=round(ideal_speedup, 3),
                                 fraction_of_ideal=round(achieved / ideal_speedup, 3),
                                 dense_weights_MiB=round(weight_mib(dense), 1),
                                 compact_weights_MiB=round(weight_mib(compacted), 1)))
                print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="minilm,bert-base", help="comma-separated: minilm, bert-base, llama-1b")
    p.add_argument("--ffn", type=float, default=0.5, help="fraction of FFN neurons removed")
    p.add_argument("--heads", type=float, default=0.25, help="fraction of heads removed")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="batch sizes")
    p.add_argument("--seq", type=int, nargs="+", default=[32, 128], help="sequence lengths")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per point (the fastest counts)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--max-cpu-tokens", type=int, default=1024,
                   help="skip larger batch x seq points for the big models on CPU (time budget)")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/compaction_<device>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [row for name in args.models.split(",") for row in bench_model(name, args)]
    report = {"config": vars(args), "torch": torch.__version__, "machine": platform.machine(), "rows": rows}
    out = Path(args.out) if args.out else RESULTS / f"compaction_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("| model | round_to | batch | seq | dense ms | masked ms | compact ms | speedup | ideal | of ideal |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['round_to']} | {r['batch']} | {r['seq']} | {r['dense_ms']} | {r['masked_ms']} | "
              f"{r['compact_ms']} | {r['speedup']}x | {r['ideal_speedup']}x | {r['fraction_of_ideal']:.0%} |")
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    main()
