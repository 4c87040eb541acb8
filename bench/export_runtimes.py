"""Pruned models in other runtimes: llama.cpp (GGUF) and ONNX Runtime, dense vs pruned, timed side by side.

    python bench/export_runtimes.py                      # -> bench/results/export/{export_runtimes.json,README.md}

1. llama.cpp (llama-cpp-python, CPU, f16 GGUF): SmolLM2-135M-Instruct dense and pruned with
   fisher scores from 32 BBC prompts (FFN 30%, FFN 50%, FFN 30% + heads 33% by KV group;
   global ranking, so layer widths differ: llama.cpp's ``deci`` architecture).  Prompt
   processing: one 128-token prompt; generation: 32 single-token steps after a 1-token
   prompt.  "widths x32": FFN widths kept at multiples of 32 (``round_to={"ffn": 32}``;
   ggml's block size).  Tokens/s from the median of interleaved rounds, with the
   interquartile range.
2. ONNX Runtime (CPU): the packaged MiniLM classifier dense and compacted (50% FFN, 50%
   heads, magnitude scores: speed does not depend on which units go), batch 1 and 32 x 128
   tokens; the achieved speedup beside the FLOP-ideal one.
3. The file sizes.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

import attprune
from attprune.cache import cache_dir
from attprune.compact.cost import plan_cost
from attprune.io import write_json
from attprune.timing import Latency, interleaved_latency

RESULTS = Path(__file__).parent / "results" / "export"
LLM_PLANS = {"ffn 30%": {"ffn": 0.3}, "ffn 30%, widths x32": {"ffn": 0.3, "round_to": 32},
             "ffn 50%": {"ffn": 0.5}, "ffn 50%, widths x32": {"ffn": 0.5, "round_to": 32},
             "ffn 30% + heads 33%, widths x32": {"ffn": 0.3, "heads": 0.33, "round_to": {"ffn": 32}}}


def _mib(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def _rate(tokens: int, latency: Latency) -> dict:
    """Tokens/s at the median, and at the quartiles of the time (slow quartile first)."""
    return {"median": round(tokens / latency.median_ms * 1000, 1), "iqr": [round(tokens / latency.p75_ms * 1000, 1),
                                                                        round(tokens / latency.p25_ms * 1000, 1)]}


def llama_cpp_table(args, folder: Path) -> dict:
    from llama_cpp import Llama

    from attprune.models import load_smollm2
    from attprune.experiments.llm import LLMTask
    from attprune.experiments.pipeline import score

    model, tokenizer = load_smollm2()
    run = LLMTask.of(model, tokenizer, "bbc", max_test=1, n_windows=1)
    scores, _ = score(run, "fisher", n=32, units=("ffn", "heads"), cache=cache_dir() / "scores" / "llm")
    variants = {"dense": model}
    for name, fractions in LLM_PLANS.items():
        variants[name] = attprune.compact(copy.deepcopy(model), attprune.make_plan(scores, **fractions))
    files, params = {}, {}
    for name, variant in variants.items():
        files[name] = attprune.export(variant, folder / f"{name.replace(' ', '_').replace('%', '')}.gguf",
                                      format="gguf", tokenizer=tokenizer, dtype="f16")
        params[name] = sum(p.numel() for p in variant.parameters())
    del variants
    llms = {name: Llama(str(path), n_ctx=256, n_batch=256, n_threads=args.threads, verbose=False)
            for name, path in files.items()}
    prompt = (run.test[0].prompt * 8)[:128]  # a real chat prompt (token ids), repeated to 128 tokens

    def prefill(llm):
        return lambda: (llm.reset(), llm.eval(prompt))

    def generate(llm):
        def steps():
            llm.reset()
            llm.eval(prompt[:1])
            for _ in range(args.new_tokens):
                llm.eval([int(llm.scores[llm.n_tokens - 1].argmax())])
        return steps

    pp = interleaved_latency({n: prefill(llm) for n, llm in llms.items()}, repeats=args.repeats)
    tg = interleaved_latency({n: generate(llm) for n, llm in llms.items()}, repeats=args.repeats)
    for llm in llms.values():
        llm.close()
    return {name: {"params": params[name], "file_mib": _mib(files[name]),
                   "prompt_tokens_per_s": _rate(len(prompt), pp[name]),
                   "generation_tokens_per_s": _rate(args.new_tokens + 1, tg[name])} for name in files}


def onnx_table(args, folder: Path) -> dict:
    import onnxruntime as ort

    from attprune.models import load_minilm_classifier

    dense = load_minilm_classifier()[0]
    plan = attprune.make_plan(attprune.attribute(dense, None, method="magnitude"), ffn=0.5, heads=0.5)
    small = attprune.compact(copy.deepcopy(dense), plan)
    cost = plan_cost(dense, plan, seq_len=128)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    table = {"flop_ideal_speedup": round(cost["flops_before"] / cost["flops_after"], 3), "batches": {}}
    files = {}
    for name, model in (("dense", dense), ("compact", small)):
        ones = torch.ones(1, 8, dtype=torch.long)
        example = {"input_ids": ones, "attention_mask": ones}
        files[name] = attprune.export(model, folder / f"minilm_{name}.onnx", format="onnx", example=example)
    table["file_mib"] = {n: _mib(f) for n, f in files.items()}
    sessions = {n: ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"]) for n, f in files.items()}
    for batch in (1, 32):
        g = torch.Generator().manual_seed(batch)
        feed = {"input_ids": torch.randint(1000, 20000, (batch, 128), generator=g).numpy(),
                "attention_mask": torch.ones(batch, 128, dtype=torch.long).numpy()}
        names = {n: [i.name for i in s.get_inputs()] for n, s in sessions.items()}
        calls = {n: (lambda s=s, n=n: s.run(None, {k: feed[k] for k in names[n]})) for n, s in sessions.items()}
        lat = interleaved_latency(calls, repeats=args.repeats)
        speedup = lat["dense"].median_ms / lat["compact"].median_ms
        table["batches"][batch] = {"dense": lat["dense"].to_dict(), "compact": lat["compact"].to_dict(),
                                   "speedup": round(speedup, 3),
                                   "share_of_ideal": round(speedup / table["flop_ideal_speedup"], 3)}
    return table


def markdown(result: dict) -> str:
    md = ["# Pruned models in other runtimes", "", f"`python bench/export_runtimes.py` on {result['machine']}, "
          f"{result['threads']} threads; medians of {result['repeats']} interleaved rounds [interquartile range].", ""]
    if "llama_cpp" in result:
        md += ["## llama.cpp (llama-cpp-python 0.3.36, f16 GGUF): SmolLM2-135M-Instruct", "",
               "| model | parameters | file MiB | prompt tok/s (128) | generation tok/s | prompt speedup | "
               "generation speedup |", "|---|---|---|---|---|---|---|"]
        rows = result["llama_cpp"]
        base = rows["dense"]
        for name, r in rows.items():
            pp, tg = r["prompt_tokens_per_s"], r["generation_tokens_per_s"]
            md.append(f"| {name} | {r['params']:,} | {r['file_mib']} | {pp['median']} [{pp['iqr'][0]}, {pp['iqr'][1]}]"
                      f" | {tg['median']} [{tg['iqr'][0]}, {tg['iqr'][1]}] | "
                      f"{pp['median'] / base['prompt_tokens_per_s']['median']:.2f}x | "
                      f"{tg['median'] / base['generation_tokens_per_s']['median']:.2f}x |")
        md.append("")
    if "onnxruntime" in result:
        o = result["onnxruntime"]
        md += ["## ONNX Runtime (CPU): MiniLM classifier, 50% FFN + 50% heads", "",
               f"files: dense {o['file_mib']['dense']} MiB, compact {o['file_mib']['compact']} MiB; FLOP-ideal "
               f"speedup {o['flop_ideal_speedup']:.2f}x", "",
               "| batch x 128 tokens | dense ms | compact ms | speedup | share of FLOP-ideal |",
               "|---|---|---|---|---|"]
        for batch, r in o["batches"].items():
            cells = [f"{t['median_ms']:.1f} [{t['p25_ms']:.1f}, {t['p75_ms']:.1f}]" for t in (r["dense"], r["compact"])]
            md.append(f"| {batch} | {cells[0]} | {cells[1]} | {r['speedup']:.2f}x | {r['share_of_ideal']:.0%} |")
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for llama.cpp, ONNX Runtime and torch")
    p.add_argument("--repeats", type=int, default=7, help="timed interleaved rounds")
    p.add_argument("--new-tokens", type=int, default=32, help="generation steps timed per round")
    p.add_argument("--skip", nargs="*", choices=("llama_cpp", "onnxruntime"), default=[], help="tables to skip")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
              "threads": args.threads, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        if "onnxruntime" not in args.skip:
            result["onnxruntime"] = onnx_table(args, Path(tmp))
        if "llama_cpp" not in args.skip:
            result["llama_cpp"] = llama_cpp_table(args, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "export_runtimes.json", result)
    (args.out / "README.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
