"""``edgelstm run``: run an exported model on data with the torch-free runtime.

Imports only the runtime (numpy + onnxruntime), never torch or onnx.
"""
from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from edgelstm.cli import options
from edgelstm.errors import DataError, InputError, UsageError
from edgelstm.fileio import atomic_path


def read_input(path: Path) -> dict[str, np.ndarray]:
    """``.npz`` (arrays by input name; a single array is ``x``), ``.npy`` (``x``) or ``.csv``
    (one sequence: a row per time step, a column per feature, optional header)."""
    if not path.exists():
        raise DataError(str(path), "input file not found", expected="an existing .npz, .npy or .csv file",
                        got="no such file")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        from edgelstm.data.readers import load_arrays

        arrays = load_arrays(path)
        if "x" not in arrays:
            if len(arrays) != 1:
                raise DataError(str(path), "no array named 'x'", expected="an 'x' array (or a single array)",
                                got=sorted(arrays))
            arrays = {"x": next(iter(arrays.values()))}
        return arrays
    if suffix == ".csv":
        return {"x": _read_csv(path)}
    raise DataError(str(path), "unsupported input format", expected=".npz, .npy or .csv", got=suffix or "no suffix")


def _read_csv(path: Path) -> np.ndarray:
    rows: list[list[float]] = []
    width = None
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM is not part of the first cell
            lines = list(f)
    except UnicodeDecodeError as e:
        raise DataError(str(path), "not UTF-8 text", expected="a UTF-8 CSV file",
                        got=f"byte {e.start}: {e.reason}") from None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not rows and width is None:  # a header line
                width = len(cells)
                continue
            bad = next(i for i, c in enumerate(cells) if not _is_float(c))
            raise DataError(f"{path}:{lineno}", f"column {bad + 1} is not a number", expected="a float",
                            got=cells[bad][:40]) from None
        if width is None:
            width = len(values)
        if len(values) != width:
            raise DataError(f"{path}:{lineno}", "wrong number of columns", expected=width, got=len(values))
        rows.append(values)
    if not rows:
        raise DataError(str(path), "no data rows", expected="at least one row of numbers", got=0)
    return np.asarray(rows, dtype=np.float32)[None]  # [1, time, features]


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


SCHEMA = "edgelstm.run/1"


@click.command("run")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Data: .npz (x, optional lengths), .npy or .csv (rows = time steps). "
                   "For seq2seq: a .txt file, one source per line.")
@click.option("--text", multiple=True, help="Seq2seq source string (repeatable).")
@click.option("--stream", "streaming", is_flag=True, help="Feed the data one step at a time with carried state.")
@options.device
@options.provider_option
@options.threads
@click.option("--no-fallback", is_flag=True, help="Fail instead of falling back when the device is unavailable.")
@click.option("--nan", type=click.Choice(["raise", "pass"]), default="raise", show_default=True,
              help="What to do with NaN/Inf inputs.")
@click.option("--max-len", type=int, default=None, help="Seq2seq: maximum output tokens (default: manifest's).")
@click.option("--out", "npz_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the output arrays (and the final state, under the state output names) to this .npz.")
@options.json_out
@options.trust_modified
def run_cmd(model_path, input_path, text, streaming, device, provider_option, threads, no_fallback, nan, max_len,
            npz_out, json_out, trust_modified):
    """Run MODEL.onnx on data and print the outputs (labels for classifiers)."""
    from edgelstm import runtime
    from edgelstm.runtime.providers import check_provider_options, parse_provider_options

    echo = options.echo_for(json_out)
    popts = parse_provider_options(provider_option)
    model = runtime.load(model_path, device=device, threads=threads, fallback=not no_fallback, nan=nan,
                         provider_options=popts or None, trust_modified=trust_modified)
    # options for a provider outside the device's chain would be ignored: refuse them instead
    check_provider_options(popts, (model.encoder if isinstance(model, runtime.Seq2SeqModel) else model)
                           .requested_providers)
    report: dict = {"model": str(model_path), "providers": model.providers}
    lines: list[str] = []
    if isinstance(model, runtime.Seq2SeqModel):
        sources = list(text)
        if input_path is not None:
            try:
                sources += [ln.rstrip("\n") for ln in Path(input_path).read_text(encoding="utf-8-sig").splitlines()
                            if ln.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise DataError(str(input_path), "cannot read the source text", expected="a UTF-8 text file",
                                got=str(e)[:200]) from None
        if not sources:
            raise UsageError("--text/--input", "a seq2seq model needs source text", expected="--text or --input",
                             got="neither")
        gen = model.generate(sources, max_len=max_len)
        for src, out, toks in zip(sources, gen.texts or [None] * len(sources), gen.tokens):
            lines.append(f"{src}\t{out if out is not None else toks}")
        report.update(sources=sources, **gen.to_dict())
        arrays = {}
    else:
        if input_path is None:
            raise UsageError("--input", "missing input data", expected="a .npz, .npy or .csv file", got=None)
        if text:
            raise UsageError("--text", "only seq2seq models take text", expected="--input", got="--text")
        data = read_input(input_path)
        x = data.pop("x")
        if x.ndim == 2:
            x = x[None]  # one sequence [time, features] -> [1, time, features]
        lengths = data.pop("lengths", None)
        state = {k: v for k, v in data.items() if k in {s.input for s in model.states}} or None
        if streaming:
            result, arrays, stats = _run_stream(model, x, lengths, state)
            report["stream"] = stats
            lines.append(f"streamed {x.shape[1]} steps x batch {x.shape[0]}: median step "
                         f"{stats['step_us_median']:.1f} us, p90 {stats['step_us_p90']:.1f} us")
        else:
            t0 = time.perf_counter()
            result = model.run(x, lengths=lengths, state=state)
            report["run_ms"] = (time.perf_counter() - t0) * 1e3
            arrays = dict(result.outputs)
        # the final state under the graph's state OUTPUT names (h_out, c_out): what the model
        # produced; feed it back as the matching input (h_in, c_in) to continue
        out_name = {s.input: s.output for s in model.states}
        final = {out_name.get(k, k): v for k, v in result.state.items()}
        arrays.update(final)
        if json_out is not None:  # nested lists cost ~30 bytes a value: only when they are written
            report["outputs"] = {k: v.tolist() for k, v in arrays.items() if k not in final}
            report["state"] = {k: v.tolist() for k, v in final.items()}
        lines += _result_lines(model, result)
        if result.labels is not None:
            report["labels"] = result.labels
    # files first, then the terminal: a reader that closes stdout early (| head) loses nothing
    if npz_out is not None:
        with atomic_path(npz_out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        lines.append(f"wrote {npz_out}")
    if json_out is not None:
        options.write_json(json_out, SCHEMA, report, indent=1)
        if json_out != "-":
            lines.append(f"wrote {json_out}")
    for line in lines:
        echo(line)


def _run_stream(model, x, lengths, state):
    if lengths is not None and not (x.ndim == 3 and np.all(np.asarray(lengths) == x.shape[1])):
        raise UsageError("--stream", "streaming feeds every step of every sequence; these lengths differ from the "
                                     "time axis: trim the data or run without --stream",
                         expected=f"no 'lengths' array, or all lengths == {x.shape[1] if x.ndim == 3 else 'T'}",
                         got=f"lengths {np.unique(np.asarray(lengths)).tolist()[:8]}")
    if x.ndim != 3:
        raise InputError("x", "wrong rank for --stream", expected="[batch, time, features] (or [time, features])",
                         got=f"{x.ndim}-D shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError("x", "nothing to stream", expected="batch >= 1 and time >= 1",
                         got=f"shape {x.shape}")
    stream = model.stream(batch=x.shape[0])
    if state is not None:
        stream.state = state
    steps = x.shape[1]
    arrays: dict[str, np.ndarray] = {}  # [batch, time, ...], filled step by step (no list of steps)
    us = np.empty(steps, dtype=np.float64)
    result = None
    for t in range(steps):
        frame = np.ascontiguousarray(x[:, t])
        t0 = time.perf_counter()
        result = stream.step(frame)
        us[t] = (time.perf_counter() - t0) * 1e6
        for k, v in result.outputs.items():
            if k not in arrays:
                arrays[k] = _step_buffer((v.shape[0], steps, *v.shape[1:]), v.dtype)
            arrays[k][:, t] = v
    stats = {"steps": int(steps), "step_us_median": float(np.median(us)),
             "step_us_p90": float(np.percentile(us, 90))}
    final = _with_state(model, result, stream.state)
    return final, arrays, stats


STEP_BUFFER_RAM = 64 << 20  # bytes: larger per-step outputs of --stream go to an anonymous file on disk


def _step_buffer(shape: tuple, dtype) -> np.ndarray:
    """Room for every step's output: in memory, or past :data:`STEP_BUFFER_RAM` an anonymous
    temp file mapped into memory (removed by the OS when closed), so a long stream's outputs
    are written as it goes rather than held in RAM."""
    import tempfile

    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= STEP_BUFFER_RAM:
        return np.empty(shape, dtype=dtype)
    return np.memmap(tempfile.TemporaryFile(prefix="edgelstm-stream-"), dtype=dtype, mode="w+", shape=shape)


def _with_state(model, step_result, state):
    """The last step's outputs with the stream's final state (a step result carries no state)."""
    from edgelstm.runtime import RunResult

    return RunResult(step_result.outputs, state, model.labels, model.label_output)


def _result_lines(model, result) -> list[str]:
    name = model.label_output
    if result.labels is not None and name == "logits":
        probs = _softmax(result.outputs[name].astype(np.float64))
        return [f"sequence {b}: {label} (p={probs[b].max():.3f})" for b, label in enumerate(result.labels)]
    if result.labels is not None:
        return [f"sequence {b}: {' '.join(map(str, labels))}" for b, labels in enumerate(result.labels)]
    return [f"{k}: shape {list(v.shape)}, mean {float(np.mean(v)):.4g}" for k, v in result.outputs.items()]


commands = {"run": run_cmd}
