"""The typed data bundle every loader returns, and the split / normalization helpers they share.

NumPy only: no torch here, so data can be prepared (and inspected) without the training extras.

Layout of one :class:`Split` by task (``N`` sequences, ``T`` padded steps, ``F`` features):

========== =========================== ======================================================
task       ``x``                       ``y``
========== =========================== ======================================================
classify   float32 ``[N, T, F]``       int64 ``[N]`` class ids
label      float32 ``[N, T, F]``       int64 ``[N, T]`` class id per step (padding: -100)
regress    float32 ``[N, T, F]``       float32 ``[N, T, K]`` target per step
forecast   float32 ``[N, T, F]``       float32 ``[N, T, F]`` = x one step later
seq2seq    int64 ``[N, S]`` token ids  int64 ``[N, U]`` target ids ending in eos (pad = 0)
========== =========================== ======================================================

``lengths`` int64 ``[N]`` holds the valid steps of each ``x`` row (padding is zeros after
them; nothing is ever truncated). ``mask`` (bool ``[N, T]``, optional) marks the steps whose
targets count in the loss and metric: a forecast test sequence carries its whole history for
warm state, but only the steps whose target lies in the test period count.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgelstm.errors import DataError
from edgelstm.manifest import TASKS as MANIFEST_TASKS

# the tasks a data set (and a model) is for: the manifest's, less "custom" (a user's own graph)
TASKS = tuple(t for t in MANIFEST_TASKS if t != "custom")
STD_FLOOR = 1e-6  # a feature whose train std is below this is constant: divide by 1 instead


@dataclass
class Split:
    """One split of a data set; see the module docstring for shapes by task."""

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    mask: np.ndarray | None = None
    y_lengths: np.ndarray | None = None  # seq2seq: valid target tokens incl. eos

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: np.ndarray | slice) -> "Split":
        def take(a):
            return None if a is None else a[index]
        return Split(self.x[index], self.y[index], self.lengths[index], take(self.mask), take(self.y_lengths))


@dataclass
class Normalization:
    """Per-feature ``(x - mean) / std``, mean and std measured on the train split."""

    mean: np.ndarray  # float32 [F]
    std: np.ndarray   # float32 [F]

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def invert(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


@dataclass
class DatasetBundle:
    """A data set ready for training: three splits plus everything a model needs to know."""

    name: str                 # the spec it was loaded from ("digits", "csv:/path/a.csv")
    task: str                 # one of TASKS
    train: Split
    val: Split
    test: Split
    num_features: int         # F (seq2seq: vocabulary size)
    num_outputs: int          # classes, regression targets, or vocabulary size
    metric: str               # the validation metric training optimises (see training.metrics)
    labels: list[str] | None = None      # class names (classify / label)
    vocab: list[str] | None = None       # token strings, index = id (seq2seq, text)
    normalization: Normalization | None = None          # input, from the train split
    target_normalization: Normalization | None = None   # regress/forecast targets (training only)
    frame_rate_hz: float | None = None
    max_len: int | None = None           # seq2seq: longest target incl. eos
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(self.name, "unknown task", expected=list(TASKS), got=self.task)

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """A JSON-able description (for ``edgelstm datasets`` and reports)."""
        shape = list(self.train.x.shape[1:])
        return {
            "name": self.name, "task": self.task, "metric": self.metric,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "x_shape": ["N", *shape], "num_features": self.num_features, "num_outputs": self.num_outputs,
            "labels": self.labels, "vocab_size": len(self.vocab) if self.vocab else None,
            "max_len": self.max_len, "frame_rate_hz": self.frame_rate_hz, "description": self.description,
        }


# ---------------------------------------------------------------------------- helpers
def pad_sequences(seqs: list[np.ndarray], *, dtype=np.float32, fill=0) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``[T_i, ...]`` arrays into ``[N, max T, ...]`` padded with ``fill``; return it and lengths."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    t_max = int(lengths.max()) if len(seqs) else 0
    tail = seqs[0].shape[1:] if seqs else ()
    out = np.full((len(seqs), t_max, *tail), fill, dtype=dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths


def valid_step_mask(lengths: np.ndarray, t_max: int) -> np.ndarray:
    """bool ``[N, t_max]``: True on the valid steps of each sequence."""
    return np.arange(t_max)[None, :] < np.asarray(lengths)[:, None]


def fit_normalization(x: np.ndarray, lengths: np.ndarray) -> Normalization:
    """Mean and std per feature over the valid steps of ``x [N, T, F]`` (a train split)."""
    valid = x[valid_step_mask(lengths, x.shape[1])]  # [steps, F]
    if valid.shape[0] == 0:
        raise DataError("train split", "no valid time steps to measure normalization on",
                        expected="at least one step", got=0)
    mean = valid.mean(axis=0, dtype=np.float64)
    std = valid.std(axis=0, dtype=np.float64)
    std = np.where(std < STD_FLOOR, 1.0, std)
    return Normalization(mean.astype(np.float32), std.astype(np.float32))


def random_split(n: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into train / val / test index arrays.

    Each of val and test gets at least one item when ``n >= 3``.
    """
    if n < 3:
        raise DataError("data set", "too few sequences to split into train, val and test",
                        expected="at least 3", got=n)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = max(1, int(round(fractions[1] * n)))
    n_train = min(n_train, n - n_val - 1)
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def series_forecast_splits(series: np.ndarray, *, name: str, window: int, val_steps: int, test_steps: int,
                           stride: int = 1) -> tuple[Split, Split, Split]:
    """Cut one series ``[L, F]`` into forecasting splits, in time order.

    train: overlapping windows of ``window`` steps taken from the first ``L - val - test`` values,
    each predicting every next value. val / test: one sequence each, from the start of the
    series to the end of that period, so the recurrent state is warm; ``mask`` keeps only the
    steps whose target lies in the period.
    """
    series = np.asarray(series, dtype=np.float32)
    if series.ndim == 1:
        series = series[:, None]
    length = series.shape[0]
    n_train_vals = length - val_steps - test_steps
    if n_train_vals < window + 1:
        raise DataError(name, "series too short for the requested window and val/test periods",
                        expected=f"at least {window + 1 + val_steps + test_steps} steps", got=length)
    starts = range(0, n_train_vals - window, stride)
    xs = np.stack([series[s:s + window] for s in starts])
    ys = np.stack([series[s + 1:s + window + 1] for s in starts])
    train = Split(xs, ys, np.full(len(xs), window, dtype=np.int64))

    def period(end: int, steps: int) -> Split:
        x = series[None, : end - 1]
        y = series[None, 1:end]
        mask = np.zeros((1, end - 1), dtype=bool)
        mask[0, end - 1 - steps:] = True
        return Split(x, y, np.array([end - 1], dtype=np.int64), mask)

    val = period(n_train_vals + val_steps, val_steps)
    test = period(length, test_steps)
    return train, val, test
