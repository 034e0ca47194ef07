"""``edgelstm run``: run an exported model on data with the torch-free runtime.

Imports only the runtime (numpy + onnxruntime), never torch or onnx.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from edgelstm.cli import options
from edgelstm.errors import DataError, InputError, UsageError
from edgelstm.fileio import atomic_path


def read_input(path: Path, names: set[str] | frozenset = frozenset()) -> dict[str, np.ndarray]:
    """``.npz`` (arrays by graph input name, or ``x`` for the data input; a single array is ``x``),
    ``.npy`` (``x``) or ``.csv`` (one sequence: a row per time step, a column per feature,
    optional header). ``names``: the graph's input names (arrays named after them are taken as given)."""
    if not path.exists():
        raise DataError(str(path), "input file not found", expected="an existing .npz, .npy or .csv file",
                        got="no such file")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        from edgelstm.data.readers import load_arrays

        arrays = load_arrays(path)
        if "x" not in arrays and not set(arrays) & set(names):
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
              help="Data: .npz with one array per graph input name (x = the data input; missing state = "
                   "zeros, missing lengths = full), .npy or .csv (rows = time steps). "
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
def run_cmd(**params) -> None:
    """Run MODEL.onnx on data and print the outputs (labels for classifiers)."""
    args = RunArgs(**params)
    from edgelstm import runtime
    from edgelstm.runtime.providers import check_provider_options, parse_provider_options

    popts = parse_provider_options(args.provider_option)
    model = runtime.load(args.model_path, device=args.device, threads=args.threads, fallback=not args.no_fallback,
                         nan=args.nan, provider_options=popts or None, trust_modified=args.trust_modified)
    # options for a provider outside the device's chain would be ignored: refuse them instead
    check_provider_options(popts, (model.encoder if isinstance(model, runtime.Seq2SeqModel) else model)
                           .requested_providers)
    report: dict = {"model": str(args.model_path), "providers": model.providers}
    if isinstance(model, runtime.Seq2SeqModel):
        lines, arrays = _run_seq2seq(model, args, report)
    else:
        lines, arrays = _run_arrays(model, args, report)
    # files first, then the terminal: a reader that closes stdout early (| head) loses nothing
    if args.npz_out is not None:
        with atomic_path(args.npz_out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        lines.append(f"wrote {args.npz_out}")
    if args.json_out is not None:
        options.write_json(args.json_out, SCHEMA, report, indent=1)
        if args.json_out != "-":
            lines.append(f"wrote {args.json_out}")
    echo = options.echo_for(args.json_out)
    for line in lines:
        echo(line)


@dataclass(frozen=True)
class RunArgs:
    """The command line of ``edgelstm run`` as click parsed it (one field per option)."""

    model_path: Path
    input_path: Path | None
    text: tuple[str, ...]
    streaming: bool
    device: str
    provider_option: tuple[str, ...]
    threads: int | None
    no_fallback: bool
    nan: str
    max_len: int | None
    npz_out: Path | None
    json_out: str | None
    trust_modified: bool


def _run_seq2seq(model, args: RunArgs, report: dict) -> tuple[list[str], dict]:
    """Greedy decoding of the --text / --input sources: the printed lines (no arrays to write)."""
    for flag, given in (("--stream", args.streaming), ("--out", args.npz_out is not None)):
        if given:  # refused, not ignored: greedy decoding has no per-step stream or output arrays here
            raise UsageError(flag, "does not apply to a seq2seq model", expected="--text/--input, --max-len, "
                             "--json", got=flag)
    sources = list(args.text)
    if args.input_path is not None:
        try:
            sources += [ln.rstrip("\n") for ln in Path(args.input_path).read_text(encoding="utf-8-sig").splitlines()
                        if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(str(args.input_path), "cannot read the source text", expected="a UTF-8 text file",
                            got=str(e)[:200]) from None
    if not sources:
        raise UsageError("--text/--input", "a seq2seq model needs source text", expected="--text or --input",
                         got="neither")
    gen = model.generate(sources, max_len=args.max_len)
    lines = [f"{src}\t{out if out is not None else toks}"
             for src, out, toks in zip(sources, gen.texts or [None] * len(sources), gen.tokens)]
    report.update(sources=sources, **gen.to_dict())
    return lines, {}


def _run_arrays(model, args: RunArgs, report: dict) -> tuple[list[str], dict]:
    """One run (or a --stream) of the --input arrays: the printed lines and the arrays to write."""
    if args.max_len is not None:
        raise UsageError("--max-len", "only applies to a seq2seq model", expected="no --max-len",
                         got=f"--max-len {args.max_len}")
    if args.input_path is None:
        raise UsageError("--input", "missing input data", expected="a .npz, .npy or .csv file", got=None)
    if args.text:
        raise UsageError("--text", "only seq2seq models take text", expected="--input", got="--text")
    lines: list[str] = []
    out_state = {s.input: s.output for s in model.states}
    data = by_input_name(model, read_input(args.input_path, {s.name for s in model.inputs}), str(args.input_path))
    lengths = data.pop(model.lengths_name, None) if model.lengths_name else data.pop("lengths", None)
    state = {k: data.pop(k) for k in [s.input for s in model.states] if k in data} or None
    if args.streaming:
        x = data.pop(model.x_name) if model.x_name in data else None
        if data or x is None:
            raise UsageError("--stream", "streaming steps the model's one data input; this data holds others",
                             expected=f"arrays {model.x_name!r} (+ lengths, state)", got=sorted(data) or None)
        info = model.interface.input(model.x_name)
        result, arrays, stats = _run_stream(model, x, lengths, state)
        report["stream"] = stats
        lines.append(f"streamed {x.shape[info.time_axis]} steps x batch {x.shape[info.batch_axis]}: median "
                     f"step {stats['step_us_median']:.1f} us, p90 {stats['step_us_p90']:.1f} us")
    else:
        t0 = time.perf_counter()
        result = model.run(inputs=data, lengths=lengths, state=state)
        report["run_ms"] = (time.perf_counter() - t0) * 1e3
        arrays = dict(result.outputs)
        if result.filled:
            report["filled"] = list(result.filled)
            lines.append("filled: " + ", ".join(
                f"{n} ({'zeros' if n in out_state else 'full lengths'})" for n in result.filled))
    # the final state under the graph's state OUTPUT names (h_out, c_out): what the model
    # produced; feed it back as the matching input (h_in, c_in) to continue
    final = {out_state.get(k, k): v for k, v in result.state.items()}
    arrays.update(final)
    if args.json_out is not None:  # nested lists cost ~30 bytes a value: only when they are written
        report["outputs"] = {k: v.tolist() for k, v in arrays.items() if k not in final}
        report["state"] = {k: v.tolist() for k, v in final.items()}
    lines += _result_lines(model, result)
    if result.labels is not None:
        report["labels"] = result.labels
    return lines, arrays


def by_input_name(model, data: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Arrays keyed by graph input name: ``x`` names the model's data input and ``lengths`` its
    lengths input whatever the graph calls them (``y``, labels, is skipped); one sequence without
    its batch axis gets one."""
    names = {s.name for s in model.inputs}
    out = {}
    for k, v in data.items():
        target = k
        if k == "y" and k not in names:
            continue  # labels beside the inputs (a data set's npz): not fed
        if k == "x" and k not in names and model.x_name is None:
            raise DataError(source, "this graph has several data inputs: name each array after its input",
                            expected=sorted(names), got="an array taken as x (named x, or the only one)")
        if k not in names:
            target = {"x": model.x_name, "lengths": model.lengths_name}.get(k)
            if target is None:
                raise DataError(f"{source}:{k}", "array does not name a graph input",
                                expected=sorted(names | ({"x"} if model.x_name else set())), got=k)
        out[target] = v
    info = model.interface.input(model.x_name) if model.x_name else None
    if info is not None and model.x_name in out and out[model.x_name].ndim == info.rank - 1 \
            and info.batch_axis is not None and out[model.x_name].ndim >= 1:
        out[model.x_name] = np.expand_dims(out[model.x_name], info.batch_axis)  # one sequence -> batch 1
    return out


def _run_stream(model, x, lengths, state):
    info = model.interface.input(model.x_name) if model.x_name else None
    want = info.layout() if info is not None else "[batch, time, features]"
    if info is None or info.time_axis is None or x.ndim != info.rank:
        raise InputError(model.x_name or "x", "wrong rank for --stream", expected=f"{want} (or one sequence "
                         "without its batch axis)", got=f"{x.ndim}-D shape {x.shape}")
    t_axis, b_axis = info.time_axis, info.batch_axis
    steps = x.shape[t_axis]
    if lengths is not None and not np.all(np.asarray(lengths) == steps):
        raise UsageError("--stream", "streaming feeds every step of every sequence; these lengths differ from the "
                                     "time axis: trim the data or run without --stream",
                         expected=f"no 'lengths' array, or all lengths == {steps}",
                         got=f"lengths {np.unique(np.asarray(lengths)).tolist()[:8]}")
    if x.shape[b_axis] < 1 or steps < 1:
        raise InputError(model.x_name, "nothing to stream", expected="batch >= 1 and time >= 1",
                         got=f"shape {x.shape}")
    stream = model.stream(batch=x.shape[b_axis])
    if state is not None:
        stream.state = state
    arrays: dict[str, np.ndarray] = {}  # each output with the steps on its own time axis, filled step by step
    out_axis = {t.name: (t.time_axis if t.time_axis is not None else 1) for t in model.interface.data_outputs}
    us = np.empty(steps, dtype=np.float64)
    result = None
    for t in range(steps):
        frame = np.ascontiguousarray(np.take(x, t, axis=t_axis))
        t0 = time.perf_counter()
        result = stream.step(frame)
        us[t] = (time.perf_counter() - t0) * 1e6
        for k, v in result.outputs.items():
            ax = min(out_axis.get(k, 1), v.ndim)
            if k not in arrays:
                arrays[k] = _step_buffer(v.shape[:ax] + (steps,) + v.shape[ax:], v.dtype)
            arrays[k][(slice(None),) * ax + (t,)] = v
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
