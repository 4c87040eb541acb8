"""What running the last layer on the first token saves: per-site IG on a sequence classifier
with and without the shortcut (``ArchSpec.first_token_tail``), same run, interleaved.

    python bench/first_token_tail.py                 # MiniLM, 16 sentences padded to 16/64/128 tokens

The packaged MiniLM with a classification head (float32, attprune's defaults, all 12 sites);
"without" turns the shortcut off for the run. Each setting is timed ``--repeats`` times,
alternating, and the fastest is kept; the scores of the two agree to float32 rounding
(reported). Results: ``bench/results/first_token_tail.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import attprune
from attprune.attribution import runner
from attprune.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def shortcut(enabled: bool):
    """The first-token shortcut on (as shipped) or off (the runner finds no tail) for the block."""
    real = runner.first_token_tail
    if not enabled:
        runner.first_token_tail = lambda model: None
    try:
        yield
    finally:
        runner.first_token_tail = real


def timed(model, batch, enabled: bool) -> tuple[float, attprune.Scores]:
    with shortcut(enabled):
        started = time.perf_counter()
        scores = attprune.attribute(model, [batch], progress=False)
        return time.perf_counter() - started, scores


def main(argv=None) -> dict:
    from attprune.models import load_minilm_classifier
    from attprune.samples import LABELS, SENTENCES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 128], help="padded lengths")
    p.add_argument("--n", type=int, default=16, help="sentences")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each setting (alternating)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_minilm_classifier()
    rows = []
    for tokens in args.tokens:
        encoded = tokenizer(SENTENCES[: args.n], return_tensors="pt", padding="max_length", max_length=tokens,
                            truncation=True)
        batch = dict(encoded, labels=torch.tensor(LABELS[: args.n]))
        timed(model, batch, True)  # warm-up
        seconds = {True: [], False: []}
        scores = {}
        for _ in range(args.repeats):
            for enabled in (False, True):
                elapsed, scores[enabled] = timed(model, batch, enabled)
                seconds[enabled].append(elapsed)
        difference = max(float((scores[True].sites[p].sum - s.sum).abs().max() / s.sum.abs().max())
                         for p, s in scores[False].sites.items())
        rows.append(dict(tokens=tokens, examples=args.n, without_s=round(min(seconds[False]), 3),
                         with_s=round(min(seconds[True]), 3),
                         speedup=round(min(seconds[False]) / min(seconds[True]), 3), max_rel_score_diff=difference))
    result = {"model": "packaged MiniLM + classification head, float32, attprune defaults, 12 sites",
              "threads": args.threads, "repeats": args.repeats, "rows": rows}
    write_json(RESULTS / "first_token_tail.json", result)
    print("| tokens | without (s) | with (s) | speedup | max rel. score diff |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tokens']} | {r['without_s']} | {r['with_s']} | {r['speedup']}x | {r['max_rel_score_diff']:.1e} |")
    return result


if __name__ == "__main__":
    main()
