"""Checks 3 to 5 of the single-graph harness, the ones about carried state: ``streaming``
(chunks of 1, 4, 16 vs the whole sequence), ``drift`` (a long stream's error vs time step, with
its trend), ``batch_invariance`` (a sample alone vs inside a padded batch) and
``state_roundtrip`` (state serialised and reloaded mid-sequence, then resumed).

Imports numpy, ``edgelstm.stats`` and the verify modules it judges with; imported by ``verify.core``.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np

from edgelstm.stats import snr_db, trend
from edgelstm.verify import inputs as inp
from edgelstm.verify.backends import Backend, GraphSpec
from edgelstm.verify.candidate import Candidate, compare, is_per_step, worst_stats
from edgelstm.verify.common import describe_error
from edgelstm.verify.result import CheckResult

MAX_CURVE_POINTS = 400       # drift curves are downsampled to this many points in the report
SLOW_DRIFT_LIMIT = 2000      # pure-Python oracles join the drift run only up to this many steps
FP32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7


# ==================================================================================== 3 streaming
def _stream(backend: Backend, spec: GraphSpec, feeds: dict, chunk: int) -> dict[str, np.ndarray]:
    """Feed ``feeds[x]`` in chunks, carrying state; per-step outputs concatenated, others: last."""
    x = feeds[spec.x]
    T = x.shape[1]
    cur = dict(feeds)
    pieces: dict[str, list] = {}
    last: dict[str, np.ndarray] = {}
    for t0 in range(0, T, chunk):
        xs = x[:, t0:t0 + chunk]
        cur[spec.x] = np.ascontiguousarray(xs)
        if spec.lengths:
            cur[spec.lengths] = np.full(x.shape[0], xs.shape[1], dtype=feeds[spec.lengths].dtype)
        outs = backend.run(cur)
        for s_in, s_out in spec.states:
            cur[s_in] = outs[s_out]
        for n, v in outs.items():
            if is_per_step(spec, n, v, xs.shape[1]):
                pieces.setdefault(n, []).append(v)
            last[n] = v
    for n, vs in pieces.items():
        last[n] = np.concatenate(vs, axis=1)
    return last


def _streamables(result, candidates, check) -> list[Candidate]:
    out = []
    for c in candidates:
        if not c.spec.streamable:
            why = "manifest says streamable=false (bidirectional, pooled over time, or exported without state)" \
                if c.spec.manifest is not None and not c.spec.manifest.streamable else "no state inputs/outputs to carry"
            result.skip(f"{check} [{c.backend.name}]", why)
        else:
            out.append(c)
    return out


def _add_parity(result, check: str, cand: Candidate, tol, outputs: Callable[[], tuple[dict, dict]],
                labels: tuple[str, str, str]) -> None:
    """Judge ``outputs()`` -> (expected, got) with the candidate's profile and add the check:
    ``labels`` = (rule, what a failure means, case). A run that fails is a failed check."""
    rule, failure, case = labels
    try:
        expected, got = outputs()
        ok, per, problems = compare(tol, cand.profile, expected, got, cand.spec.output_names)
    except Exception as e:
        ok, per, problems = False, {}, [f"run failed: {describe_error(e)}"]
    msg = f"{failure}: " + "; ".join(problems) if problems else ""
    result.add(CheckResult(check, cand.backend.name, "whole sequence", None, ok,
                           f"{rule}, {cand.profile.precision} profile", msg, case, worst_stats(per)))


def check_streaming(result, candidates, spec, tol, chunks, rng) -> None:
    T = max(2 * max(chunks), 8) + 3  # not a multiple of the chunk sizes: the last chunk is short
    feeds = inp.random_feeds(spec, 2, T, rng, random_state=True)
    for cand in _streamables(result, candidates, "streaming"):
        try:
            whole = cand.backend.run(feeds)
        except Exception as e:
            result.add(CheckResult("streaming", cand.backend.name, "whole sequence", None, False,
                                   message=f"run failed: {describe_error(e)}"))
            continue
        for chunk in chunks:
            _add_parity(result, "streaming", cand, tol,
                        lambda chunk=chunk, cand=cand, whole=whole: (whole, _stream(cand.backend, cand.spec, feeds, chunk)),
                        ("chunked == whole", f"chunks of {chunk} differ from the whole sequence",
                         f"chunk={chunk} time={T}"))


# ==================================================================================== 4 drift
def _stream_curve(backend, spec, x, init, chunk) -> tuple[list[int], dict[str, np.ndarray]]:
    """Stream ``x`` [1, T, F]; record every output at each chunk's last step."""
    T = x.shape[1]
    cur = dict(init)
    steps, rec = [], {}
    lens_dtype = init[spec.lengths].dtype if spec.lengths else None
    for t0 in range(0, T, chunk):
        xs = x[:, t0:t0 + chunk]
        cur[spec.x] = np.ascontiguousarray(xs)
        if spec.lengths:
            cur[spec.lengths] = np.full(1, xs.shape[1], dtype=lens_dtype)
        outs = backend.run(cur)
        for s_in, s_out in spec.states:
            cur[s_in] = outs[s_out]
        steps.append(t0 + xs.shape[1])
        for n, v in outs.items():
            v = v[:, -1] if is_per_step(spec, n, v, xs.shape[1]) else v
            rec.setdefault(n, []).append(np.asarray(v, dtype=np.float64).ravel())
    return steps, {n: np.stack(v) for n, v in rec.items()}


def check_drift(result, baseline, candidates, spec, tol, steps, chunk, rng) -> None:
    streamable = _streamables(result, candidates, "drift")
    if not spec.streamable:
        return
    runnable = []
    for c in streamable:
        if c.backend.slow and steps > SLOW_DRIFT_LIMIT:
            result.skip(f"drift [{c.backend.name}]", f"pure-Python oracle; drift runs it up to {SLOW_DRIFT_LIMIT} steps")
        else:
            runnable.append(c)
    if not runnable:
        return
    x = inp.random_x(spec, 1, steps, rng)  # any dtype and layout: [1, steps, ...] in the checks' layout
    init = inp.random_feeds(spec, 1, 1, rng, random_state=False)  # a deployment starts from zeros
    ref_steps, ref = _stream_curve(baseline, spec, x, init, chunk)
    idx = np.unique(np.linspace(0, len(ref_steps) - 1, min(MAX_CURVE_POINTS, len(ref_steps))).astype(int))
    for cand in runnable:
        try:
            c_steps, got = _stream_curve(cand.backend, cand.spec, x, init, chunk)
        except Exception as e:
            result.add(CheckResult("drift", cand.backend.name, result.reference, None, False,
                                   message=f"run failed: {describe_error(e)}", case=f"steps={steps}"))
            continue
        curves, per, problems = {}, {}, []
        for n in spec.output_names:
            if n not in ref or n not in got:
                continue
            r, g = ref[n], got[n]
            err = np.abs(r - g).max(axis=1)  # max |error| at each recorded step
            curves[n] = err
            tr = trend(np.asarray(ref_steps), err)
            rms_ref = float(np.sqrt(np.mean(r ** 2))) if r.size else 0.0
            scale = float(np.abs(r).max()) if r.size else 0.0
            atol = tol.atol_for(n, cand.profile, scale)
            if atol is not None and cand.profile.precision in ("fp32", "tf32") and n not in tol.atol \
                    and None not in tol.atol:
                # Over a long horizon two correct fp32 implementations drift apart by rounding alone:
                # the profile's O(T * eps32) bound, taken at T = steps (never below the short-run atol).
                atol = max(atol, steps * FP32_EPS * max(1.0, scale))
            snr_min = tol.snr_for(n, cand.profile)
            q = max(len(err) // 4, 1)
            last_snr = snr_db(r[-q:], g[-q:])
            allowed = atol if atol is not None else rms_ref * 10 ** (-(snr_min or 20.0) / 20)
            growing = tr["growth"] > cand.profile.drift_growth_limit and tr["last_quarter_mean"] > 0.1 * allowed
            s = {**tr, "last_quarter_snr_db": last_snr, "allowed": allowed, "growing": bool(growing),
                 "max_abs": float(err.max()), "snr_db": snr_db(r, g)}
            bad = []
            if atol is not None and not float(err.max()) <= atol:
                worst = int(np.argmax(err))
                bad.append(f"max_abs {float(err.max()):.3g} > {atol:.3g} at step {ref_steps[worst]}")
            if snr_min is not None and not last_snr >= snr_min:
                bad.append(f"last-quarter snr {last_snr:.1f} dB < {snr_min:g} dB")
            if growing:
                bad.append(f"error keeps growing: last quarter {tr['last_quarter_mean']:.3g} = "
                           f"{tr['growth']:.1f}x the first (limit {cand.profile.drift_growth_limit}x)")
            s["passed"] = not bad
            per[n] = s
            if bad:
                problems.append(f"{n}: " + "; ".join(bad))
        worst = max(per, key=lambda k: (not per[k]["passed"], per[k]["max_abs"])) if per else None
        stats = {**(per[worst] if worst else {}), "worst_output": worst, "per_output": per}
        curve = {"step": [int(ref_steps[i]) for i in idx], "error": {n: [float(e[i]) for i in idx] for n, e in curves.items()}}
        rule = f"{cand.profile.precision} profile over {steps} steps, growth <= {cand.profile.drift_growth_limit}x"
        result.add(CheckResult("drift", cand.backend.name, result.reference, None, not problems, rule,
                               "; ".join(problems), f"steps={steps} chunk={chunk}", stats, curve))


# ==================================================================================== 5 batch invariance, round trip
def check_batch_invariance(result, candidates, spec, tol, rng) -> None:
    if not spec.lengths:
        result.skip("batch_invariance", "the model has no lengths input")
        return
    if spec.x is None:
        result.skip("batch_invariance", "the model has no single data input with batch and time axes to cut")
        return
    T = 12
    feeds = inp.random_feeds(spec, 4, T, rng, random_state=True)
    feeds[spec.lengths] = np.array([T, 5, 9, 1], dtype=feeds[spec.lengths].dtype)
    for cand in candidates:
        if getattr(cand.backend, "ignores_sequence_lens", False):
            result.skip(f"batch_invariance [{cand.backend.name}]",
                        "onnx.reference ignores sequence_lens; the harness runs it one sequence at a time")
            continue
        problems, per_sample = [], {}
        int8 = cand.profile.precision == "int8"
        pooled_alone: dict[str, list] = {}
        pooled_inside: dict[str, list] = {}
        try:
            batched = cand.backend.run(feeds)
            for i in range(4):
                one = inp.split_batch(feeds, spec, i)
                alone = cand.backend.run(one)
                t = int(feeds[spec.lengths][i])
                inside = {}
                for n, v in batched.items():
                    if n in {s[1] for s in spec.states}:
                        inside[n] = v[:, i:i + 1]
                    elif is_per_step(spec, n, v, T):
                        inside[n] = v[i:i + 1, :t]
                    else:
                        inside[n] = v[i:i + 1]
                ok, per, probs = compare(tol, cand.profile, alone, inside, spec.output_names)
                per_sample[f"sample{i}(len={t})"] = worst_stats(per)
                if int8:
                    for n in alone:
                        if n in inside:
                            pooled_alone.setdefault(n, []).append(np.ravel(alone[n]))
                            pooled_inside.setdefault(n, []).append(np.ravel(inside[n]))
                else:
                    problems += [f"sample {i} (length {t}): {p}" for p in probs]
            if int8:
                # Dynamic int8 quantizes activations with one scale per tensor, so a sample's
                # rounding depends on its batch-mates: judge the noise against the batch's signal
                # (SQNR over all four samples), not per sample, where a length-1 sample with a tiny
                # output makes any SNR ill-conditioned.
                ok, per, probs = compare(tol, cand.profile, {n: np.concatenate(v) for n, v in pooled_alone.items()},
                                          {n: np.concatenate(v) for n, v in pooled_inside.items()}, spec.output_names)
                problems += [f"all samples pooled: {p}" for p in probs]
        except Exception as e:
            problems.append(f"run failed: {describe_error(e)}")
        worst = max(per_sample.values(), key=lambda s: s.get("max_abs", 0), default={})
        stats = {"max_abs": worst.get("max_abs"), "snr_db": worst.get("snr_db"), "cosine": worst.get("cosine"),
                 "per_sample": per_sample}
        result.add(CheckResult("batch_invariance", cand.backend.name, "sample alone", None, not problems,
                               f"in padded batch == alone, {cand.profile.precision} profile",
                               "; ".join(problems), f"batch=4 time={T} lengths=[12,5,9,1]", stats))


def check_roundtrip(result, candidates, spec, tol, rng) -> None:
    streamable = _streamables(result, candidates, "state_roundtrip")
    T, k = 20, 7
    feeds = inp.random_feeds(spec, 2, T, rng, random_state=True)
    for cand in streamable:
        _add_parity(result, "state_roundtrip", cand, tol, lambda cand=cand: _resumed(cand.backend, spec, feeds, k),
                    ("snapshot+restore == uninterrupted", f"resuming from a restored state at step {k} differs",
                     f"batch=2 time={T} split={k}"))


def _resumed(backend: Backend, spec: GraphSpec, feeds: dict, k: int) -> tuple[dict, dict]:
    """(the whole sequence's outputs, the outputs of the first ``k`` steps then a restart from
    the state snapshotted there, serialised and reloaded as an app would across a restart)."""
    T = feeds[spec.x].shape[1]
    whole = backend.run(feeds)
    first = dict(feeds)
    first[spec.x] = np.ascontiguousarray(feeds[spec.x][:, :k])
    if spec.lengths:
        first[spec.lengths] = np.full(2, k, dtype=feeds[spec.lengths].dtype)
    o1 = backend.run(first)
    buf = io.BytesIO()
    np.savez(buf, **{s_in: o1[s_out] for s_in, s_out in spec.states})
    buf.seek(0)
    with np.load(buf) as z:
        restored = {n: z[n] for n in z.files}
    second = dict(feeds)
    second.update(restored)
    second[spec.x] = np.ascontiguousarray(feeds[spec.x][:, k:])
    if spec.lengths:
        second[spec.lengths] = np.full(2, T - k, dtype=feeds[spec.lengths].dtype)
    o2 = backend.run(second)
    resumed = dict(o2)
    for n, v in o2.items():
        if is_per_step(spec, n, v, T - k):
            resumed[n] = np.concatenate([o1[n], v], axis=1)
    return whole, resumed
