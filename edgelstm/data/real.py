"""Real data sets shipped in ``edgelstm/data/bundled`` (sources and licences in SOURCES.md)."""
from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np

from edgelstm.data.bundle import DatasetBundle, Split, fit_normalization, random_split, series_forecast_splits
from edgelstm.errors import DataError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def _bundled(name: str) -> Path:
    path = BUNDLED_DIR / name
    if not path.is_file():
        raise DataError(str(path), "bundled data file is missing (broken install?)",
                        expected="a file shipped with edgelstm", got="nothing")
    return path


def digits(seed: int = 0) -> DatasetBundle:
    """UCI handwritten digits: each 8x8 image is a sequence of 8 rows of 8 pixels (0..16)."""
    path = _bundled("digits.csv.gz")
    with gzip.open(path, "rt", encoding="ascii") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if table.ndim != 2 or table.shape[1] != 65:
        raise DataError(str(path), "unexpected table shape", expected="[1797, 65]", got=list(table.shape))
    x = table[:, :64].reshape(-1, 8, 8)
    y = table[:, 64].astype(np.int64)
    lengths = np.full(len(x), 8, dtype=np.int64)
    tr, va, te = random_split(len(x), seed)
    train = Split(x[tr], y[tr], lengths[tr])
    return DatasetBundle(
        name="digits", task="classify", train=train, val=Split(x[va], y[va], lengths[va]),
        test=Split(x[te], y[te], lengths[te]), num_features=8, num_outputs=10, metric="accuracy",
        labels=[str(i) for i in range(10)], normalization=fit_normalization(train.x, train.lengths),
        description="UCI handwritten digits (1,797 images, 8x8): 8 rows of 8 pixels -> digit 0-9",
    )


def _read_series(path: Path, column: str) -> tuple[list[str], np.ndarray]:
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    header = [h.strip().strip('"') for h in rows[0]]
    if column not in header:
        raise DataError(str(path), "column not found", expected=column, got=header)
    j = header.index(column)
    keys = [r[0] for r in rows[1:]]
    return keys, np.array([float(r[j]) for r in rows[1:]], dtype=np.float32)


def _series_bundle(name: str, series: np.ndarray, *, window: int, val_steps: int, test_steps: int,
                   description: str, extra: dict) -> DatasetBundle:
    train, val, test = series_forecast_splits(series, name=name, window=window, val_steps=val_steps,
                                              test_steps=test_steps)
    # normalization from the training period only (the values the model may see while fitting)
    n_train_vals = len(series) - val_steps - test_steps
    norm = fit_normalization(series[None, :n_train_vals, None].astype(np.float32), np.array([n_train_vals]))
    return DatasetBundle(
        name=name, task="forecast", train=train, val=val, test=test, num_features=1, num_outputs=1,
        metric="rmse", normalization=norm, target_normalization=norm, description=description, extra=extra,
    )


def airline(seed: int = 0) -> DatasetBundle:
    """Box & Jenkins monthly airline passengers 1949-1960 (thousands); one-step-ahead forecast.

    Train on 1949-1957 (24-month windows), validate on 1958, test on 1959-1960. ``seed`` is
    unused: the split is chronological.
    """
    del seed
    months, series = _read_series(_bundled("airline.csv"), "Passengers")
    return _series_bundle("airline", series, window=24, val_steps=12, test_steps=24,
                          description="monthly airline passengers 1949-1960 (Box & Jenkins); "
                                      "train 1949-57, val 1958, test 1959-60",
                          extra={"first": months[0], "last": months[-1], "unit": "thousand passengers"})


def sunspots(seed: int = 0) -> DatasetBundle:
    """Yearly sunspot numbers 1700-2008; one-step-ahead forecast, test on the last 30 years."""
    del seed
    years, series = _read_series(_bundled("sunspots.csv"), "SUNACTIVITY")
    return _series_bundle("sunspots", series, window=40, val_steps=30, test_steps=30,
                          description="yearly sunspot numbers 1700-2008 (NOAA); "
                                      "train 1700-1948, val 1949-78, test 1979-2008",
                          extra={"first": years[0], "last": years[-1], "unit": "sunspot number"})
