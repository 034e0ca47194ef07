"""A minimal whole-sequence classifier over the public, torch-free ``edgelstm.runtime`` API.

Input: an ``.npz`` with ``x [N, T, F]`` (float) and optional ``lengths [N]``, or a CSV with one
sequence per row of ``T*F`` numbers (``--features F``, default: the model's feature size; rows may
differ in length, shorter ones are padded and given their own length). Output: one tab-separated
line per sequence on stdout::

    <sequence index>\t<label (class index without manifest labels)>\t<softmax probability>\t<latency us>

and a summary (total time, mean per sequence) on stderr. ``--batch B`` runs B sequences per call;
a sequence's latency is then its batch's time divided by the batch size.

    python -m edgelstm.examples.classify_sequences model.onnx sequences.npz --batch 8
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

from edgelstm import runtime
from edgelstm.errors import DataError, EdgeLSTMError, UnsupportedError


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from edgelstm.data.readers import load_arrays  # torch-free: refuses truncated, pickled, complex arrays

    arrays = load_arrays(path)
    if "x" not in arrays:
        raise DataError(str(path), "no array named 'x'", expected="x [N, T, F]", got=sorted(arrays))
    return arrays["x"], arrays.get("lengths")


def read_csv(path: Path, features: int) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(str(path), "cannot read the CSV", expected="a UTF-8 text file", got=str(e)[:200]) from None
    for n, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            values = [float(v) for v in line.replace(",", " ").split()]
        except ValueError as e:
            raise DataError(f"{path} line {n}", "not a number list", expected="T*F numbers", got=str(e)) from None
        if len(values) % features:
            raise DataError(f"{path} line {n}", f"value count is not a multiple of --features {features}",
                            expected=f"T*{features} numbers", got=len(values))
        rows.append(np.asarray(values, dtype=np.float32).reshape(-1, features))
    if not rows:
        raise DataError(str(path), "no sequences", expected="one sequence per row", got="an empty file")
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    x = np.zeros((len(rows), lengths.max(), features), dtype=np.float32)
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
    return x, lengths


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@click.command()
@click.argument("model_path", metavar="MODEL.onnx")
@click.argument("data_path", metavar="DATA.npz|DATA.csv")
@click.option("--features", type=click.IntRange(min=1), default=None, help="CSV: values per time step.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per call.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, tensorrt, arm, ... or auto.")
@click.option("--threads", type=click.IntRange(min=0), default=1, show_default=True,
              help="onnxruntime intra-op threads (0 = its default).")
def main(model_path, data_path, features, batch, device, threads):
    """Classify every sequence in DATA with MODEL.onnx."""
    try:
        model = runtime.load(model_path, device=device, threads=threads)
        task = getattr(model, "task", None)  # a seq2seq pair loads as a Seq2SeqModel
        if task != "classify" or "logits" not in {o.name for o in model.outputs}:
            raise UnsupportedError(model_path, "not a sequence classifier", expected="task classify with logits "
                                   "[batch, classes]", got=f"task {task}")
        path = Path(data_path)
        if path.suffix == ".npz":
            x, lengths = read_npz(path)
        else:
            f = features or model.features
            if f is None:
                raise DataError(str(path), "the feature size is unknown", expected="--features F", got=None)
            x, lengths = read_csv(path, f)
        total = 0
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            lb = lengths[start:start + batch] if lengths is not None else None
            t0 = time.perf_counter_ns()
            result = model.run(xb, lengths=lb)
            ns = time.perf_counter_ns() - t0
            total += ns
            probs = softmax(result["logits"].astype(np.float64))
            names = result.labels or [str(i) for i in result.predictions]
            for i, (name, p) in enumerate(zip(names, probs.max(axis=-1))):
                click.echo(f"{start + i}\t{name}\t{p:.4f}\t{ns / len(xb) / 1e3:.1f}")
        click.echo(f"{len(x)} sequences in {total / 1e6:.3f} ms, {total / max(len(x), 1) / 1e3:.1f} us per sequence "
                   f"(batch {batch}, {model.providers[0]})", err=True)
    except EdgeLSTMError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
