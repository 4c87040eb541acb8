"""The README's LLM user path on SmolLM2, measured: 32 label-balanced mr training prompts as a
jsonl file (question, prefill, answer) -> ``attprune score / prune / export`` (the command
line, the causal-LM recipe) -> accuracy of the compact model on 300 test prompts and
agreement of llama.cpp (the GGUF file) with torch on 100 of them.

    python bench/llm_user_path.py /tmp/user-path     # ~8-12 min on 2 cores; needs attprune[llamacpp]

Writes OUT/result.json (the committed copy: bench/results/llm/user_path.json).
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import attprune
from attprune.experiments.llm import LLMTask
from attprune.experiments.prompts import PROMPT_TASKS, balanced_rows, message
from attprune.models import load_model, load_smollm2

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(2)
model, tok = load_smollm2()
task = PROMPT_TASKS["mr"]
rows = balanced_rows(task.rows("train"), 16, 2, seed=0)
with open(out / "task.jsonl", "w") as f:
    for r in rows:
        q, pre = message(task, r, tok)
        f.write(json.dumps({"question": q, "start": pre, "answer": task.answers[int(r["label"])]}) + "\n")
cli = [sys.executable, "-m", "attprune"]


def run(*args) -> float:
    """One attprune command; its seconds."""
    started = time.perf_counter()
    subprocess.run([*cli, *args], check=True)
    return round(time.perf_counter() - started, 1)


res = {}
res["score_s"] = run("score", "--model", "smollm2", "--data", str(out / "task.jsonl"), "--prompt-column", "question",
                     "--prefill-column", "start", "--answer-column", "answer", "--units", "ffn", "--no-progress",
                     "--out", str(out / "scores"))
res["prune_s"] = run("prune", "--model", "smollm2", "--scores", str(out / "scores"), "--ffn", "0.3", "--round-to", "32",
                     "--out", str(out / "compact"))
res["export_s"] = run("export", "--model", str(out / "compact"), "--format", "gguf", "--out", str(out / "pruned.gguf"))
meta = attprune.Scores.load(out / "scores" / "scores.safetensors").meta
res.update({key: meta.get(key) for key in ("recipe", "steps", "quadrature")})
small, _ = load_model(out / "compact")
small.eval()
res["params"] = [sum(p.numel() for p in model.parameters()), sum(p.numel() for p in small.parameters())]
for name, m in (("dense", model), ("pruned", small)):
    o = LLMTask.of(m, tok, "mr", max_test=300).measure(m)
    res[name] = {"accuracy": o.interval().to_dict(), "perplexity": o.perplexity}
res["gguf_mb"] = round((out / "pruned.gguf").stat().st_size / 2**20, 1)
import llama_cpp
subject = LLMTask.of(small, tok, "mr", max_test=100)
answers = [a[0] for a in subject.answers]
llm = llama_cpp.Llama(str(out / "pruned.gguf"), n_ctx=512, logits_all=True, verbose=False, n_threads=2)
agree = 0
for e in subject.test:
    llm.reset()
    llm.eval(e.prompt)
    g = np.asarray(llm.scores[len(e.prompt) - 1])[answers]
    with torch.no_grad():
        w = small(torch.tensor([e.prompt])).logits[0, -1, answers].float().numpy()
    agree += int(g.argmax() == w.argmax())
llm.close()
res["llama_cpp_agrees"] = [agree, len(subject.test)]
print(json.dumps(res, indent=1))
(out / "result.json").write_text(json.dumps(res, indent=1))
