"""Task metrics on NumPy predictions. Each returns plain floats (JSON-able).

=============== ==================================================== ===============
metric          meaning                                              better
=============== ==================================================== ===============
accuracy        fraction of correct classes (per sequence or step)   higher
event_f1        F1 of the non-background classes (class 0 = none)    higher
rmse            root mean square error in the data's own units       lower
exact_match     fraction of decoded sequences equal to the target    higher
=============== ==================================================== ===============
"""
from __future__ import annotations

import numpy as np

from edgelstm.tokens import EOS, IGNORE_INDEX, PAD

LOWER_IS_BETTER = frozenset({"rmse", "mae", "loss"})


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def classification(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``pred``/``y`` int ``[N]`` or ``[N, T]`` (entries equal to IGNORE_INDEX in ``y`` skipped)."""
    keep = y != IGNORE_INDEX
    p, t = pred[keep], y[keep]
    out = {"accuracy": float((p == t).mean()) if t.size else 0.0}
    if y.ndim == 2:
        # event F1: class 0 is background; an event step is right when its class matches
        tp = float(((p == t) & (t != 0)).sum())
        fp = float(((p != t) & (p != 0)).sum())
        fn = float(((p != t) & (t != 0)).sum())
        out["event_f1"] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        seq_ok = np.where(keep, pred == y, True).all(axis=1)
        out["sequence_accuracy"] = float(seq_ok.mean())
    return out


def regression(pred: np.ndarray, y: np.ndarray, keep: np.ndarray) -> dict[str, float]:
    """``pred``/``y`` ``[N, T, K]`` in the data's units; ``keep`` bool ``[N, T]`` selects scored steps."""
    err = (pred - y)[keep]
    if err.size == 0:
        return {"rmse": float("nan"), "mae": float("nan")}
    return {"rmse": float(np.sqrt(np.mean(err.astype(np.float64) ** 2))), "mae": float(np.mean(np.abs(err)))}


def _strip(ids: np.ndarray) -> tuple[int, ...]:
    out = []
    for i in ids.tolist():
        if i == EOS:
            break
        if i != PAD:
            out.append(i)
    return tuple(out)


def sequences(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Decoded token ids ``[N, *]`` vs targets ``[N, U]`` (both end at eos): exact match and char accuracy."""
    exact, chars, total = 0, 0, 0
    for p, t in zip(pred, y):
        ps, ts = _strip(p), _strip(t)
        exact += ps == ts
        chars += sum(a == b for a, b in zip(ps, ts))
        total += max(len(ts), len(ps))
    n = max(len(y), 1)
    return {"exact_match": exact / n, "char_accuracy": chars / max(total, 1)}
