"""Results as JSON, a markdown table and PNG plots (matplotlib, when installed)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from ..io import atomic_path, write_json


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def curves(rows: list[dict], *, x: str = "sparsity", line: str = "method", panel: str = "task",
           where: dict | None = None) -> dict:
    """{panel: {line: {x: [accuracies...]}}} over the rows matching ``where``."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if where and any(r.get(k) != v for k, v in where.items()):
            continue
        out[r[panel]][r[line]][r[x]].append(r["accuracy"])
    return out


def bands(rows: list[dict], *, x: str = "sparsity", line: str = "method", panel: str = "task",
          where: dict | None = None, key: str = "ci95") -> dict:
    """{panel: {line: {x: (low, high)}}}: the 95% interval each matching row carries under ``key``."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if key in r and not (where and any(r.get(k) != v for k, v in where.items())):
            out[r[panel]][r[line]][r[x]] = tuple(r[key])
    return out


def markdown_table(data: dict, *, x_label: str = "sparsity", fmt: str = "{:.3f}", intervals: dict | None = None) -> str:
    """One table per panel: rows = x values, columns = lines (mean +- std over repeats, or a
    single value with its 95% interval from ``intervals`` (``bands``))."""
    parts = []
    for panel, lines in data.items():
        xs = sorted({x for values in lines.values() for x in values})
        names = list(lines)
        parts.append(f"**{panel}**\n\n| {x_label} | " + " | ".join(names) + " |\n|" + "---|" * (len(names) + 1))
        for x in xs:
            cells = []
            for name in names:
                values = lines[name].get(x)
                if not values:
                    cells.append("-")
                    continue
                m, s = mean_std(values)
                band = (intervals or {}).get(panel, {}).get(name, {}).get(x)
                if len(values) > 1:
                    cells.append(fmt.format(m) + f" ± {s:.3f}")
                elif band:
                    cells.append(fmt.format(m) + " [" + fmt.format(band[0]) + ", " + fmt.format(band[1]) + "]")
                else:
                    cells.append(fmt.format(m))
            parts.append(f"| {x} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def line_colours(data: dict) -> dict[str, str]:
    """One colour per line name across every panel of ``data`` (first seen, first colour), so
    that one legend serves all panels."""
    names = list(dict.fromkeys(name for lines in data.values() for name in lines))
    palette = [f"C{i}" for i in range(10)] + ["navy", "gold", "teal", "maroon", "lime", "black", "salmon",
                                               "indigo", "khaki", "turquoise"]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def plot(data: dict, path: Path, *, title: str, x_label: str = "sparsity", dense: dict | None = None,
         dense_label: str = "dense", y_label: str = "accuracy", intervals: dict | None = None,
         log_y: bool = False) -> Path | None:
    """One panel per key of ``data`` (``curves``), a line per method; ``intervals`` (``bands``)
    drawn as shaded 95% bands around the lines."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written (pip install 'attprune[plots]')")
        return None
    panels = list(data)
    colours = line_colours(data)
    legend = {}
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for name, values in data[panel].items():
            xs = sorted(values)
            ms = [mean_std(values[x])[0] for x in xs]
            ss = [mean_std(values[x])[1] for x in xs]
            drawn = ax.errorbar(xs, ms, yerr=ss if any(ss) else None, marker="o", ms=3, capsize=2,
                                color=colours[name], label=name)
            legend.setdefault(name, drawn)
            band = (intervals or {}).get(panel, {}).get(name, {})
            if band:
                bx = [x for x in xs if x in band]
                ax.fill_between(bx, [band[x][0] for x in bx], [band[x][1] for x in bx], alpha=0.12,
                                color=colours[name], lw=0)
        if dense and panel in dense:
            ax.axhline(dense[panel], color="black", ls="--", lw=0.8, label=dense_label)
        ax.set_title(panel)
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()  # the dense line, then every method once
    extra = [(h, n) for n, h in legend.items() if n not in labels]
    axes.flat[0].legend(handles + [h for h, _ in extra], labels + [n for _, n in extra], fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write(out_dir: Path, name: str, payload: dict, markdown: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / f"{name}.json", payload)
    with atomic_path(out_dir / f"{name}.md") as tmp:
        tmp.write_text(markdown + "\n")


def contrast_markdown(found: dict, title: str = "Paired differences (95% bootstrap over the same test examples, "
                                               "draws averaged)", by: tuple[str, ...] = ()) -> list[str]:
    """The pooled and per-task contrasts (``stats.contrasts``, ``llm_benchmark.contrasts``) as two
    tables; ``by``: the fields shown before the pair (e.g. ``("kind",)``)."""
    lead = "".join(f"| {b} " for b in by)

    def cells(c: dict) -> str:
        return "".join(f"| {c[b]} " for b in by) + f"| {c['first']} | {c['second']} | {c['sparsity']:.0%} | " \
            f"{_interval_text(c['difference'])} | {c['verdict']}"

    md = [f"## {title}", "", "Mean over tasks (stratified bootstrap: each task resampled on its own):", "",
          f"{lead}| first | second | sparsity | first - second [95% CI] | verdict | tasks |",
          "|---" * (len(by) + 6) + "|"]
    md += [f"{cells(c)} | {c['tasks']} |" for c in found["pooled"]]
    md += ["", "Per task:", "", f"| task {lead}| first | second | sparsity | first - second [95% CI] | verdict |",
           "|---" * (len(by) + 6) + "|"]
    md += [f"| {c['task']} {cells(c)} |" for c in found["per_task"]]
    return md + [""]


def comparison_markdown(spread: list[dict], compared: dict) -> list[str]:
    md = ["## IG against each method (paired 95% bootstrap over test examples, draws averaged)", "",
          "Mean over tasks (stratified bootstrap):", "",
          "| units | sparsity | versus | IG - other [95% CI] | verdict |", "|---|---|---|---|---|"]
    md += [f"| {c['units']} | {c['sparsity']:.0%} | {c['versus']} | {_interval_text(c['ig_minus_other'])} | "
           f"IG {c['verdict']} |" for c in compared["pooled"]]
    md += ["", "Per task (per_draw: IG - other with the same draw):", "",
           "| task | units | sparsity | versus | IG - other [95% CI] | per draw | verdict |",
           "|---|---|---|---|---|---|---|"]
    md += [f"| {c['task']} | {c['units']} | {c['sparsity']:.0%} | {c['versus']} | "
           f"{_interval_text(c['ig_minus_other'])} | {', '.join(f'{d:+.3f}' for d in c['per_draw'])} | "
           f"IG {c['verdict']} |" for c in compared["per_task"]]
    md += ["", "## Spread over attribution draws", "", "| task | units | method | sparsity | draws | mean | std | range |",
           "|---|---|---|---|---|---|---|---|"]
    md += [f"| {d['task']} | {d['units']} | {d['method']} | {d['sparsity']:.0%} | {d['draws']} | {d['mean']:.3f} | "
           f"{d['std']:.3f} | {d['min']:.3f}-{d['max']:.3f} |" for d in spread]
    return md + [""]


def _interval_text(interval: dict, scale: float = 100.0) -> str:
    """A difference in points: +1.2 [-0.3, +2.6]."""
    return (f"{scale * interval['value']:+.1f} [{scale * interval['low']:+.1f}, "
            f"{scale * interval['high']:+.1f}] points")


