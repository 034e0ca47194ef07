"""Data: bundled data sets, seeded synthetic generators and readers for user files.

``load_dataset(spec, seed)`` is the one entry point. ``spec`` is a bundled name (see
:data:`DATASETS`) or ``csv:PATH`` / ``npz:PATH`` / ``text:PATH``. It returns a
:class:`DatasetBundle` with train / val / test splits, the task, labels or vocabulary, and the
input normalization measured on the train split. NumPy only (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgelstm.data.bundle import DatasetBundle, Normalization, Split
from edgelstm.errors import UnknownChoiceError
from edgelstm.tokens import BOS, EOS, IGNORE_INDEX, PAD, SPECIAL_TOKENS  # public here too


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str
    kind: str          # "real" (file shipped in bundled/) or "synthetic" (seeded generator)
    summary: str
    suggested_family: str


def _lazy(module: str, func: str) -> Callable[[int], DatasetBundle]:
    def load(seed: int) -> DatasetBundle:
        import importlib
        return getattr(importlib.import_module(f"edgelstm.data.{module}"), func)(seed)
    return load


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", "classify", "real", "UCI handwritten digits, 8 rows x 8 pixels -> 0-9", "lstm"),
    "airline": DatasetInfo("airline", "forecast", "real", "monthly airline passengers 1949-1960, next month", "gru"),
    "sunspots": DatasetInfo("sunspots", "forecast", "real", "yearly sunspot numbers 1700-2008, next year", "gru"),
    "sine": DatasetInfo("sine", "forecast", "synthetic", "noisy sines of random frequency, next value", "gru"),
    "timing": DatasetInfo("timing", "label", "synthetic", "measure an interval, then spike every P steps", "peephole"),
    "dates": DatasetInfo("dates", "seq2seq", "synthetic", "human-written dates -> ISO YYYY-MM-DD", "attention"),
}
_LOADERS: dict[str, Callable[[int], DatasetBundle]] = {
    "digits": _lazy("real", "digits"), "airline": _lazy("real", "airline"), "sunspots": _lazy("real", "sunspots"),
    "sine": _lazy("synthetic", "sine"), "timing": _lazy("synthetic", "timing"), "dates": _lazy("synthetic", "dates"),
}
FILE_PREFIXES = ("csv", "npz", "text")


def dataset_choices() -> list[str]:
    return [*DATASETS, *(f"{p}:PATH" for p in FILE_PREFIXES)]


def load_dataset(spec: str, seed: int = 0) -> DatasetBundle:
    """Load a bundled data set by name, or a user file as ``csv:PATH``, ``npz:PATH``, ``text:PATH``.

    Random splits and synthetic data depend only on ``seed``.
    """
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in FILE_PREFIXES:
        from edgelstm.data import readers
        reader = {"csv": readers.read_csv, "npz": readers.read_npz, "text": readers.read_text}[prefix]
        return reader(rest, seed)
    if spec in _LOADERS:
        return _LOADERS[spec](seed)
    raise UnknownChoiceError("dataset", "unknown data set", expected=f"one of {dataset_choices()}", got=spec)


__all__ = ["BOS", "DATASETS", "DatasetBundle", "DatasetInfo", "EOS", "IGNORE_INDEX", "Normalization", "PAD",
           "SPECIAL_TOKENS", "Split", "dataset_choices", "load_dataset"]
