"""Scale out and hold up: torchrun with 2 gloo processes equals one process; a run killed
with SIGKILL resumes to the uninterrupted scores; mismatched checkpoints are refused."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import attprune
from attprune.errors import ResumeMismatchError

import tiny

TESTS = Path(__file__).resolve().parent


def tiny_batches(model, n=7):
    return [tiny.batch_for(model, batch_size=2, seq_len=6, seed=s) for s in range(n)]


def assert_same_scores(a, b, atol=1e-10):
    assert set(a.sites) == set(b.sites)
    for path, s in a.sites.items():
        t = b.sites[path]
        assert s.count == t.count, path
        for stat in ("sum", "sum_abs", "sum_sq"):
            assert torch.allclose(getattr(s, stat), getattr(t, stat), rtol=0, atol=atol), (path, stat)


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import attprune, tiny
    model = tiny.bert_cls()
    batches = [tiny.batch_for(model, batch_size=2, seq_len=6, seed=s) for s in range(7)]

    def dies_at_batch_5():
        for i, batch in enumerate(batches):
            if i == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

    attprune.attribute(model, dies_at_batch_5(), method="ig", steps=4, resume_dir={folder!r},
                       save_every=2, progress=False)
""")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    folder = tmp_path / "partial"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.format(tests=str(TESTS), folder=str(folder))],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    saved = attprune.Scores.load(folder / "partial-rank0-of1.safetensors")
    assert saved.meta["next_batch"] == 4 and saved.n_examples == 8  # batches 0-3 scored, checkpointed
    model = tiny.bert_cls()
    resumed = attprune.attribute(model, tiny_batches(model), method="ig", steps=4, resume_dir=folder,
                                 save_every=2, progress=False)
    reference = attprune.attribute(model, tiny_batches(model), method="ig", steps=4, progress=False)
    assert_same_scores(resumed, reference, atol=0)
    assert not folder.exists()  # cleared once complete


def interrupted_after_two_batches(model, folder):
    """A run interrupted at batch 2: its partial file holds batches 0 and 1."""
    with pytest.raises(ZeroDivisionError):
        attprune.attribute(model, tiny.BreaksAt(tiny_batches(model), 2), method="ig", steps=4, resume_dir=folder, save_every=1,
                           progress=False)


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    model = tiny.bert_cls()
    folder = tmp_path / "partial"
    interrupted_after_two_batches(model, folder)
    with pytest.raises(ResumeMismatchError, match="differs in its settings \\(steps: 4 then, 5 now\\)"):
        attprune.attribute(model, tiny_batches(model), method="ig", steps=5, resume_dir=folder, progress=False)
    with pytest.raises(ValueError, match="save_every"):
        attprune.attribute(model, tiny_batches(model), resume_dir=folder, save_every=0, progress=False)


def test_resume_refuses_other_data_or_weights_naming_what_differs(tmp_path):
    model = tiny.bert_cls()
    folder = tmp_path / "partial"
    interrupted_after_two_batches(model, folder)
    run = dict(method="ig", steps=4, resume_dir=folder, progress=False)
    other_rows = [tiny.batch_for(model, batch_size=2, seq_len=6, seed=100 + s) for s in range(7)]
    with pytest.raises(ResumeMismatchError, match=r"differs in the data \(the first 2 batches hold other values"):
        attprune.attribute(model, other_rows, **run)
    with pytest.raises(ResumeMismatchError, match=r"the data's length \(7 batches then, 6 now\)"):
        attprune.attribute(model, tiny_batches(model, n=6), **run)
    with pytest.raises(ResumeMismatchError, match=r"the data \(1 batches now; the run had scored 2\)"):
        attprune.attribute(model, iter(tiny_batches(model, n=1)), **run)  # no length: found on reading
    tuned = tiny.bert_cls()
    with torch.no_grad():
        tuned.classifier.bias.add_(1e-6)  # "another fine-tuned model of the same class and name"
    with pytest.raises(ResumeMismatchError, match="differs in the model's weights"):
        attprune.attribute(tuned, tiny_batches(model), **run)
    # the same data and weights still resume, to the uninterrupted scores
    resumed = attprune.attribute(model, iter(tiny_batches(model)), **run)
    assert_same_scores(resumed, attprune.attribute(model, tiny_batches(model), method="ig", steps=4,
                                                   progress=False), atol=0)
    assert not folder.exists()


def test_resume_refuses_partial_sums_of_another_number_of_processes(tmp_path):
    model = tiny.bert_cls()
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "partial-rank1-of2.safetensors").write_bytes(b"")  # what a two-process run leaves
    with pytest.raises(ResumeMismatchError, match=r"its number of processes \(found partial-rank1-of2"):
        attprune.attribute(model, tiny_batches(model, n=2), steps=2, resume_dir=folder, progress=False)


def score_command(model_dir, data, out, *launcher):
    return [*launcher, "-m", "attprune", "score", "--model", str(model_dir), "--data", str(data), "--steps", "3",
            "--batch-size", "2", "--out", str(out), "--no-progress"]


def test_torchrun_two_gloo_processes_equal_one_process(float64_model_dir, eleven_rows, tmp_path):
    """11 examples in 6 batches of 2: rank 0 scores 3 batches (one of them short), rank 1 scores 3."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run(score_command(float64_model_dir, eleven_rows, tmp_path / "one", sys.executable),
                            capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    both = subprocess.run(score_command(float64_model_dir, eleven_rows, tmp_path / "two", *torchrun),
                          capture_output=True, text=True, env=env, timeout=300)
    assert both.returncode == 0, both.stderr[-3000:]
    one = attprune.Scores.load(tmp_path / "one" / "scores.safetensors")
    two = attprune.Scores.load(tmp_path / "two" / "scores.safetensors")
    assert one.n_examples == two.n_examples == 11
    assert (one.meta["world_size"], two.meta["world_size"]) == (1, 2)
    assert next(iter(one.sites.values())).sum.dtype == torch.float64
    assert_same_scores(one, two, atol=1e-10)


def test_memory_budget_sets_the_chunk_and_oom_halves_it(monkeypatch):
    from attprune.attribution import memory
    from attprune.attribution.methods import ig

    assert memory.parse_memory("1.5GiB") == 3 * 2**29 and memory.parse_memory("2 MB") == 2 * 10**6
    for bad in ("lots", "-1GB", 0, "0B"):
        with pytest.raises(ValueError, match="memory_budget"):
            memory.parse_memory(bad)
    model = tiny.bert_cls()
    batches = tiny_batches(model, n=2)
    reference = attprune.attribute(model, batches, steps=6, progress=False)
    chunks = []
    real = ig.ig_site

    def record(*args, chunk, **kwargs):
        chunks.append(chunk)
        return real(*args, chunk=chunk, **kwargs)

    monkeypatch.setattr(ig, "ig_site", record)
    per_token = memory.bytes_per_token(model.config, 6, 8)
    tight = attprune.attribute(model, batches, steps=6, memory_budget=per_token * 2 * 6 * 3, progress=False)
    assert set(chunks) == {3}  # 3 steps x 2 rows x 6 tokens fit
    assert_same_scores(tight, reference, atol=1e-12)

    chunks.clear()

    def out_of_memory_above_two(*args, chunk, **kwargs):
        chunks.append(chunk)
        if chunk > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(*args, chunk=chunk, **kwargs)

    monkeypatch.setattr(ig, "ig_site", out_of_memory_above_two)
    backed_off = attprune.attribute(model, batches, steps=6, progress=False)
    assert chunks[:2] == [6, 3] and 1 <= chunks[2] <= 2
    assert_same_scores(backed_off, reference, atol=1e-12)


PEAK = textwrap.dedent("""
    import gc, json, re, sys, threading, time
    import torch, transformers, attprune

    def anonymous_mb():
        status = open("/proc/self/status").read()
        return int(re.search(r"RssAnon:\\s+(\\d+)", status).group(1)) / 1024

    def growth(step):
        # peak private (anonymous) memory above the current one while step() runs, sampled every
        # 2 ms: weights read from a safetensors file stay in its read-only mapping (page cache the
        # kernel can drop), so resident-set peaks would count file pages as copies
        before = anonymous_mb()
        peak, done = [before], threading.Event()
        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], anonymous_mb())
                time.sleep(0.002)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = step()
        finally:
            done.set()
            sampler.join()
        return result, max(peak[0], anonymous_mb()) - before

    disk = sys.argv[2:] == ["--disk"]
    placement = dict(device_map="auto", max_memory={"cpu": "40MB"}) if disk else {}
    load = lambda: attprune.from_pretrained(sys.argv[1], **placement)
    load()  # once unmeasured: the first call imports the model's code (~130 MB, whatever its size)
    gc.collect()
    model, loaded = growth(load)
    report = {"loaded": loaded}
    if disk:
        report["on_disk"] = "disk" in model.hf_device_map.values()
        with torch.no_grad():
            _, report["forward"] = growth(lambda: model(input_ids=torch.randint(0, 1000, (1, 16))))
    elif len(sys.argv) > 2:
        plan = attprune.make_plan(attprune.attribute(model, None, method="random"), ffn=0.5, heads=0.5)
        _, report["compacted"] = growth(lambda: attprune.compact(model, plan))
        attprune.save_pretrained(model, sys.argv[2])
    print(json.dumps(report))
""")


def test_loading_and_compacting_never_hold_the_model_twice(tmp_path):
    """A 255 MiB BERT, private memory measured in a subprocess: from_pretrained maps the
    safetensors file and copies nothing; compact allocates only the kept slices; the compact
    checkpoint loads the same way; dispatched to disk, a forward pass reads a tensor at a time."""
    import json

    import transformers as tf

    cfg = tf.BertConfig(hidden_size=768, num_hidden_layers=6, intermediate_size=3072, num_attention_heads=12,
                        num_labels=2)
    with torch.device("meta"):
        skeleton = tf.BertForSequenceClassification(cfg)
    model = skeleton.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    attprune.save_pretrained(model, tmp_path / "dense")
    del model, skeleton

    def run(*args):
        out = subprocess.run([sys.executable, "-c", PEAK, *map(str, args)], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    dense = run(tmp_path / "dense", tmp_path / "small")
    small_mb = sum(f.stat().st_size for f in (tmp_path / "small").glob("*.safetensors")) / 2**20
    small = run(tmp_path / "small")
    spread = run(tmp_path / "dense", "--disk")  # 40 MB of CPU memory: the rest stays in the file
    print(f"model {size_mb:.0f} MB, compact {small_mb:.0f} MB; growth in MB: dense {dense}, compact {small}, "
          f"dispatched {spread}")
    assert size_mb > 250
    assert dense["loaded"] < 0.05 * size_mb
    # compaction allocates the kept slices of the sliced layers (small_mb less the embeddings,
    # which are never sliced) and one tensor in flight; the originals are freed or file-backed
    embeddings_mb = 30522 * 768 * 4 / 2**20
    assert dense["compacted"] < small_mb - embeddings_mb + 0.05 * size_mb
    assert small["loaded"] < 0.05 * small_mb
    assert spread["on_disk"] and spread["loaded"] < 0.05 * size_mb
    assert spread["forward"] < embeddings_mb + 0.1 * size_mb  # the largest tensor and a layer at a time
