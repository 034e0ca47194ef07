"""The single-graph harness's candidates and the comparisons every check of it makes: which
outputs are per time step, padding masked out of them, several outputs judged at once.

Imports numpy, ``edgelstm.stats`` and the verify modules for backends and tolerances; imported
by ``verify.core``, ``verify.checks_task`` and ``verify.checks_state``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelstm.stats import error_stats
from edgelstm.verify.backends import Backend, GraphSpec
from edgelstm.verify.tolerance import Profile, Tolerances

PER_STEP_TASKS = ("label", "regress", "forecast")


@dataclass
class Candidate:
    """One backend under test: what runs it, the graph it runs, the profile that judges it."""

    backend: Backend
    spec: GraphSpec
    profile: Profile


def is_per_step(spec: GraphSpec, name: str, arr: np.ndarray, time: int) -> bool:
    if name in {s[1] for s in spec.states}:
        return False
    if spec.manifest is not None and spec.task in PER_STEP_TASKS + ("classify",):
        return spec.task in PER_STEP_TASKS
    return arr.ndim >= 3 and arr.shape[1] == time


def mask_padding(spec: GraphSpec, feeds, outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero per-step outputs past each sequence's length: padded steps carry no contract."""
    if not spec.lengths or spec.lengths not in feeds or spec.x is None:
        return outs
    lengths = np.asarray(feeds[spec.lengths])
    time = feeds[spec.x].shape[1]
    if np.all(lengths == time):
        return outs
    out = dict(outs)
    for name, arr in outs.items():
        if is_per_step(spec, name, arr, time) and arr.shape[:2] == (len(lengths), time):
            valid = np.arange(time)[None, :] < lengths[:, None]
            out[name] = np.where(valid.reshape(valid.shape + (1,) * (arr.ndim - 2)), arr, 0).astype(arr.dtype)
    return out


def compare(tol: Tolerances, prof: Profile, ref: dict, got: dict, names) -> tuple[bool, dict, list[str]]:
    """Compare several outputs; return (passed, per-output stats, problems naming the outputs)."""
    per, problems = {}, []
    for n in names:
        s = error_stats(ref[n], got[n], name=n)
        ok, rule, why = tol.judge(n, s, prof)
        per[n] = {**s.to_dict(), "rule": rule, "passed": ok}
        if not ok:
            problems.append(f"{n}: {why}")
    return not problems, per, problems


def worst_stats(per: dict) -> dict:
    if not per:
        return {}
    name = max(per, key=lambda n: (not per[n]["passed"], per[n]["max_abs"]))
    s = per[name]
    return {"max_abs": s["max_abs"], "snr_db": s["snr_db"], "cosine": s["cosine"], "worst_output": name,
            "per_output": per}
