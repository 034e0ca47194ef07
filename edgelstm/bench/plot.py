"""The latency bar chart of one or several bench reports (``bench --plot``, ``bench-report --plot``).

Imports the standard library, ``edgelstm.extras``, ``edgelstm.fileio`` and :mod:`.report`;
matplotlib only inside :func:`plot_reports`, after :func:`edgelstm.extras.require` has checked the
``plot`` extra. Imported by ``edgelstm.cli.bench``.
"""
from __future__ import annotations

from typing import Sequence

from edgelstm.bench.report import flat_rows
from edgelstm.extras import require
from edgelstm.fileio import atomic_path


def plot_reports(reports: Sequence[dict], out: str) -> None:
    """Bar chart of p50 latency per (model, case), one bar colour per machine, whiskers from the
    minimum to p99; log scale. Models are matched by graph digest, so renamed copies line up."""
    require("plot", "--plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    keys: list[tuple] = []
    names: dict[tuple, str] = {}
    series: dict[str, dict[tuple, dict]] = {}
    for i, rep in enumerate(reports):
        rows = flat_rows(rep)
        machine = str(rows[0]["machine"]) if rows else f"report {i + 1}"
        while machine in series:  # two files from one host without --label: keep both
            machine += "'"
        series[machine] = {}
        for r in rows:
            key = (r["model_key"], r["backend"], r["mode"], r["batch"], r["time"])
            if key not in keys:
                keys.append(key)
                names[key] = f"{r['name']} {r['mode']} b{r['batch']} t{r['time']}"
            series[machine][key] = r
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(keys) * max(1, len(series)) + 2), 4.5))
    for j, (machine, vals) in enumerate(series.items()):
        present = [k for k in keys if k in vals]
        xs = [keys.index(k) + j * width for k in present]
        p50 = [vals[k]["p50_us"] for k in present]
        lo = [p - vals[k]["min_us"] for p, k in zip(p50, present)]
        hi = [vals[k]["p99_us"] - p for p, k in zip(p50, present)]
        ax.bar(xs, p50, width, yerr=[lo, hi], capsize=2, error_kw={"elinewidth": 0.8}, label=machine)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(keys))])
    ax.set_xticklabels([names[k] for k in keys], rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")  # 90, not 9x10^1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_ylabel("latency per call (us, log scale)")
    ax.set_title("edgelstm bench: bars p50, whiskers min to p99", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
