"""Readers for user data: ``csv:PATH``, ``npz:PATH`` and ``text:PATH``.

CSV (comma separated, optional header row, blank lines skipped)
  * with a column named ``label`` (also ``class``, ``target`` or ``y``): one sequence per row;
    the other columns are its time steps (one feature per step) and the label is a class name or
    an integer class id -> task ``classify``. Rows may be shorter: trailing empty cells end the
    sequence (its length is kept, nothing is truncated); an empty cell before a value is a
    missing value and an error.
  * without such a column: one time series, rows are time steps, columns are features
    (a single column is a univariate series) -> task ``forecast`` (predict the next row);
    the last 10 % of rows are the test period, the 10 % before it validation.
NPZ
  ``x`` ``[N, T, F]`` (or ``[N, T]`` for one feature), ``y``, optional ``lengths`` ``[N]``,
  optional ``labels`` (class names) and ``frame_rate_hz``. Integer ``y`` is classification:
  ``[N]`` per sequence (``classify``) or ``[N, T]`` per step (``label``); float ``y`` is
  per-step regression, ``[N, T]`` or ``[N, T, K]`` (``regress``).
Text
  UTF-8 text for a next-character model (task ``label``): inputs are one-hot characters,
  the target of each step is the next character.

Every problem raises :class:`~edgelstm.errors.DataError` naming the file and, for CSV, the line
and column.
"""
from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from edgelstm.data.bundle import (DatasetBundle, Split, fit_normalization, random_split,
                                  series_forecast_splits, valid_step_mask)
from edgelstm.errors import DataError
from edgelstm.tokens import IGNORE_INDEX

LABEL_COLUMNS = ("label", "class", "target", "y")
MAX_TEXT_VOCAB = 512      # one-hot inputs: a larger alphabet is almost surely not a text file
TEXT_WINDOW = 64          # characters per training sequence


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), "file not found", expected="an existing file", got="no such file")
    if not p.is_file():
        raise DataError(str(p), "not a regular file", expected="a file", got="a directory" if p.is_dir() else "other")
    return p


# ---------------------------------------------------------------------------- NumPy files
MAX_NPY_HEADER = 10_000        # bytes: NumPy's own default limit for a trusted header
MAX_CLASSES = 100_000          # class ids above this are refused before a head of that size is built
NUMERIC_KINDS = "biuf"         # bool, int, uint, float: complex, object, strings, structs refused


def _npy_header(f, where: str, size: int) -> tuple[tuple, np.dtype]:
    """Read a ``.npy`` header from ``f`` and check it against the ``size`` bytes the member holds."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, dtype = read(f, max_header_size=MAX_NPY_HEADER)
        offset = f.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError) as e:
        raise DataError(where, "not a readable NumPy array", expected="a .npy header", got=str(e)[:200]) from None
    need = math.prod(shape) * dtype.itemsize
    if need > size - offset:
        raise DataError(where, "array data is truncated", expected=f"{need} bytes for shape {list(shape)}",
                        got=f"{max(0, size - offset)} bytes")
    return shape, dtype


def load_arrays(path: str | Path, *, text_ok: tuple[str, ...] = ("labels",)) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` (by name) or ``.npy`` (as ``x``), refusing what cannot be trusted
    before anything large is allocated: pickled / object arrays, complex, strings (except the names
    in ``text_ok``), headers over :data:`MAX_NPY_HEADER` bytes, data shorter than its header says,
    and truncated or corrupt archives. Raises :class:`DataError` naming the file (and array)."""
    p = _existing_file(path)
    dtypes: dict[str, np.dtype] = {}
    try:
        if p.suffix.lower() == ".npy":
            with p.open("rb") as f:
                dtypes["x"] = _npy_header(f, str(p), p.stat().st_size)[1]
        else:
            with zipfile.ZipFile(p) as zf:
                for info in zf.infolist():
                    name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    with zf.open(info) as f:
                        dtypes[name] = _npy_header(f, f"{p}:{name}", info.file_size)[1]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise DataError(str(p), "cannot read as .npz (a truncated or corrupt archive)",
                        expected="a NumPy .npz archive of numeric arrays", got=f"{type(e).__name__}: {e}"[:200]) from None
    for name, dt in dtypes.items():
        if dt.hasobject:
            raise DataError(f"{p}:{name}", "object (pickled) arrays are refused: nothing is unpickled",
                            expected="a numeric array", got=str(dt))
        if dt.kind not in NUMERIC_KINDS and not (name in text_ok and dt.kind in "US"):
            raise DataError(f"{p}:{name}", "unsupported array type", expected="bool, integer or float numbers",
                            got=str(dt))
    try:
        if p.suffix.lower() == ".npy":
            return {"x": np.load(p, allow_pickle=False)}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        raise DataError(str(p), "cannot read the arrays", expected="a NumPy .npz archive of numeric arrays",
                        got=f"{type(e).__name__}: {e}"[:200]) from None
    except Exception as e:  # zlib.error and friends from a corrupt member
        raise DataError(str(p), "cannot read the arrays (corrupt data)", expected="a NumPy .npz archive",
                        got=f"{type(e).__name__}: {e}"[:200]) from None


# ---------------------------------------------------------------------------- CSV
def _parse_float(text: str, where: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise DataError(where, "not a number", expected="a decimal number", got=repr(text)) from None
    if not math.isfinite(v):
        raise DataError(where, "non-finite value", expected="a finite number", got=repr(text))
    return v


def _looks_numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_csv(path: str | Path, seed: int = 0) -> DatasetBundle:
    p = _existing_file(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:  # -sig: a BOM is not part of the first cell
            reader = csv.reader(f)
            rows: list[tuple[int, list[str]]] = []
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue  # blank line
                rows.append((reader.line_num, [c.strip() for c in row]))
    except UnicodeDecodeError as e:
        raise DataError(str(p), "not UTF-8 text", expected="a UTF-8 CSV file", got=f"byte {e.start}: {e.reason}") from None
    except csv.Error as e:
        raise DataError(str(p), "malformed CSV", expected="comma-separated values", got=str(e)) from None
    if not rows:
        raise DataError(str(p), "empty CSV", expected="at least one data row", got="no rows")
    first_line, first = rows[0]
    has_header = not all(_looks_numeric(c) for c in first if c)
    header = first if has_header else [f"column {j + 1}" for j in range(len(first))]
    data = rows[1:] if has_header else rows
    if not data:
        raise DataError(str(p), "no data rows after the header", expected="at least one data row", got=0)
    n_fields = len(header)
    for line, row in data:
        if len(row) != n_fields:
            raise DataError(f"{p}:{line}", "ragged row", expected=f"{n_fields} fields like the "
                            f"{'header' if has_header else 'first row'} (line {first_line})", got=len(row))
    lowered = [h.lower() for h in header] if has_header else []
    label_col = next((lowered.index(n) for n in LABEL_COLUMNS if n in lowered), None)
    if label_col is None:
        return _csv_series(p, header, data, seed)
    return _csv_sequences(p, header, data, label_col, seed)


def _where(p: Path, line: int, j: int, header: list[str]) -> str:
    return f"{p}:{line} column {j + 1} ({header[j]!r})"


def _csv_series(p: Path, header: list[str], data: list[tuple[int, list[str]]], seed: int) -> DatasetBundle:
    values = np.empty((len(data), len(header)), dtype=np.float32)
    for i, (line, row) in enumerate(data):
        for j, cell in enumerate(row):
            if cell == "":
                raise DataError(_where(p, line, j, header), "missing value", expected="a number", got="an empty cell")
            values[i, j] = _parse_float(cell, _where(p, line, j, header))
    length = len(values)
    hold = max(1, length // 10)
    window = max(2, min(64, (length - 2 * hold) // 4))
    train, val, test = series_forecast_splits(values, name=str(p), window=window, val_steps=hold, test_steps=hold)
    n_train_vals = length - 2 * hold
    norm = fit_normalization(values[None, :n_train_vals], np.array([n_train_vals]))
    return DatasetBundle(
        name=f"csv:{p}", task="forecast", train=train, val=val, test=test, num_features=values.shape[1],
        num_outputs=values.shape[1], metric="rmse", normalization=norm, target_normalization=norm,
        description=f"time series from {p.name}: {length} steps x {values.shape[1]} features "
                    f"({', '.join(header)}); val and test = the last {hold} steps each",
        extra={"seed": seed, "columns": header},
    )


def _csv_sequences(p: Path, header: list[str], data: list[tuple[int, list[str]]], label_col: int,
                   seed: int) -> DatasetBundle:
    step_cols = [j for j in range(len(header)) if j != label_col]
    if not step_cols:
        raise DataError(str(p), "no step columns beside the label column", expected="at least one", got=0)
    x = np.zeros((len(data), len(step_cols), 1), dtype=np.float32)
    lengths = np.zeros(len(data), dtype=np.int64)
    raw_labels = []
    for i, (line, row) in enumerate(data):
        lab = row[label_col]
        if lab == "":
            raise DataError(_where(p, line, label_col, header), "missing value", expected="a label", got="an empty cell")
        raw_labels.append(lab)
        cells = [row[j] for j in step_cols]
        n = len(cells)
        while n and cells[n - 1] == "":
            n -= 1  # trailing empty cells end a shorter sequence
        if n == 0:
            raise DataError(f"{p}:{line}", "empty sequence", expected="at least one value", got=0)
        for k in range(n):
            j = step_cols[k]
            if cells[k] == "":
                raise DataError(_where(p, line, j, header), "missing value",
                                expected="a number (only trailing cells may be empty, to end a shorter sequence)",
                                got="an empty cell")
            x[i, k, 0] = _parse_float(cells[k], _where(p, line, j, header))
        lengths[i] = n
    if all(_is_int(v) for v in raw_labels):
        ids = np.array([int(float(v)) for v in raw_labels], dtype=np.int64)
        if ids.min() < 0:
            line = data[int(np.argmin(ids))][0]
            raise DataError(_where(p, line, label_col, header), "negative class id",
                            expected="an integer >= 0 or a class name", got=int(ids.min()))
        labels = [str(i) for i in range(int(ids.max()) + 1)]
    else:
        labels = sorted(set(raw_labels))
        index = {lab: i for i, lab in enumerate(labels)}
        ids = np.array([index[v] for v in raw_labels], dtype=np.int64)
    tr, va, te = random_split(len(x), seed)
    train = Split(x[tr], ids[tr], lengths[tr])
    return DatasetBundle(
        name=f"csv:{p}", task="classify", train=train, val=Split(x[va], ids[va], lengths[va]),
        test=Split(x[te], ids[te], lengths[te]), num_features=1, num_outputs=len(labels), metric="accuracy",
        labels=labels, normalization=fit_normalization(train.x, train.lengths),
        description=f"sequences from {p.name}: {len(x)} rows of up to {len(step_cols)} steps, "
                    f"{len(labels)} classes (column {header[label_col]!r})",
    )


def _is_int(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v) and v == int(v)


# ---------------------------------------------------------------------------- NPZ
def read_npz(path: str | Path, seed: int = 0) -> DatasetBundle:
    p = _existing_file(path)
    arrays = load_arrays(p)
    for need in ("x", "y"):
        if need not in arrays:
            raise DataError(str(p), f"no array named {need!r}", expected=f"arrays x [N,T,F] and y",
                            got=f"arrays {sorted(arrays)}")
    x = arrays["x"]
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{p}: x", "wrong shape or type", expected="numbers [N, T, F] or [N, T]",
                        got=f"{x.dtype} {list(arrays['x'].shape)}")
    x = x.astype(np.float32)
    n, t_max, _ = x.shape
    if "lengths" in arrays:
        lengths = arrays["lengths"]
        if lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer):
            raise DataError(f"{p}: lengths", "wrong shape or type", expected=f"integers [{n}]",
                            got=f"{lengths.dtype} {list(lengths.shape)}")
        lengths = lengths.astype(np.int64)
        bad = np.flatnonzero((lengths < 1) | (lengths > t_max))
        if bad.size:
            raise DataError(f"{p}: lengths[{bad[0]}]", "length out of range", expected=f"1..{t_max}",
                            got=int(lengths[bad[0]]))
    else:
        lengths = np.full(n, t_max, dtype=np.int64)
    valid = valid_step_mask(lengths, t_max)
    if not np.isfinite(x[valid]).all():
        i, t = np.argwhere(valid & ~np.isfinite(x).all(axis=2))[0]
        raise DataError(f"{p}: x[{i}, {t}]", "non-finite value", expected="finite numbers", got="NaN or Inf")
    x[~valid] = 0.0
    y = arrays["y"]
    if y.shape[0] != n:
        raise DataError(f"{p}: y", "first dimension differs from x", expected=n, got=y.shape[0])
    labels = None
    target_norm = None
    if np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        y = y.astype(np.int64)
        if y.ndim == 1:
            task, metric = "classify", "accuracy"
            seen = y
        elif y.ndim == 2 and y.shape[1] == t_max:
            task, metric = "label", "accuracy"
            seen = y[valid]
            y = np.where(valid, y, IGNORE_INDEX)
        else:
            raise DataError(f"{p}: y", "integer y has the wrong shape",
                            expected=f"[{n}] (one class per sequence) or [{n}, {t_max}] (one per step)",
                            got=list(y.shape))
        if seen.min() < 0:
            raise DataError(f"{p}: y", "negative class id", expected="class ids >= 0", got=int(seen.min()))
        if seen.max() >= MAX_CLASSES:
            raise DataError(f"{p}: y", "class id too large", expected=f"class ids < {MAX_CLASSES}", got=int(seen.max()))
        num_outputs = int(seen.max()) + 1
        labels = [str(i) for i in range(num_outputs)]
        if "labels" in arrays:
            names = arrays["labels"]
            if names.ndim != 1 or len(names) < num_outputs:
                raise DataError(f"{p}: labels", "too few class names", expected=f"at least {num_outputs}",
                                got=list(names.shape))
            labels = [str(v) for v in names]
            num_outputs = len(labels)
    elif np.issubdtype(y.dtype, np.floating):
        if y.ndim == 2 and y.shape[1] == t_max:
            y = y[:, :, None]
        if y.ndim != 3 or y.shape[1] != t_max:
            raise DataError(f"{p}: y", "float y must give a target per step",
                            expected=f"[{n}, {t_max}] or [{n}, {t_max}, K] (per-step regression; "
                                     "use integer y for classification)", got=list(y.shape))
        y = y.astype(np.float32)
        if not np.isfinite(y[valid]).all():
            raise DataError(f"{p}: y", "non-finite value", expected="finite numbers", got="NaN or Inf")
        y[~valid] = 0.0
        task, metric, num_outputs = "regress", "rmse", int(y.shape[2])
    else:
        raise DataError(f"{p}: y", "unsupported dtype", expected="integers (classes) or floats (regression)",
                        got=str(y.dtype))
    tr, va, te = random_split(n, seed)
    train = Split(x[tr], y[tr], lengths[tr])
    if task == "regress":
        target_norm = fit_normalization(train.y, train.lengths)
    frame_rate = None
    if "frame_rate_hz" in arrays:
        fr = arrays["frame_rate_hz"]
        if fr.size != 1 or fr.dtype.kind not in "iuf" or not (math.isfinite(float(fr.ravel()[0])) and fr.ravel()[0] > 0):
            raise DataError(f"{p}: frame_rate_hz", "not a frame rate", expected="one finite number > 0",
                            got=f"{fr.dtype} {list(fr.shape)}")
        frame_rate = float(fr.ravel()[0])
    return DatasetBundle(
        name=f"npz:{p}", task=task, train=train, val=Split(x[va], y[va], lengths[va]),
        test=Split(x[te], y[te], lengths[te]), num_features=int(x.shape[2]), num_outputs=num_outputs,
        metric=metric, labels=labels if task != "regress" else None,
        normalization=fit_normalization(train.x, train.lengths), target_normalization=target_norm,
        frame_rate_hz=frame_rate,
        description=f"arrays from {p.name}: {n} sequences of up to {t_max} steps x {x.shape[2]} features",
    )


# ---------------------------------------------------------------------------- text
def read_text(path: str | Path, seed: int = 0) -> DatasetBundle:
    p = _existing_file(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(str(p), "not UTF-8 text", expected="a UTF-8 text file", got=f"byte {e.start}: {e.reason}") from None
    vocab = sorted(set(text))
    if len(vocab) > MAX_TEXT_VOCAB:
        raise DataError(str(p), "too many distinct characters for one-hot inputs",
                        expected=f"at most {MAX_TEXT_VOCAB}", got=len(vocab))
    window = TEXT_WINDOW
    need = 10 * (window + 1)
    if len(text) < need:
        raise DataError(str(p), "text too short", expected=f"at least {need} characters", got=len(text))
    index = {c: i for i, c in enumerate(vocab)}
    seq = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    # chronological: the last 10 % of the text is test, the 10 % before it validation
    cut_val, cut_test = int(len(seq) * 0.8), int(len(seq) * 0.9)
    eye = np.eye(len(vocab), dtype=np.float32)

    def windows(part: np.ndarray, stride: int) -> Split:
        starts = range(0, len(part) - window, stride)
        xs = np.stack([eye[part[s:s + window]] for s in starts])
        ys = np.stack([part[s + 1:s + window + 1] for s in starts])
        return Split(xs, ys, np.full(len(starts), window, dtype=np.int64))

    train = windows(seq[:cut_val], window // 2)
    val = windows(seq[cut_val:cut_test], window)
    test = windows(seq[cut_test:], window)
    return DatasetBundle(
        name=f"text:{p}", task="label", train=train, val=val, test=test, num_features=len(vocab),
        num_outputs=len(vocab), metric="accuracy", labels=list(vocab), vocab=list(vocab), normalization=None,
        description=f"next-character model on {p.name}: {len(text)} characters, {len(vocab)} distinct",
        extra={"seed": seed},
    )
