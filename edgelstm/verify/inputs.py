"""Inputs for verification: seeded random feeds shaped from the graph/manifest, user .npz data.

Random cases cover several batch sizes and time lengths (different from any export example),
variable lengths inside a padded batch, and non-zero initial states: a zero state would hide a
state wired to the wrong layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgelstm.errors import DataError, UsageError
from edgelstm.run_data import RunData
from edgelstm.verify.backends import GraphSpec, check_feeds

# (batch, time, varied lengths, random initial state)
DEFAULT_CASES: tuple[tuple[int, int, bool, bool], ...] = (
    (1, 1, False, False),
    (3, 7, True, True),
    (2, 23, False, True),
)


@dataclass
class Case:
    name: str
    feeds: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def random_feeds(spec: GraphSpec, batch: int, time: int, rng: np.random.Generator, *,
                 varied_lengths: bool = False, random_state: bool = True) -> dict[str, np.ndarray]:
    """One feed dict from the graph's interface: standard normal floats, token ids in their
    embedding's range, lengths (full, or varied from full down to 1), states (uniform in
    [-0.8, 0.8] or zeros); in the checks' ``[batch, time, ...]`` layout."""
    from edgelstm.errors import InputError

    feeds: dict[str, np.ndarray] = {}
    iface = spec.interface
    time = max(time, iface.min_time)  # export's --min-size: a conv front end is never fed less
    for info in iface.inputs:
        i = spec.spec(info.name)
        if info.role == "lengths":
            lengths = np.full(batch, time, dtype=np.int64)
            if varied_lengths and batch > 1:  # full length down to 1: both extremes always present
                lengths = np.round(np.linspace(time, 1, batch)).astype(np.int64)
            feeds[i.name] = lengths.astype(i.dtype if i.dtype.startswith("int") else "int32")
        elif info.role == "state_in":
            # the state's own layout: [layers*directions, batch, hidden] from a recurrent module,
            # [batch, hidden] from a cell step; every axis but batch must be fixed
            try:
                shape = iface.concrete_shape(info, batch, None)
            except InputError as e:
                raise UsageError(spec.label, f"input {i.name!r} has no fixed size to generate a state from: "
                                 f"{e.problem}", expected="fixed sizes for every axis but batch, or --data DATA.npz",
                                 got=info.layout()) from None
            arr = rng.uniform(-0.8, 0.8, size=shape) if random_state else np.zeros(shape)
            feeds[i.name] = arr.astype(i.dtype if i.dtype.startswith("float") else "float32")
        else:
            try:
                feeds[i.name] = iface.fill(i.name, batch, time, rng=rng)
            except InputError as e:
                raise UsageError(spec.label, f"cannot generate random data for input {i.name!r}: {e.problem}",
                                 expected="fixed sizes for every axis but batch and time, or --data DATA.npz",
                                 got=info.layout()) from None
    return spec.to_checks(feeds)


def random_x(spec: GraphSpec, batch: int, time: int, rng: np.random.Generator) -> np.ndarray:
    """Random values of the data input alone, in the checks' layout."""
    return random_feeds(spec, batch, time, rng, random_state=False)[spec.x]


def random_cases(spec: GraphSpec, seed: int, cases=DEFAULT_CASES) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    for batch, time, varied, rstate in cases:
        feeds = random_feeds(spec, batch, time, rng, varied_lengths=varied, random_state=rstate)
        name = f"batch={batch} time={time}" + (" varied-lengths" if varied else "") + (" random-state" if rstate else "")
        out.append(Case(name, feeds))
    return out


def zero_state(spec: GraphSpec, batch: int) -> dict[str, np.ndarray]:
    from edgelstm.errors import InputError

    out = {}
    for s_in, _ in spec.states:
        try:  # the state's own layout (batch on its interface batch axis), as random_feeds makes it
            shape = spec.interface.concrete_shape(spec.interface.input(s_in), batch, None)
        except InputError as e:
            raise UsageError(spec.label, f"input {s_in!r} has no fixed size to make a zero state from: {e.problem}",
                             expected="fixed sizes for every axis but batch", got=list(spec.spec(s_in).shape)) from None
        out[s_in] = np.zeros(shape, dtype=np.float32)
    return out


def load_npz(path: str | Path, spec: GraphSpec, *, max_rows: int | None = 512) -> Case:
    """A user's .npz: arrays named after the graph inputs, each in its input's own layout (the data
    input ``x`` at least), optional labels ``y``. Missing lengths = full sequences; missing
    states = zeros."""
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), "data file not found", expected="an existing .npz file", got="no such file")
    from edgelstm.data.readers import load_arrays

    arrays = load_arrays(p)
    x = spec.x
    if x is None or x not in arrays:
        raise DataError(str(p), "no array for the model's data input", expected=x or spec.input_names, got=sorted(arrays))
    feeds = {k: v for k, v in arrays.items() if k in spec.input_names}
    missing = [t.name for t in spec.interface.data_inputs if t.name not in feeds]
    if missing:
        raise DataError(str(p), "no array for some of the model's inputs", expected=spec.interface.data_inputs[0].name
                        if len(spec.interface.data_inputs) == 1 else [t.name for t in spec.interface.data_inputs],
                        got=sorted(arrays))
    check_feeds(spec, feeds, str(p))
    for k, v in feeds.items():
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            raise DataError(str(p), f"array {k!r} holds NaN or Inf", expected="finite values", got="NaN/Inf")
        want = spec.spec(k).dtype
        if v.dtype.kind != np.dtype(want).kind and not (v.dtype.kind in "iu" and want.startswith("int")):
            raise DataError(f"{p}:{k}", "wrong dtype", expected=want, got=v.dtype.name)
        feeds[k] = v.astype(want)
    feeds = spec.to_checks(feeds)  # [batch, time, ...] from here on
    xa = feeds[x]
    n = xa.shape[0]
    if max_rows is not None and n > max_rows:
        feeds = {k: (v[:, :max_rows] if k in {s[0] for s in spec.states} else v[:max_rows]) for k, v in feeds.items()}
        n = max_rows
    if spec.lengths:
        lens = feeds.get(spec.lengths, np.full(n, xa.shape[1]))
        if np.any(lens < 1) or np.any(lens > xa.shape[1]):
            raise DataError(f"{p}:{spec.lengths}", "lengths out of range", expected=f"1..{xa.shape[1]}",
                            got=f"{int(lens.min())}..{int(lens.max())}")
        feeds[spec.lengths] = np.asarray(lens).astype(spec.spec(spec.lengths).dtype)
    for s_in, arr in zero_state(spec, n).items():
        feeds.setdefault(s_in, arr)
    labels = arrays.get("y")
    if labels is not None and max_rows is not None and labels.shape[:1] != (n,) and labels.shape[0] > n:
        labels = labels[:n]
    if labels is not None and labels.shape[:1] != (n,):
        raise DataError(f"{p}:y", "labels do not match the number of sequences", expected=n, got=labels.shape[0])
    return Case(f"data={p.name} n={n}", feeds, labels=labels, meta={"source": str(p)})


def split_batch(feeds: dict[str, np.ndarray], spec: GraphSpec, index: int) -> dict[str, np.ndarray]:
    """Sample ``index`` alone, cut to its own length."""
    out = {}
    state_ins = {s[0] for s in spec.states}
    t = int(feeds[spec.lengths][index]) if spec.lengths else feeds[spec.x].shape[1]
    for k, v in feeds.items():
        if k == spec.x:
            out[k] = np.ascontiguousarray(v[index:index + 1, :t])
        elif k == spec.lengths:
            out[k] = np.ascontiguousarray(v[index:index + 1])
        elif k in state_ins:
            out[k] = np.ascontiguousarray(v[:, index:index + 1])
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------------------- the run's own data


def run_data_case(data: RunData, spec: GraphSpec) -> Case:
    """A :class:`Case` for a sequence graph (x, lengths, zero states) from :func:`load_run_data`."""
    x = spec.x
    if x is None or "x" not in data.arrays:
        raise DataError(data.source, "the run's data does not fit this graph", expected=spec.input_names,
                        got=f"{data.task} data")
    xa = data.arrays["x"]
    want = spec.spec(x).shape
    if xa.ndim != 3 or (isinstance(want[2], int) and want[2] > 0 and want[2] != xa.shape[2]):
        raise DataError(data.source, "feature size differs from the graph's input", expected=want, got=list(xa.shape))
    feeds = {x: xa.astype(spec.spec(x).dtype if spec.spec(x).dtype.startswith("float") else np.float32)}
    if spec.lengths:
        feeds[spec.lengths] = data.arrays["lengths"].astype(spec.spec(spec.lengths).dtype)
    feeds.update(zero_state(spec, data.n))
    meta = {"source": data.source, "run_data": True, "mask": data.mask}
    if data.reference_x is not None:
        meta["reference_feeds"] = {**feeds, x: data.reference_x.astype(feeds[x].dtype)}
    return Case(f"run data: {data.source}", feeds, labels=data.labels, meta=meta)
