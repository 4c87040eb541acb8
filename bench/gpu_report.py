"""The markdown summary of ``bench/gpu_check.sh``'s results folder.

    python bench/gpu_report.py bench/results/gpu > bench/results/gpu/gpu_check.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _read(path: Path):
    """A result file, or None when the step that writes it failed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def attribution_table(report: dict, model: str) -> list[str]:
    lines = [f"### Attribution, {model} ({report['config']['dtype']}, {report['config']['n']} examples x "
             f"{report['config']['seq']} tokens; {report.get('device', 'cpu')}, measured bf16 peak "
             f"{report.get('bf16_peak_tflops', '-')} TFLOP/s)", "",
             "| method | nodes | seconds | examples/s | peak MiB | FLOP utilisation | speedup of attprune |",
             "|---|---|---|---|---|---|---|"]
    for method, e in report["methods"].items():
        lines.append(f"| {method} | {e.get('nodes', '-')} | {e['seconds']} | {e['examples_per_s']} | {e['peak_MiB']} | "
                     f"{e.get('flop_utilisation', '-')} | {e.get('speedup_of_attprune', '-')} |")
    return lines + [""]


def compaction_table(rows: list[dict]) -> list[str]:
    lines = ["### Compaction latency (50% FFN, 25% heads)", "",
             "| model | round_to | batch x seq | dense ms | compact ms | speedup | ideal | of ideal |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['round_to']} | {r['batch']} x {r['seq']} | {r['dense_ms']} | {r['compact_ms']} | "
              f"{r['speedup']} | {r['ideal_speedup']} | {r['fraction_of_ideal']:.0%} |" for r in rows]
    return lines + [""]


def main(folder: str) -> str:
    out = Path(folder)
    lines = ["# GPU check", ""]
    env = _read(out / "environment.json")
    if env:
        lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    status = (out / "status.txt").read_text().split("\n") if (out / "status.txt").is_file() else []
    lines += ["Steps: " + "; ".join(s for s in status if s), ""]
    for model in ("bert-base", "llama-1b"):
        report = _read(out / f"attribution_{model}.json")
        if report:
            lines += attribution_table(report, model)
    compaction = _read(out / "compaction.json")
    if compaction:
        lines += compaction_table(compaction["rows"] if isinstance(compaction, dict) else compaction)
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/gpu"))
