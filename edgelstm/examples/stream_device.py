"""A streaming device app: one frame in, one prediction out, with that step's latency.

Reads sensor or audio-feature frames, one per line (comma- or space-separated floats; blank lines
and lines starting with ``#`` are skipped), from stdin or ``--input FILE``, feeds each to
``model.stream(1).step(frame)`` and writes one tab-separated line per frame::

    <frame number>\t<label, or the output values comma-separated>\t<step latency in microseconds>

``--state-file S.npz`` restores the stream state from S (when it exists) before the first frame
and saves it at the end of the input, so an app restarted on the rest of the input continues
exactly where it stopped. A bad line stops the app with one ``error: ...`` line on stderr and the
error's exit code (9 for an input error). Uses only the public, torch-free ``edgelstm.runtime`` API.

    python -m edgelstm.examples.stream_device model.onnx --input frames.txt --every 10 --state-file state.npz
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from edgelstm import runtime
from edgelstm.errors import DataError, EdgeLSTMError, InputError


def parse_frame(line: str, where: str, features: int | None) -> np.ndarray:
    """``"0.1, 0.2 0.3"`` -> float32 ``[1, features]``; InputError naming the line otherwise."""
    fields = line.replace(",", " ").split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        bad = next(v for v in fields if not _is_float(v))
        raise InputError(where, "not a number", expected="comma- or space-separated floats", got=repr(bad)) from None
    if features is not None and len(values) != features:
        raise InputError(where, "wrong number of values in the frame", expected=features, got=len(values))
    return np.asarray(values, dtype=np.float32)[None, :]


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def describe(result, output: str) -> str:
    """The label where the manifest has labels, else the first output's values."""
    if result.labels is not None:
        return str(result.labels[0])
    return ",".join(f"{v:.9g}" for v in np.ravel(result[output][0]))  # 9 digits round-trip float32


def stream_frames(model_path: str, source, source_name: str, device: str, threads: int | None,
                  every: int, state_file: str | None) -> None:
    model = runtime.load(model_path, device=device, threads=threads)
    stream = model.stream(1)
    output = next(iter(o.name for o in model.outputs if o.name not in {s.output for s in model.states}))
    if state_file and Path(state_file).exists():
        stream.load_state(state_file)
    frame_no = 0
    for line_no, line in enumerate(source, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{source_name} line {line_no}"
        frame = parse_frame(line, where, model.features)
        t0 = time.perf_counter_ns()
        try:
            result = stream.step(frame)
        except InputError as e:  # e.g. NaN/Inf: say which line it came from
            raise InputError(f"{where} ({e.subject})", e.problem, expected=e.expected, got=e.got) from None
        us = (time.perf_counter_ns() - t0) / 1e3
        frame_no += 1
        if frame_no % every == 0:
            click.echo(f"{frame_no}\t{describe(result, output)}\t{us:.1f}")
    if state_file:
        stream.save_state(state_file)


@click.command()
@click.argument("model_path", metavar="MODEL.onnx")
@click.option("--input", "input_path", default="-", show_default=True, help="Frames file ('-' = stdin).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, tensorrt, arm, ... or auto.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="onnxruntime intra-op threads (0 = its default).")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Print every Nth frame.")
@click.option("--state-file", default=None, help="Restore the stream state from / save it to this .npz.")
def main(model_path, input_path, device, threads, every, state_file):
    """Stream frames through MODEL.onnx one at a time."""
    try:
        if input_path == "-":
            stream_frames(model_path, sys.stdin, "stdin", device, threads, every, state_file)
            return
        try:
            f = open(input_path, encoding="utf-8")
        except OSError as e:
            raise DataError(input_path, "cannot open the frames file", expected="a readable text file",
                            got=e.strerror) from None
        with f:
            stream_frames(model_path, f, input_path, device, threads, every, state_file)
    except EdgeLSTMError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
