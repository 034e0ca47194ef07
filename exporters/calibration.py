"""Calibration and evaluation data for ``quantize``: an .npz of graph inputs, a run directory's
held-out split, or random inputs drawn from the graph's interface; fed to onnxruntime's
calibrators by :class:`CalibrationReader`.

Imports: numpy, :mod:`edgelstm.errors`, :mod:`edgelstm.manifest`, the runtime's interface
(:mod:`edgelstm.runtime.interface`), :mod:`edgelstm.run_data` (the run's held-out split, shared
with verify) and :mod:`edgelstm.data.readers`. Imported by :mod:`edgelstm.exporters.quantize`
and :mod:`edgelstm.exporters.quant_eval`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgelstm.errors import DataError, InputError, UnsupportedError
from edgelstm.exporters.quant_options import QuantizeOptions
from edgelstm.manifest import Manifest
from edgelstm.runtime.interface import Interface
from edgelstm.runtime.providers import ort_type_to_dtype


@dataclass
class CalibrationData:
    """Graph inputs (by graph input name) plus optional labels, all sharing the first axis."""

    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    batch_axis: dict[str, int] = field(default_factory=dict)  # inputs batched on another axis (states: 1)
    mask: np.ndarray | None = None                           # forecast: [N, T] steps whose target counts

    def __len__(self) -> int:
        name = next(iter(self.feeds))
        return int(self.feeds[name].shape[self.batch_axis.get(name, 0)])

    def batches(self, batch_size: int, limit: int) -> Iterator[dict[str, np.ndarray]]:
        """Slices of every input along its own batch axis."""
        n = min(len(self), limit)
        for i in range(0, n, batch_size):
            sl = slice(i, min(i + batch_size, n))
            yield {k: v[(slice(None),) * self.batch_axis.get(k, 0) + (sl,)] for k, v in self.feeds.items()}


def _input_roles(iface: Interface) -> dict[str, str]:
    """Map the npz aliases ``x`` / ``lengths`` to graph input names when the graph names differ."""
    names = {t.name for t in iface.inputs}
    roles = {}
    if "x" not in names and iface.primary is not None:
        roles["x"] = iface.primary.name
    if "lengths" not in names and iface.lengths is not None:
        roles["lengths"] = iface.lengths
    return roles


def load_calibration(path: str | os.PathLike, iface: Interface, manifest: Manifest | None) -> CalibrationData:
    """Read an ``.npz`` keyed by graph input names (``x``/``lengths`` accepted as aliases; ``y``
    holds labels; each array batched on its input's own batch axis) or a run directory (its
    held-out data, normalized as the manifest says)."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), "calibration data not found", expected="an .npz file or a run directory",
                        got="no such path")
    if p.is_dir():
        return _load_run_dir(p, iface, manifest)
    from edgelstm.data.readers import load_arrays

    arrays = load_arrays(p)  # refuses pickles, complex / text arrays, truncated archives
    return _feeds_from_arrays(arrays, iface, source=p.name)


def _feeds_from_arrays(arrays: dict[str, np.ndarray], iface: Interface, *, source: str) -> CalibrationData:
    names = {t.name for t in iface.inputs}
    roles = _input_roles(iface)
    labels = arrays.pop("y", None) if "y" not in names else None
    feeds: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        target = k if k in names else roles.get(k)
        if target is None:
            raise DataError(f"{source}:{k}", "array does not name a graph input",
                            expected=sorted(names | set(roles) | {"y"}), got=k)
        feeds[target] = v
    if not feeds:
        raise DataError(source, "no graph input in the calibration data", expected=sorted(names), got=sorted(arrays))
    axes = {k: iface.input(k).batch_axis or 0 for k in feeds}
    for k, v in feeds.items():  # rank, fixed sizes and finiteness, before onnxruntime sees them
        info = iface.input(k)
        want = list(info.shape)
        if v.ndim != len(want):
            raise DataError(f"{source}:{k}", "array rank does not match the graph input",
                            expected=f"{len(want)}-D {info.layout()}", got=f"{v.ndim}-D {list(v.shape)}")
        for axis, (w, g) in enumerate(zip(want, v.shape)):
            if axis != axes[k] and isinstance(w, int) and w != g:
                raise DataError(f"{source}:{k}", f"size of axis {axis} does not match the graph input "
                                "(calibration data from another model or data set?)", expected=want,
                                got=list(v.shape))
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise DataError(f"{source}:{k}", "calibration data holds NaN or Inf", expected="finite values",
                            got=f"{int((~np.isfinite(v)).sum())} non-finite values")
    sizes = {k: v.shape[axes[k]] for k, v in feeds.items()}
    n = next(iter(sizes.values()))
    for k, size in sizes.items():
        if size != n:
            raise DataError(f"{source}:{k}", "arrays disagree on the number of sequences", expected=n,
                            got=size)  # each counted on its input's own batch axis
    if labels is not None and labels.shape[0] != n:
        raise DataError(f"{source}:y", "labels disagree with the inputs on the number of sequences",
                        expected=n, got=labels.shape[0])
    # missing state inputs start at zeros, missing lengths mean full sequences (complete_feed)
    return CalibrationData(feeds, labels, source, axes)


def _load_run_dir(p: Path, iface: Interface, manifest: Manifest | None) -> CalibrationData:
    """The run's held-out (validation, else test) split, normalized for the graph
    (:func:`edgelstm.run_data.load_run_data`, the split verify uses too). Its labels give the task
    metric: classes, per-step labels, or regression / forecast targets in data units (the graph's
    output units), with the forecast's step mask."""
    from edgelstm.run_data import load_run_data

    run = load_run_data(p, manifest, split=("val", "test"), max_rows=None, option="--calibration")
    names = {t.name for t in iface.inputs}
    lengths = run.arrays["lengths"]
    if run.task == "seq2seq":  # the encoder takes the source tokens; its outputs have no labels
        arrays = {"src": run.arrays["src"], "src_lengths": lengths}
    else:
        arrays = {"x": run.arrays["x"], "lengths": lengths, "y": run.labels}
    if not (set(arrays) - {"y"}) <= names | set(_input_roles(iface)):
        raise UnsupportedError(str(p), "this graph cannot be fed from the run's data set",
                               expected="a graph taking x/lengths or src/src_lengths", got=sorted(names))
    data = _feeds_from_arrays(arrays, iface, source=f"{p.name} ({run.source})")
    data.mask = run.mask
    return data


def complete_feed(batch: dict[str, np.ndarray], iface: Interface, sess_inputs,
                   manifest: Manifest | None = None) -> dict[str, np.ndarray]:
    """Fill missing state (zeros) and lengths (full) inputs from the interface, then cast every
    input to the session's dtype (an fp16 graph may take float16)."""
    try:
        feed, _ = iface.complete(batch, defaults=_state_defaults(iface, manifest))
    except InputError as e:
        raise DataError(e.subject, "graph input missing from the calibration data and cannot be defaulted",
                        expected=f"an array named {e.subject!r}", got="none") from None
    out = {}
    for i in sess_inputs:
        want = ort_type_to_dtype(i.type)  # the runtime's dtype table
        try:
            dtype = np.dtype(want)
        except TypeError:  # a type numpy has no name for (bfloat16, sequences): fed as given
            dtype = None
        out[i.name] = feed[i.name] if dtype is None or want == "str" else feed[i.name].astype(dtype, copy=False)
    return out


def _state_defaults(iface: Interface, manifest: Manifest | None) -> dict[str, dict[int, int]]:
    """Sizes of symbolic state dims ``[layers*directions, batch, hidden]`` from the manifest."""
    if manifest is None:
        return {}
    return {t.name: {0: manifest.layers * manifest.directions, 2: manifest.hidden_size}
            for t in iface.inputs if t.role == "state_in" and t.rank == 3}


def random_data(iface: Interface, manifest: Manifest | None, sess_inputs=None, n: int = 64, t: int = 24,
                 seed: int = 0) -> CalibrationData | None:
    """Evaluation data drawn from the interface: standard normal floats, token ids in their
    embedding's range, lengths in ``[t/2, t]``; states and missing lengths are filled later
    (zeros, full). None when an input has a size nothing determines."""
    rng = np.random.default_rng(seed)
    t = max(t, iface.min_time)  # export's --min-size: a conv front end is never fed less
    if manifest is not None and manifest.task == "seq2seq":
        return _random_seq2seq_data(sess_inputs, manifest, rng, n, t)
    feeds: dict[str, np.ndarray] = {}
    try:
        for info in iface.data_inputs:
            feeds[info.name] = iface.fill(info.name, n, t, rng=rng)
    except InputError:
        return None
    if iface.lengths is not None:
        feeds[iface.lengths] = rng.integers(max(1, t // 2), t + 1, size=n).astype(iface.input(iface.lengths).dtype)
    if not feeds:
        return None
    tokens = any(i.role == "tokens" for i in iface.data_inputs)
    return CalibrationData(feeds, None, "random inputs (token ids in range, N(0,1) floats)" if tokens
                           else "random N(0,1) inputs",
                           {k: iface.input(k).batch_axis or 0 for k in feeds})


def _random_seq2seq_data(sess_inputs, manifest: Manifest, rng, n: int, t: int) -> CalibrationData:
    """Random token ids (never the pad/bos/eos ids 0-2) and N(0,1) states and memory for either graph."""
    vocab = len(manifest.vocab) if manifest.vocab else \
        int(manifest.extra.get("model_config", {}).get("vocab_size") or 4)  # ids 0-2 are pad/bos/eos
    lens = rng.integers(max(1, t // 2), t + 1, size=n)
    feeds: dict[str, np.ndarray] = {}
    axes: dict[str, int] = {}
    for i in sess_inputs:
        shape = list(i.shape)
        if "int" in i.type and len(shape) == 1 and i.name.endswith("lengths"):
            feeds[i.name] = lens.astype(np.int32 if "int32" in i.type else np.int64)
        elif "int" in i.type:
            dims = [n] if len(shape) == 1 else [n, t]
            feeds[i.name] = rng.integers(3, max(vocab, 4), size=dims).astype(np.int64 if "int64" in i.type else np.int32)
        elif len(shape) == 3 and isinstance(shape[0], int):      # state [layers*dirs, batch, hidden]
            feeds[i.name] = rng.standard_normal((shape[0], n, shape[2])).astype(np.float32)
            axes[i.name] = 1
        elif len(shape) == 3:                                    # memory [batch, src_time, hidden]
            feeds[i.name] = rng.standard_normal((n, t, shape[2])).astype(np.float32)
        else:
            return None
    return CalibrationData(feeds, None, "random tokens and N(0,1) states", axes)


class CalibrationReader:
    """onnxruntime CalibrationDataReader over :class:`CalibrationData`.

    The histogram calibrators (entropy, percentile) stack every batch of a tensor into one array,
    so all batches must have the same size: use the largest batch size that divides the count."""

    def __init__(self, data: CalibrationData, iface: Interface, sess_inputs, opts: QuantizeOptions,
                 manifest: Manifest | None = None):
        n = min(len(data), opts.calibration_samples)
        bs = opts.batch_size
        if opts.method in ("entropy", "percentile"):
            bs = max(b for b in range(1, min(bs, n) + 1) if n % b == 0)
        self._it = (complete_feed(b, iface, sess_inputs, manifest) for b in data.batches(bs, n))

    def get_next(self):
        return next(self._it, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

