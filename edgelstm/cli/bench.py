"""``edgelstm bench`` and ``edgelstm bench-report``.

``bench`` times ONNX models with onnxruntime alone (torch is imported only for ``--torch``),
``bench-report`` merges result files from several machines into one markdown table and plot.
The timing core is :mod:`edgelstm.runtime.bench`.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from edgelstm.cli import options
from edgelstm.cli.options import device as device_option
from edgelstm.cli.options import json_out as json_option
from edgelstm.cli.options import provider_option as provider_option_option
from edgelstm.cli.options import threads as threads_option
from edgelstm.cli.options import trust_modified as trust_modified_option
from edgelstm.errors import CheckpointError, UsageError
from edgelstm.extras import require
from edgelstm.fileio import atomic_path, write_text_atomic

log = logging.getLogger(__name__)


MAX_BATCH = 65_536        # --batch: beyond this one call's inputs no longer fit a device's memory
MAX_TIME = 1_000_000      # --time: steps per call
MAX_ELEMENTS = 1 << 26    # batch * time per call (times the feature size: the input's floats)


def _int_list(option: str, text: str, limit: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(option, "not a comma-separated list of integers", expected="e.g. 1,8", got=text) from None
    if not values or any(v < 1 for v in values):
        raise UsageError(option, "values must be positive integers", expected="e.g. 1,8", got=text)
    if max(values) > limit:
        raise UsageError(option, "value too large", expected=f"<= {limit}", got=max(values))
    return values


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


# A p99 this many times the p50 means the machine was busy (other processes, frequency scaling)
# while measuring: steady-state onnxruntime steps on an idle core stay within about 2x here.
NOISY_P99_OVER_P50 = 5.0


def noise_warnings(reports: Sequence[dict]) -> list[str]:
    """One line per machine that was too busy to trust: load average above its usable cores, or
    cases whose p99 exceeds NOISY_P99_OVER_P50 times their p50."""
    from edgelstm.runtime.bench import flat_rows

    out = []
    for rep in reports:
        env = rep.get("environment", {})
        where = rep.get("label") or env.get("machine")
        load, cores = env.get("load_average"), env.get("usable_cores") or env.get("cores")
        if load and cores and load[0] > cores:
            out.append(f"warning: {where}: load average {load[0]:.1f} on {cores} usable cores while measuring; "
                       "rerun on a quiet machine before comparing")
        noisy = [(r["name"], r["mode"], r["batch"], r["time"], r["p99_us"] / r["p50_us"]) for r in flat_rows(rep)
                 if r["p50_us"] and r["p99_us"] / r["p50_us"] > NOISY_P99_OVER_P50]
        if noisy:
            worst = max(noisy, key=lambda n: n[4])
            out.append(f"warning: {where}: p99 above {NOISY_P99_OVER_P50:g}x p50 in {len(noisy)} case(s) "
                       f"(worst {worst[4]:.0f}x: {worst[0]} {worst[1]} b{worst[2]} t{worst[3]}); the machine was busy")
    return out


# ---------------------------------------------------------------------------------- PyTorch
def bench_torch(run_dir: str, feeds_for: Callable[[Any], dict], graph_role: str, cases: Sequence[Any],
                settings: Any, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time PyTorch eager on the same cases and inputs as the ONNX models (``--torch``).

    With ``--device cuda`` (or ``tensorrt``) the model and inputs live on the GPU (PyTorch's cuDNN
    LSTM/GRU kernels; TF32 as ``torch.backends.cudnn.allow_tf32`` says, on by default like
    onnxruntime's ``use_tf32``) and each timed call ends with ``torch.cuda.synchronize()``: an
    asynchronous launch alone would time nothing. Without CUDA in this torch it is a usage error."""
    require("export", "bench --torch")
    import torch

    from edgelstm.runtime import bench as core

    try:
        from edgelstm.checkpoint import load_run
    except ImportError as e:
        raise UsageError("--torch", "edgelstm.checkpoint is not available in this installation", got=str(e)) from None
    if not Path(run_dir).is_dir():
        raise CheckpointError(str(run_dir), "run directory not found", expected="a directory from edgelstm train",
                              got=str(run_dir))
    model, _config = load_run(run_dir)
    model.eval()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    gpu = settings.device in ("cuda", "tensorrt")
    if gpu and not torch.cuda.is_available():
        raise UsageError("--torch", f"--device {settings.device} times PyTorch on the GPU, but this torch has no CUDA",
                         expected="a CUDA build of torch with a visible GPU",
                         got=f"torch {torch.__version__}, cuda available: False")
    dev = torch.device("cuda" if gpu else "cpu")
    model.to(dev)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    label = (f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
             f"tf32={torch.backends.cudnn.allow_tf32}") if gpu else f"torch {torch.__version__}"
    rows = []
    for case in cases:
        np_feeds = feeds_for(case)
        t = {k: torch.from_numpy(v.copy()).to(dev) for k, v in np_feeds.items()}
        lengths = t.get("lengths")
        if lengths is not None:
            lengths = lengths.to(torch.int64)
        if graph_role == "decoder_step":
            state = {"h": t["h_in"], "c": t["c_in"]}

            def call(state=state, t=t) -> None:
                _, state["h"], state["c"], _ = model.decode_step(t["token"], state["h"], state["c"], t["memory"],
                                                                 t["src_lengths"].to(torch.int64))
        elif graph_role == "encoder":
            def call(t=t) -> None:
                model.encode(t["src"], t["src_lengths"].to(torch.int64))
        elif case.mode == "stream":
            st = {"s": tuple(t[k] for k in ("h_in", "c_in") if k in t)}

            def call(st=st, t=t, lengths=lengths) -> None:
                _, st["s"] = model(t["x"], lengths, st["s"])
        else:
            init = tuple(t[k] for k in ("h_in", "c_in") if k in t)

            def call(t=t, lengths=lengths, init=init) -> None:
                model(t["x"], lengths, init)

        def timed(call=call) -> None:
            call()
            sync()

        with torch.inference_mode():
            import time as _time
            t0 = _time.perf_counter()
            timed()
            first = _time.perf_counter() - t0
            samples = core.measure(timed, warmup=settings.warmup, runs=settings.runs, duration=settings.duration,
                                   progress=progress, label=f"pytorch {case.key}")
        stats = core.LatencyStats.from_samples(samples)
        if progress:
            progress(f"pytorch: {case.key} p50 {stats.p50 * 1e6:.1f} us, p99 {stats.p99 * 1e6:.1f} us")
        steps = 1 if graph_role == "decoder_step" else case.time
        rows.append(core.result_row(
            name="pytorch", backend="pytorch-eager", case=case, stats=stats, settings=settings,
            steps_per_call=steps, model=str(run_dir), precision="fp32", family=None, graph=graph_role,
            providers=[label], file_bytes=None, parameters=sum(p.numel() for p in model.parameters()),
            first_call_s=first, rss_peak_mb=core._peak_rss_mb(), floor=None, x_floor=None))
    return rows


# ---------------------------------------------------------------------------------- plot
def plot_reports(reports: Sequence[dict], out: str) -> None:
    """Bar chart of p50 latency per (model, case), one bar colour per machine, whiskers from the
    minimum to p99; log scale. Models are matched by graph digest, so renamed copies line up."""
    require("plot", "--plot")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from edgelstm.runtime.bench import flat_rows

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


# ---------------------------------------------------------------------------------- commands
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
def bench_command(models, device, provider_option, threads, batch, modes, times, warmup, runs, duration, torch_run,
                  no_floor, json_out, csv_out, plot_out, quiet, trust_modified) -> None:
    """Time MODEL.onnx files: latency percentiles, throughput, real-time factor, floor, ratios."""
    _limit_blas_threads(threads)
    from edgelstm.runtime import bench as core
    from edgelstm.runtime.providers import parse_provider_options

    if torch_run and not Path(torch_run).is_dir():  # before minutes of ONNX timing, not after
        raise CheckpointError(str(torch_run), "run directory not found", expected="a directory from edgelstm train",
                              got=str(torch_run))
    if runs is None and duration is None:
        runs = 200
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if not mode_list:
        raise UsageError("--mode", "no mode given", expected=list(core.MODES), got=repr(modes))
    batches = _int_list("--batch", batch, MAX_BATCH)
    cases = []
    for mode in mode_list:
        ts = _int_list("--time", times, MAX_TIME) if times else [1 if mode == "stream" else 256]
        if max(batches) * max(ts) > MAX_ELEMENTS:
            raise UsageError("--batch/--time", "batch x time too large for one call",
                             expected=f"<= {MAX_ELEMENTS}", got=max(batches) * max(ts))
        cases += [core.Case(mode, b, t) for b in batches for t in ts]
    settings = core.Settings(warmup=warmup, runs=runs, duration=duration, threads=threads, device=device,
                             floor=not no_floor, trust_modified=trust_modified,
                             provider_options=parse_provider_options(provider_option))
    progress = None if quiet else _progress
    names = _unique_names(models)
    rows: list[dict] = []
    for path, name in zip(models, names):
        rows += core.bench_onnx(path, cases, settings, name=name, progress=progress)
    if torch_run:
        import onnxruntime as ort

        from edgelstm.runtime.integrity import check_model_file

        manifest = check_model_file(models[0], trust_modified=trust_modified)[2]
        sess = ort.InferenceSession(models[0], providers=["CPUExecutionProvider"])
        role = manifest.graph if manifest else "model"
        rows += bench_torch(torch_run, lambda c: core.build_feeds(sess, manifest, batch=c.batch, time_steps=c.time,
                                                                  seed=settings.seed),
                            role, cases, settings, progress)
    providers = sorted({p for r in rows if r["backend"] == "onnxruntime" for p in r["providers"]})
    report = core.make_report(rows, settings, core.environment(threads, providers))
    if json_out:
        options.write_json(json_out, core.SCHEMA, report, indent=1)
    if csv_out:
        write_text_atomic(csv_out, core.to_csv(report))
    if plot_out:
        plot_reports([report], plot_out)
    for line in noise_warnings([report]):
        click.echo(line, err=True)
    echo = options.echo_for(json_out)
    echo(core.environment_table([report]))
    echo(core.markdown_table([report]), nl=False)


def _unique_names(paths: Sequence[str]) -> list[str]:
    """Short names for the table: the file stem, with the parent folder where stems collide."""
    stems = [Path(p).stem for p in paths]
    out = []
    for p, s in zip(paths, stems):
        out.append(s if stems.count(s) == 1 else f"{Path(p).parent.name}/{s}")
    return out


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
    from edgelstm.runtime import bench as core

    if labels and len(labels) != len(results):
        raise UsageError("--label", "one label per input file", expected=len(results), got=len(labels))
    reports = [core.load_report(p) for p in results]
    for rep, label in zip(reports, labels):
        rep["label"] = label
    for line in noise_warnings(reports):
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
