"""``edgelstm bench`` and ``edgelstm bench-report``: parse the options, call :mod:`edgelstm.bench`, print.

``bench`` times ONNX models with onnxruntime alone (torch is imported only for ``--torch``),
``bench-report`` merges result files from several machines into one markdown table and plot.
Everything but the flags, the output files and the printing is in :mod:`edgelstm.bench`.
"""
from __future__ import annotations

import logging
import os
import sys

import click

from edgelstm.cli import options
from edgelstm.cli.options import device as device_option
from edgelstm.cli.options import json_out as json_option
from edgelstm.cli.options import provider_option as provider_option_option
from edgelstm.cli.options import threads as threads_option
from edgelstm.cli.options import trust_modified as trust_modified_option
from edgelstm.errors import UsageError
from edgelstm.fileio import write_text_atomic

log = logging.getLogger(__name__)


def _limit_blas_threads(threads: int | None) -> None:
    """Make the NumPy/BLAS floor use the same thread count as onnxruntime (only effective
    before NumPy is first imported, which the lazy CLI guarantees for a fresh process)."""
    if not threads:  # None or 0: onnxruntime's default, and BLAS keeps its own
        return
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if "numpy" in sys.modules:
        log.info("NumPy already imported: BLAS thread count for the floor not limited to %s", threads)


def _progress(line: str) -> None:
    click.echo(line, err=True)


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@device_option
@provider_option_option
@threads_option
@click.option("--batch", "batch", default="1", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--mode", "modes", default="stream", show_default=True,
              help="stream (carry state across calls) or sequence (whole sequences); comma-separated for both.")
@click.option("--time", "times", default=None,
              help="Steps per call, comma-separated [default: 1 for stream, 256 for sequence]. "
                   "For a decoder_step graph: the source (memory) length.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed calls before measuring.")
@click.option("--runs", type=int, default=None, help="Timed calls per case [default: 200 unless --duration].")
@click.option("--duration", type=float, default=None, help="Seconds of timed calls per case (instead of --runs).")
@click.option("--torch", "torch_run", type=click.Path(file_okay=False), default=None,
              help="Also time PyTorch eager on this run directory (needs torch).")
@click.option("--no-floor", is_flag=True, help="Skip the NumPy/BLAS floor measurement.")
@json_option
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write one CSV row per case.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a latency bar chart (PNG).")
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@trust_modified_option
def bench_command(**flags) -> None:
    """Time MODEL.onnx files: latency percentiles, throughput, real-time factor, floor, ratios."""
    _limit_blas_threads(flags["threads"])  # before NumPy is imported (edgelstm.bench imports it)
    from edgelstm.bench.plot import plot_reports
    from edgelstm.bench.report import SCHEMA, environment_table, markdown_table, noise_warnings, to_csv
    from edgelstm.bench.suite import BenchOptions, run_bench

    opts = BenchOptions(**flags)
    report = run_bench(opts, _progress)
    if opts.json_out:
        options.write_json(opts.json_out, SCHEMA, report, indent=1)
    if opts.csv_out:
        write_text_atomic(opts.csv_out, to_csv(report))
    if opts.plot_out:
        plot_reports([report], opts.plot_out)
    for line in noise_warnings([report]):
        click.echo(line, err=True)
    echo = options.echo_for(opts.json_out)
    echo(environment_table([report]))
    echo(markdown_table([report]), nl=False)


@click.command("bench-report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Write the markdown here instead of stdout.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write one bar chart (PNG).")
@click.option("--label", "labels", multiple=True,
              help="A name per input file, in order (repeat), shown instead of the hostname.")
@json_option
def bench_report_command(results, md_out, plot_out, labels, json_out) -> None:
    """Merge bench JSON files from several machines into one markdown table and one plot.
    Models are matched by graph digest (renamed copies line up); busy machines are flagged."""
    from edgelstm.bench import report as core
    from edgelstm.bench.plot import plot_reports

    if labels and len(labels) != len(results):
        raise UsageError("--label", "one label per input file", expected=len(results), got=len(labels))
    reports = [core.load_report(p) for p in results]
    for rep, label in zip(reports, labels):
        rep["label"] = label
    for line in core.noise_warnings(reports):
        click.echo(line, err=True)
    text = "## Machines\n\n" + core.environment_table(reports) + "\n## Results\n\n" + core.markdown_table(reports)
    if json_out:
        options.write_json(json_out, "edgelstm.bench-report/1",
                           {"inputs": list(results), "environments": [r["environment"] for r in reports],
                            "rows": [row for r in reports for row in core.flat_rows(r)]}, indent=1)
    if md_out:
        write_text_atomic(md_out, text)
    else:
        options.echo_for(json_out)(text, nl=False)
    if plot_out:
        plot_reports(reports, plot_out)


commands = {"bench": bench_command, "bench-report": bench_report_command}
