"""The run's held-out split, as the exported graph takes it: one home for verify and quantize.

``verify --reference RUN_DIR`` (the test split) and ``quantize --calibration RUN_DIR`` (the
validation split) both feed an exported graph from the data set its run was trained on. Both
need the same facts: which data set and seed, how the features are normalized on the way in,
what the targets are. They are written here once.

Imports: numpy, :mod:`edgelstm.errors`, and (inside :func:`load_run_data`) :mod:`edgelstm.checkpoint`
and :mod:`edgelstm.data`. Imported by :mod:`edgelstm.verify.inputs`, :mod:`edgelstm.verify.seq2seq`
(through it) and :mod:`edgelstm.exporters.calibration`. It imports neither of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgelstm.errors import DataError, UsageError


@dataclass
class RunData:
    """The held-out split of a run's data set, as the graph takes it (see :func:`load_run_data`).

    Regression / forecast targets are in the data's units: training folds the target scale into
    the head before saving (``edgelstm.training.loop.fold_target_scale``), so the graph's output is
    in data units too and the targets are compared as they are."""

    task: str
    arrays: dict[str, np.ndarray]          # "x" (normalized float32) or "src" (int64), "lengths"
    labels: np.ndarray | None              # classify [N] / label [N, T] ints; regress/forecast targets; seq2seq [N, U]
    label_lengths: np.ndarray | None       # seq2seq: valid target tokens incl. eos
    mask: np.ndarray | None                # forecast: steps whose target counts
    source: str                            # e.g. "digits test split (first 179 of 179)"
    dataset: str
    reference_x: np.ndarray | None = None  # x normalized as the run says, where the manifest says otherwise

    @property
    def n(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])


def load_run_data(run_dir: str | Path, manifest=None, *, split: str | Sequence[str] = "test",
                  max_rows: int | None = 256, option: str = "--reference") -> RunData:
    """The run's own held-out data: ``load_dataset(config.dataset, seed=config.seed)``'s ``split``
    (given several, the first that holds sequences), inputs normalized as the manifest says (else
    as the run config says). ``option`` names the command-line option the run came from, for the
    error when the run's data set does not fit the model.

    Verification uses the test split, which neither training nor calibration has seen;
    quantization calibrates on the validation split.
    """
    from edgelstm.checkpoint import read_run_config
    from edgelstm.data import load_dataset

    run = read_run_config(run_dir)
    if not run.dataset:
        raise DataError(str(run_dir), "run config names no data set", expected="a dataset in config.json", got=None)
    bundle = load_dataset(run.dataset, seed=run.seed or 0)
    wanted = [split] if isinstance(split, str) else list(split)
    for name in wanted:
        if name not in bundle.splits:
            raise UsageError("split", "unknown split", expected=list(bundle.splits), got=name)
    name = next((s for s in wanted if len(bundle.splits[s])), wanted[-1])
    part = bundle.splits[name]
    total = len(part)
    if total == 0:
        raise DataError(f"{run.dataset}:{name}", "the split holds no sequences", expected=">= 1", got=0)
    if max_rows is not None and total > max_rows:
        part = part.subset(slice(0, max_rows))
    x = np.asarray(part.x)
    x_spec = manifest.input("x") if manifest is not None else None
    want = x_spec.shape[-1] if x_spec is not None and x_spec.shape else None
    if isinstance(want, int) and x.ndim == 3 and x.shape[-1] != want:
        raise UsageError(option, f"run {Path(run_dir).name} ({run.dataset}) does not fit this model",
                         expected=f"{want} features per step, as the graph's x", got=f"{x.shape[-1]} features")
    x, reference_x = _normalized(x, manifest, run)
    key = "src" if bundle.task == "seq2seq" else "x"
    return RunData(bundle.task, {key: x, "lengths": np.asarray(part.lengths)}, np.asarray(part.y),
                   None if part.y_lengths is None else np.asarray(part.y_lengths),
                   None if part.mask is None else np.asarray(part.mask),
                   f"{run.dataset} {name} split (first {len(part)} of {total})" if len(part) < total
                   else f"{run.dataset} {name} split ({total})", run.dataset, reference_x)


def _normalized(x: np.ndarray, manifest, run) -> tuple[np.ndarray, np.ndarray | None]:
    """Float features normalized for the graph (the manifest's normalization, else the run's), and
    for the PyTorch reference where the two differ (else None)."""
    if x.dtype.kind != "f":
        return x, None
    norm = manifest.normalization if manifest is not None else None
    run_ms = (run.normalization["mean"], run.normalization["std"]) if run.normalization else None
    mean_std = (norm.mean, norm.std) if norm is not None else run_ms
    raw = x
    if mean_std is not None:  # the graph takes normalized features (the runtime normalizes on the way in)
        x = (raw - np.asarray(mean_std[0], np.float32)) / np.asarray(mean_std[1], np.float32)
    x = x.astype(np.float32)
    # the PyTorch reference takes the features as it was trained: normalized as the RUN says; a
    # manifest whose normalization differs then shows as a task drop, not as agreement
    if norm is not None and run_ms is not None and not (
            np.allclose(norm.mean, run_ms[0], rtol=1e-6, atol=0) and np.allclose(norm.std, run_ms[1], rtol=1e-6, atol=0)):
        return x, ((raw - np.asarray(run_ms[0], np.float32)) / np.asarray(run_ms[1], np.float32)).astype(np.float32)
    return x, None


__all__ = ["RunData", "load_run_data"]
