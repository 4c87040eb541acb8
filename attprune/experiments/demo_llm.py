"""``attprune demo --llm``: task-specific pruning of a real decoder LLM, end to end, in minutes.

SmolLM2-135M-Instruct (from the cache: ``attprune fetch``) answers a prompt task (default:
BBC topics, the one task where the 135M model is clearly above chance zero-shot); its FFN
neurons are scored by IG, fisher, wanda and random on a few training prompts, pruned
at 10% and 30%, each pruned model compacted and evaluated (accuracy with a 95%
bootstrap interval, perplexity on held-out text), and one compacted model is timed
(prefill and KV-cache decoding), saved and reloaded.  The full comparison is
``bench/experiments/llm_pruning.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..cache import cache_dir
from ..io import write_json
from ..models import load_smollm2
from ..plan import make_plan
from ..pretrained import from_pretrained, save_pretrained
from ..timing import forward_latency

LLM_METHODS = ("ig", "fisher", "wanda", "random")
LLM_SPARSITIES = (0.1, 0.3)


def run_llm_demo(out: str | Path = "out/demo-llm", task: str = "bbc", n_attr: int = 8, max_test: int = 80,
                 ffn: float = 0.2, progress: bool = True) -> dict:
    """Score, prune, compact, evaluate and time SmolLM2 on one prompt task; returns the rows."""
    from . import report
    from .llm import LLMTask, decode_tokens_per_second
    from .pipeline import evaluate, parameter_count, point_row, pruned_copy, score

    started = time.perf_counter()
    out = Path(out)
    model, tokenizer = load_smollm2()
    run = LLMTask.of(model, tokenizer, task, max_test=max_test, n_windows=16)
    dense = run.dense
    print(f"SmolLM2-135M-Instruct, {task} prompts: dense accuracy {dense.accuracy:.3f} on {len(run.test)} test "
          f"prompts (majority share {run.chance:.3f}); perplexity {dense.perplexity:.2f} on held-out text")
    rows, seconds = [], {}
    for method in LLM_METHODS:
        scores, seconds[method] = score(run, method, n=n_attr, units=("ffn",), progress=progress,
                                        cache=cache_dir() / "scores" / "llm")  # the causal-LM recipe
        for sparsity in LLM_SPARSITIES:
            rows.append(point_row(evaluate(run, make_plan(scores, ffn=sparsity)), task=task, method=method,
                                  sparsity=sparsity))
        if method == "ig":
            ig_scores = scores
        print(f"{method}: scored from {n_attr} prompts in {seconds[method]:.1f} s", flush=True)
    _print_table(rows, dense)
    # FFN widths at multiples of 32: what llama.cpp runs fast (bench/results/export/)
    small = pruned_copy(run, make_plan(ig_scores, ffn=ffn, round_to={"ffn": 32}))
    save_pretrained(small, out / "model", tokenizer=tokenizer)
    reloaded = from_pretrained(out / "model")
    tokens = torch.randint(100, model.config.vocab_size, (1, 128), generator=torch.Generator().manual_seed(0))
    timing = forward_latency({"dense": model, "compact": reloaded}, {"input_ids": tokens}, repeats=7)
    decode = {name: decode_tokens_per_second(m, tokens[:, :32]) for name, m in
              (("dense", model), ("compact", reloaded))}
    params = {"dense": parameter_count(model), "compact": parameter_count(reloaded)}
    print(f"\ncompacted at {ffn:.0%} FFN (IG), saved to {out / 'model'} and reloaded: params {params['dense']:,} -> "
          f"{params['compact']:,}; CPU prefill (1 x 128 tokens) {timing['dense'].median_ms:.0f} -> "
          f"{timing['compact'].median_ms:.0f} ms ({timing['dense'].median_ms / timing['compact'].median_ms:.2f}x); "
          f"decoding {decode['dense']:.1f} -> {decode['compact']:.1f} tokens/s")
    gguf_file = _export_for_llama_cpp(reloaded, tokenizer, out / "model.gguf")
    plot = report.plot(report.curves(rows), out / "demo_llm.png", title="SmolLM2-135M: FFN pruning (95% bands)",
                       dense={task: dense.accuracy}, intervals=report.bands(rows))
    summary = {"task": task, "n_attr": n_attr, "max_test": len(run.test), "recipe": ig_scores.meta["recipe"],
               "ig": {k: ig_scores.meta[k] for k in ("steps", "quadrature", "baseline", "path")}, "rows": rows,
               "dense": dict(point_row(dense), majority=run.chance),
               "attribution_seconds": seconds, "compact": {"ffn": ffn, "params": params,
                                                           "prefill_ms": {k: v.to_dict() for k, v in timing.items()},
                                                           "decode_tokens_per_s": decode,
                                                           "gguf": str(gguf_file) if gguf_file else None},
               "seconds": round(time.perf_counter() - started, 1)}
    write_json(out / "demo_llm.json", summary)
    print(f"wrote {out / 'demo_llm.json'}" + (f" and {plot}" if plot else "") +
          f" ({time.perf_counter() - started:.0f} s)")
    return summary


def _export_for_llama_cpp(model, tokenizer, path: Path) -> Path | None:
    """The compact model as an f16 GGUF file; with llama-cpp-python installed, a greedy
    continuation from llama.cpp beside the torch one."""
    try:
        from ..export import export
        path = export(model, path, format="gguf", tokenizer=tokenizer, dtype="f16")
    except ImportError as err:
        print(f"no GGUF export ({err})")
        return None
    print(f"exported for llama.cpp: {path} ({path.stat().st_size / 2**20:.0f} MiB, f16)")
    try:
        from llama_cpp import Llama
    except ImportError:
        print("(pip install 'attprune[llamacpp]' to run it here: llama_cpp.Llama(path))")
        return path
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        ours = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):]
    llm = Llama(str(path), n_ctx=256, n_threads=2, verbose=False)
    try:
        theirs = llm.create_completion(prompt, max_tokens=12, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()
    print(f"greedy answer, torch:     {tokenizer.decode(ours, skip_special_tokens=True)!r}\n"
          f"greedy answer, llama.cpp: {theirs!r}")
    return path


def _print_table(rows: list[dict], dense: dict) -> None:
    print(f"\naccuracy [95% CI] / perplexity after removing FFN neurons (dense {dense.accuracy:.3f} / "
          f"{dense.perplexity:.1f})")
    print("| method | " + " | ".join(f"{s:.0%}" for s in LLM_SPARSITIES) + " |")
    print("|" + "---|" * (len(LLM_SPARSITIES) + 1))
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [r for r in rows if r["method"] == method]
        print(f"| {method} | " + " | ".join(f"{r['accuracy']:.3f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] / "
                                            f"{r['perplexity']:.1f}" for r in cells) + " |")
