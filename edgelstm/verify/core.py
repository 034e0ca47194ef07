"""The verification harness: run every backend on the same inputs and judge every check.

Seq2seq exports (an encoder / decoder-step pair) go to :mod:`edgelstm.verify.seq2seq`.

``verify(...)`` returns a :class:`~edgelstm.verify.result.VerifyResult`; it never stops at the
first failure. Checks (see the issue and docs/DESIGN.md):

1. ``outputs``          each candidate vs the reference backend, per output: max/mean/p99 abs,
                        max rel, cosine, SNR; judged by the candidate's precision profile.
2. ``task``             top-1 agreement (classifiers, labellers); accuracy vs labels when given.
3. ``streaming``        chunks of 1, 4, 16 with carried state vs the whole sequence.
4. ``drift``            a long sequence (``steps``) streamed through each backend; error vs time
                        step as a curve with its trend; growing state error fails.
5. ``batch_invariance`` a sample alone vs the same sample inside a padded batch with lengths.
   ``state_roundtrip``  state snapshotted (serialised and reloaded) mid-sequence and resumed.
"""
from __future__ import annotations

import io
import logging
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgelstm.errors import EdgeLSTMError, UnknownChoiceError, UnsupportedError, UsageError
from edgelstm.runtime import providers as _providers
from edgelstm.verify import inputs as inp
from edgelstm.verify.backends import (Backend, GraphSpec, NumpyBackend, OrtBackend, ReferenceBackend,
                                      TorchBackend, load_graph, load_torch_reference, resolve_provider)
from edgelstm.verify.result import CHECKS, CheckResult, VerifyResult
from edgelstm.stats import error_stats, snr_db, top1_agreement, trend
from edgelstm.verify.tolerance import (INT8_PRECISIONS, Profile, Tolerances, parse_overrides, profile_for,
                                      select_profile)

log = logging.getLogger("edgelstm.verify")

ORACLES = ("reference", "numpy")
PER_STEP_TASKS = ("label", "regress", "forecast")
MAX_CURVE_POINTS = 400       # drift curves are downsampled to this many points in the report
SLOW_DRIFT_LIMIT = 2000      # pure-Python oracles join the drift run only up to this many steps


@dataclass
class Candidate:
    backend: Backend
    spec: GraphSpec
    profile: Profile


def verify(model: str | os.PathLike, *, reference: Any = None, model_spec: str | None = None,
           checkpoint: str | None = None, against: Sequence[str | os.PathLike] = (),
           devices: Sequence[str] = ("cpu",), data: str | os.PathLike | None = None, steps: int = 200,
           atol: Iterable[str] = (), min_snr: Iterable[str] = (), seed: int = 0,
           checks: Sequence[str] = CHECKS, oracles: Sequence[str] = ORACLES,
           chunks: Sequence[int] = (1, 4, 16), drift_chunk: int = 1, threads: int = 1,
           cases: Sequence[tuple[int, int, bool, bool]] = inp.DEFAULT_CASES, run_data: bool = True,
           data_limit: int | None = 256, trust_modified: bool = False,
           provider_options: Mapping[str, Mapping[str, Any]] | None = None) -> VerifyResult:
    """Verify an exported model (and quantized or other files ``against`` it).

    ``reference``: a run directory or an ``nn.Module`` (the PyTorch original); or ``model_spec``
    ``FILE.py:FACTORY`` with ``checkpoint``. Without either, the NumPy oracle (else the ONNX
    reference evaluator) on ``model`` is the reference: that still checks quantized files,
    providers, streaming, drift and batch invariance, but not the export itself.

    With a run directory and ``run_data`` (default), the run's held-out test split (its first
    ``data_limit`` sequences, normalized as the manifest says) joins the seeded random inputs:
    the task check then reports every backend's accuracy vs the labels (RMSE for regression).
    int8 files always run with one onnxruntime thread (their outputs depend on the count).

    ``provider_options`` maps an onnxruntime provider name to its options (e.g.
    ``{"CUDAExecutionProvider": {"use_tf32": "0"}}``); each candidate's tolerance profile follows
    what its provider computes (:func:`~edgelstm.verify.tolerance.select_profile`: an fp32 file on
    CUDA with TF32 on is judged by the ``tf32`` profile), and the report's config names the
    profile of every candidate (``candidate_profiles``) and the options used.
    """
    _check_args(checks, oracles, chunks, steps, drift_chunk)
    from edgelstm.verify.seq2seq import resolve_pair, verify_pair

    if resolve_pair(model) is not None:  # OUT.onnx stem, OUT.encoder.onnx or OUT.decoder_step.onnx
        return verify_pair(model, reference=reference, model_spec=model_spec, checkpoint=checkpoint,
                           against=against, devices=devices, data=data, atol=atol, min_snr=min_snr, seed=seed,
                           checks=checks, oracles=oracles, threads=threads, run_data=run_data,
                           data_limit=data_limit, steps=steps, trust_modified=trust_modified,
                           provider_options=provider_options)
    tol = Tolerances(parse_overrides(list(atol), "--atol"), parse_overrides(list(min_snr), "--min-snr"))
    proto, spec = load_graph(model, trust_modified=trust_modified)
    graphs = [(proto, spec)]
    for other in against:
        o_proto, o_spec = load_graph(other, trust_modified=trust_modified)
        if o_spec.input_names != spec.input_names or o_spec.output_names != spec.output_names:
            raise UsageError(str(other), "--against model has different inputs/outputs than the model",
                             expected={"inputs": spec.input_names, "outputs": spec.output_names},
                             got={"inputs": o_spec.input_names, "outputs": o_spec.output_names})
        graphs.append((o_proto, o_spec))
    tol.check_names(spec.output_names)
    result = VerifyResult(model=str(model), reference="")

    # ---------------------------------------------------------------- backends
    module, torch_label = load_torch_reference(reference, model=model_spec, checkpoint=checkpoint)
    run_dir = Path(reference) if isinstance(reference, (str, os.PathLike)) else None
    baseline: Backend | None = TorchBackend(module, spec, label=torch_label) if module is not None else None
    providers = [resolve_provider(d) for d in devices]
    popts = {k: dict(v) for k, v in (provider_options or {}).items()}
    _providers.check_provider_options(popts, providers)
    candidates: list[Candidate] = []
    oracle_backends: dict[str, Backend] = {}
    for g_proto, g_spec in graphs:
        prof = profile_for(g_spec.precision)
        # int8 recurrent outputs depend on the intra-op thread count: int8 always runs on one
        n_threads = 1 if g_spec.precision in INT8_PRECISIONS else threads
        for prov in dict.fromkeys(providers):
            candidates.append(Candidate(OrtBackend(g_spec, prov, threads=n_threads, provider_options=popts.get(prov)),
                                        g_spec, select_profile(g_spec.precision, prov, popts.get(prov))))
        for oracle in oracles:
            cls = {"reference": ReferenceBackend, "numpy": NumpyBackend}[oracle]
            if g_spec.precision != "fp32":
                result.skip(f"{oracle}[{g_spec.label}]", f"the {oracle} oracle evaluates fp32 graphs only ({g_spec.precision})")
                continue
            try:
                b = cls(g_proto, g_spec)
            except Exception as e:  # an operator the oracle does not implement, for instance
                result.skip(f"{oracle}[{g_spec.label}]", _why(e))
                continue
            oracle_backends[b.name] = b
            candidates.append(Candidate(b, g_spec, prof))
    if baseline is None:
        pick = next((c for c in candidates if c.backend.name.startswith("numpy[") and c.spec is spec), None) \
            or next((c for c in candidates if c.backend.name.startswith("reference[") and c.spec is spec), None) \
            or next((c for c in candidates if c.spec is spec and c.spec.precision == "fp32"), None)
        if pick is None:
            raise UsageError("--reference", "no fp32 reference to compare against",
                             expected="--reference RUN_DIR, --model FILE.py:FACTORY, or an fp32 MODEL.onnx",
                             got=f"{spec.label} ({spec.precision})")
        baseline = pick.backend
        candidates.remove(pick)
        result.skip("torch", "no --reference run directory or --model given: the export itself is not checked "
                    f"against PyTorch; {baseline.name} is the reference")
    result.reference = baseline.name
    result.candidates = [c.backend.name for c in candidates]
    result.config = {"steps": steps, "seed": seed, "devices": list(devices), "checks": list(checks),
                     "chunks": list(chunks), "drift_chunk": drift_chunk, "threads": threads,
                     "against": [str(a) for a in against], "data": str(data) if data else None,
                     "tolerances": tol.to_dict(),
                     "precisions": {g.label: g.precision for _, g in graphs},
                     "candidate_precisions": {c.backend.name: c.spec.precision for c in candidates},
                     "candidate_profiles": {c.backend.name: c.profile.precision for c in candidates},
                     "provider_options": popts}
    result.environment = _environment(candidates)
    if any(c.spec.precision in INT8_PRECISIONS for c in candidates) and _providers.cpu_has_sme():
        result.notes.append(SME_NOTE)

    if spec.x is None and spec.manifest is not None and spec.manifest.graph != "model":
        result.skip("all checks", f"{spec.label} is a {spec.manifest.graph if spec.manifest else 'custom'} graph "
                    "without one data input that has a batch and a time axis (seq2seq exports are verified as their encoder / "
                    "decoder_step pair: pass OUT.onnx, OUT.encoder.onnx or OUT.decoder_step.onnx)")
        return result

    # ---------------------------------------------------------------- inputs
    case_list = inp.random_cases(spec, seed, cases)
    if data is not None:
        case_list.append(inp.load_npz(data, spec))
    if run_dir is not None and run_data:
        rd = _run_data(result, run_dir, spec, data_limit)
        if rd is not None:
            case_list.append(inp.run_data_case(rd, spec))
    rng = np.random.default_rng(seed + 1)

    if "outputs" in checks or "task" in checks:
        _check_outputs(result, baseline, spec, candidates, case_list, tol, checks)
    if "streaming" in checks:
        _check_streaming(result, candidates, spec, tol, chunks, rng)
    if "drift" in checks and steps > 0:
        _check_drift(result, baseline, candidates, spec, tol, steps, drift_chunk, rng)
    if "batch_invariance" in checks:
        _check_batch_invariance(result, candidates, spec, tol, rng)
    if "state_roundtrip" in checks:
        _check_roundtrip(result, candidates, spec, tol, rng)
    return result


# ==================================================================================== helpers
def _run_data(result, run_dir: Path, spec: GraphSpec, limit: int | None):
    """The run's test split, or None (with the reason in ``skipped``) when it has none to give."""
    from edgelstm.errors import DataError

    try:
        data = inp.load_run_data(run_dir, spec.manifest, max_rows=limit)
    except (DataError, UnknownChoiceError) as e:  # no data set in the config, a file that moved...
        result.skip("run data", _why(e))
        return None
    result.config["run_data"] = data.source
    return data


def _check_args(checks, oracles, chunks, steps, drift_chunk) -> None:
    for c in checks:
        if c not in CHECKS:
            raise UnknownChoiceError("--checks", "unknown check", expected=list(CHECKS), got=c)
    for o in oracles:
        if o not in ORACLES:
            raise UnknownChoiceError("--oracles", "unknown oracle backend", expected=list(ORACLES), got=o)
    if any(int(c) < 1 for c in chunks):
        raise UsageError("chunks", "chunk sizes must be >= 1", expected=">= 1", got=list(chunks))
    if steps < 0:
        raise UsageError("--steps", "negative step count", expected=">= 0", got=steps)
    if drift_chunk < 1:
        raise UsageError("drift_chunk", "chunk size must be >= 1", expected=">= 1", got=drift_chunk)


def _why(e: Exception) -> str:
    return str(e) if isinstance(e, EdgeLSTMError) else f"{type(e).__name__}: {e}"


def _environment(candidates) -> dict:
    env = {"python": sys.version.split()[0], "platform": platform.platform(), "numpy": np.__version__}
    for mod in ("onnxruntime", "onnx", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    env["providers"] = {c.backend.name: c.backend.providers for c in candidates if isinstance(c.backend, OrtBackend)}
    env["threads"] = {c.backend.name: c.backend.threads for c in candidates if isinstance(c.backend, OrtBackend)}
    return env


def _is_per_step(spec: GraphSpec, name: str, arr: np.ndarray, time: int) -> bool:
    if name in {s[1] for s in spec.states}:
        return False
    if spec.manifest is not None and spec.task in PER_STEP_TASKS + ("classify",):
        return spec.task in PER_STEP_TASKS
    return arr.ndim >= 3 and arr.shape[1] == time


def _mask_padding(spec: GraphSpec, feeds, outs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero per-step outputs past each sequence's length: padded steps carry no contract."""
    if not spec.lengths or spec.lengths not in feeds or spec.x is None:
        return outs
    lengths = np.asarray(feeds[spec.lengths])
    time = feeds[spec.x].shape[1]
    if np.all(lengths == time):
        return outs
    out = dict(outs)
    for name, arr in outs.items():
        if _is_per_step(spec, name, arr, time) and arr.shape[:2] == (len(lengths), time):
            valid = np.arange(time)[None, :] < lengths[:, None]
            out[name] = np.where(valid.reshape(valid.shape + (1,) * (arr.ndim - 2)), arr, 0).astype(arr.dtype)
    return out


def _compare(tol: Tolerances, prof: Profile, ref: dict, got: dict, names) -> tuple[bool, dict, list[str]]:
    """Compare several outputs; return (passed, per-output stats, problems naming the outputs)."""
    per, problems = {}, []
    for n in names:
        s = error_stats(ref[n], got[n], name=n)
        ok, rule, why = tol.judge(n, s, prof)
        per[n] = {**s.to_dict(), "rule": rule, "passed": ok}
        if not ok:
            problems.append(f"{n}: {why}")
    return not problems, per, problems


def _worst(per: dict) -> dict:
    if not per:
        return {}
    name = max(per, key=lambda n: (not per[n]["passed"], per[n]["max_abs"]))
    s = per[name]
    return {"max_abs": s["max_abs"], "snr_db": s["snr_db"], "cosine": s["cosine"], "worst_output": name,
            "per_output": per}


def _run(backend: Backend, feeds) -> dict[str, np.ndarray]:
    return backend.run(feeds)


# ==================================================================================== 1+2 outputs, task
def _check_outputs(result, baseline, spec0, candidates, case_list, tol, checks) -> None:
    # the reference sees the run's own normalization where the manifest's differs (inputs.load_run_data)
    ref_outs = [_mask_padding(spec0, case.feeds, _run(baseline, case.meta.get("reference_feeds", case.feeds)))
                for case in case_list]
    for cand in candidates:
        name, spec, prof = cand.backend.name, cand.spec, cand.profile
        got_outs = []
        try:
            for case in case_list:
                got_outs.append(_mask_padding(spec, case.feeds, _run(cand.backend, case.feeds)))
        except Exception as e:
            for check in ("outputs", "task"):
                if check in checks:
                    result.add(CheckResult(check, name, result.reference, None, False, message=f"run failed: {_why(e)}"))
            continue
        if "outputs" in checks:
            for out in spec.output_names:
                missing = [c.name for c, r in zip(case_list, ref_outs) if out not in r]
                if missing:
                    result.skip(f"outputs {out} [{name}]", f"the reference gives no {out!r}")
                    continue
                try:
                    ref = np.concatenate([r[out].ravel() for r in ref_outs]).astype(np.float64)
                    got = np.concatenate([g[out].ravel() for g in got_outs]).astype(np.float64)
                    per_case = [error_stats(r[out], g[out], name=out).max_abs for r, g in zip(ref_outs, got_outs)]
                except EdgeLSTMError as e:  # shape mismatch, named
                    result.add(CheckResult("outputs", name, result.reference, out, False, message=_why(e)))
                    continue
                s = error_stats(ref, got, name=out)
                ok, rule, why = tol.judge(out, s, prof)
                worst_case = case_list[int(np.argmax(per_case))].name
                stats = {**s.to_dict(), "worst_case": worst_case,
                         "per_case_max_abs": dict(zip([c.name for c in case_list], per_case))}
                stats.pop("worst_index")
                msg = f"{out}: {why} (worst case: {worst_case})" if not ok else ""
                result.add(CheckResult("outputs", name, result.reference, out, ok, rule, msg, "all cases", stats))
        if "task" in checks:
            _check_task(result, cand, case_list, ref_outs, got_outs, tol)


def _tie_tol(tol, prof, out, ref) -> float:
    """Two logits closer than this are a tie: the output tolerance of the profile (for int8 the
    noise level its SNR threshold allows), so a flip between them is within the contract."""
    atol = tol.atol_for(out, prof, float(np.max(np.abs(ref))) if ref.size else 0.0)
    if atol is None:
        snr = tol.snr_for(out, prof) or 20.0
        atol = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) * 10 ** (-snr / 20) if ref.size else 0.0
    return atol


def _task_groups(case_list, ref_outs, got_outs):
    """Unlabelled cases pooled into one group; every labelled case (run data, .npz) on its own."""
    plain = [(c, r, g) for c, r, g in zip(case_list, ref_outs, got_outs) if c.labels is None]
    groups = [("inputs without labels", plain)] if plain else []
    groups += [(c.name, [(c, r, g)]) for c, r, g in zip(case_list, ref_outs, got_outs) if c.labels is not None]
    return groups


def _check_task(result, cand, case_list, ref_outs, got_outs, tol) -> None:
    spec = cand.spec
    if not spec.data_outputs:
        return
    for group, items in _task_groups(case_list, ref_outs, got_outs):
        if spec.task in ("classify", "label"):
            _task_decisions(result, cand, group, items, tol)
        elif spec.task in ("regress", "forecast") and items[0][0].labels is not None:
            _task_rmse(result, cand, group, items, tol)


def _valid_steps(spec, case, arr) -> np.ndarray:
    """bool [batch, time]: steps inside each sequence's length (and the split's metric mask)."""
    valid = np.ones(arr.shape[:2], dtype=bool)
    if spec.lengths:
        valid &= np.arange(arr.shape[1])[None, :] < np.asarray(case.feeds[spec.lengths])[:, None]
    mask = case.meta.get("mask")
    if mask is not None and mask.shape == valid.shape:
        valid &= mask
    return valid


def _task_decisions(result, cand, group, items, tol) -> None:
    """Top-1 agreement with the reference; accuracy vs labels where the group has them."""
    spec, prof = cand.spec, cand.profile
    out = spec.data_outputs[0]
    refs, gots, labs = [], [], []
    for case, r, g in items:
        rr, gg, lab = r[out], g[out], case.labels
        if spec.task == "label":
            valid = _valid_steps(spec, case, rr)
            rr, gg = rr[valid], gg[valid]
            lab = np.asarray(lab)[valid] if lab is not None else None
        refs.append(rr.reshape(-1, rr.shape[-1]))
        gots.append(gg.reshape(-1, gg.shape[-1]))
        if lab is not None:
            labs.append(np.asarray(lab).reshape(-1))
    ref, got = np.concatenate(refs), np.concatenate(gots)
    atol = _tie_tol(tol, prof, out, ref)
    stats = top1_agreement(ref, got, tie_tol=atol)
    ok = stats["agreement"] >= prof.min_agreement
    problems = [] if ok else [f"{out}: top-1 agreement {stats['agreement']:.4f} < {prof.min_agreement} "
                              f"({stats['flips']} decisions changed beyond ties of {atol:.3g})"]
    rule = f"top-1 agreement >= {prof.min_agreement} (ties within {atol:.3g} excused)"
    if labs:
        y = np.concatenate(labs)
        keep = y != inp.IGNORE_LABEL
        y, r_l, g_l = y[keep], ref[keep], got[keep]
        a_ref, a_got = r_l.argmax(-1), g_l.argmax(-1)
        rows = np.arange(len(y))
        # a flip between two logits the reference itself does not separate by more than the
        # tie tolerance keeps the reference's decision: the accuracy the contract guarantees
        tie = (a_ref != a_got) & (r_l[rows, a_ref] - r_l[rows, a_got] <= atol)
        a_adj = np.where(tie, a_ref, a_got)
        acc_ref = float(np.mean(a_ref == y)) if y.size else float("nan")
        acc_got = float(np.mean(a_got == y)) if y.size else float("nan")
        acc_adj = float(np.mean(a_adj == y)) if y.size else float("nan")
        stats.update(accuracy=acc_got, reference_accuracy=acc_ref, tie_adjusted_accuracy=acc_adj,
                     labelled=int(y.size))
        rule += f"; accuracy (ties excused) >= reference - {prof.max_accuracy_drop}"
        if y.size and acc_adj < acc_ref - prof.max_accuracy_drop:
            ok = False
            problems.append(f"{out}: accuracy {acc_got:.4f} (ties excused {acc_adj:.4f}) vs reference "
                            f"{acc_ref:.4f} (drop > {prof.max_accuracy_drop})")
    result.add(CheckResult("task", cand.backend.name, result.reference, out, ok, rule, "; ".join(problems),
                           group, stats))


def _task_rmse(result, cand, group, items, tol) -> None:
    """Regression / forecasting vs targets: RMSE of the candidate next to the reference's.

    By the triangle inequality ``|rmse_got - rmse_ref| <= rms(got - ref)``, so the RMSE may rise
    by at most the output noise the profile allows (its atol, or for int8 the noise level of
    its SNR threshold): a candidate that passes the outputs check passes this one."""
    spec, prof = cand.spec, cand.profile
    out = spec.data_outputs[0]
    case, r, g = items[0]
    rr, gg, y = r[out], g[out], np.asarray(case.labels, dtype=np.float64)
    if y.shape != rr.shape:
        result.skip(f"task {out} [{cand.backend.name}]",
                    f"targets {list(y.shape)} do not match the output {list(rr.shape)}")
        return
    valid = _valid_steps(spec, case, rr) if rr.ndim >= 3 else np.ones(rr.shape[:1], bool)
    e_ref = (rr.astype(np.float64) - y)[valid]
    e_got = (gg.astype(np.float64) - y)[valid]
    rmse_ref = float(np.sqrt(np.mean(e_ref ** 2))) if e_ref.size else float("nan")
    rmse_got = float(np.sqrt(np.mean(e_got ** 2))) if e_got.size else float("nan")
    allowed = _tie_tol(tol, prof, out, rr[valid])
    ok = not rmse_got > rmse_ref + allowed
    stats = {"rmse": rmse_got, "reference_rmse": rmse_ref, "allowed_rise": allowed, "labelled": int(e_ref.size),
             "units": "data units"}  # targets and outputs both in data units (edgelstm.run_data.RunData)
    msg = "" if ok else f"{out}: rmse {rmse_got:.4g} > reference {rmse_ref:.4g} + {allowed:.3g}"
    result.add(CheckResult("task", cand.backend.name, result.reference, out, ok,
                           f"rmse <= reference rmse + {allowed:.3g} (output tolerance)", msg, group, stats))



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
            if _is_per_step(spec, n, v, xs.shape[1]):
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


def _check_streaming(result, candidates, spec, tol, chunks, rng) -> None:
    T = max(2 * max(chunks), 8) + 3  # not a multiple of the chunk sizes: the last chunk is short
    feeds = inp.random_feeds(spec, 2, T, rng, random_state=True)
    for cand in _streamables(result, candidates, "streaming"):
        try:
            whole = cand.backend.run(feeds)
        except Exception as e:
            result.add(CheckResult("streaming", cand.backend.name, "whole sequence", None, False,
                                   message=f"run failed: {_why(e)}"))
            continue
        for chunk in chunks:
            try:
                streamed = _stream(cand.backend, cand.spec, feeds, chunk)
                ok, per, problems = _compare(tol, cand.profile, whole, streamed, cand.spec.output_names)
            except Exception as e:
                ok, per, problems = False, {}, [f"run failed: {_why(e)}"]
            msg = f"chunks of {chunk} differ from the whole sequence: " + "; ".join(problems) if problems else ""
            result.add(CheckResult("streaming", cand.backend.name, "whole sequence", None, ok,
                                   f"chunked == whole, {cand.profile.precision} profile", msg,
                                   f"chunk={chunk} time={T}", _worst(per)))


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
            v = v[:, -1] if _is_per_step(spec, n, v, xs.shape[1]) else v
            rec.setdefault(n, []).append(np.asarray(v, dtype=np.float64).ravel())
    return steps, {n: np.stack(v) for n, v in rec.items()}


FP32_EPS = float(np.finfo(np.float32).eps)  # 1.19e-7
SME_NOTE = ("this CPU has SME: onnxruntime's KleidiAI int8 kernels quantize activations per row, so int8 "
            "outputs differ from x86 / non-SME results by about the quantization error (1e-3), not 1e-7; "
            "int8 is judged here by SQNR and the task, as everywhere. For x86-identical int8 results set "
            "the session option mlas.disable_kleidiai=1 (docs/ARM.md)")


def _check_drift(result, baseline, candidates, spec, tol, steps, chunk, rng) -> None:
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
                                   message=f"run failed: {_why(e)}", case=f"steps={steps}"))
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
def _check_batch_invariance(result, candidates, spec, tol, rng) -> None:
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
                    elif _is_per_step(spec, n, v, T):
                        inside[n] = v[i:i + 1, :t]
                    else:
                        inside[n] = v[i:i + 1]
                ok, per, probs = _compare(tol, cand.profile, alone, inside, spec.output_names)
                per_sample[f"sample{i}(len={t})"] = _worst(per)
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
                ok, per, probs = _compare(tol, cand.profile, {n: np.concatenate(v) for n, v in pooled_alone.items()},
                                          {n: np.concatenate(v) for n, v in pooled_inside.items()}, spec.output_names)
                problems += [f"all samples pooled: {p}" for p in probs]
        except Exception as e:
            problems.append(f"run failed: {_why(e)}")
        worst = max(per_sample.values(), key=lambda s: s.get("max_abs", 0), default={})
        stats = {"max_abs": worst.get("max_abs"), "snr_db": worst.get("snr_db"), "cosine": worst.get("cosine"),
                 "per_sample": per_sample}
        result.add(CheckResult("batch_invariance", cand.backend.name, "sample alone", None, not problems,
                               f"in padded batch == alone, {cand.profile.precision} profile",
                               "; ".join(problems), f"batch=4 time={T} lengths=[12,5,9,1]", stats))


def _check_roundtrip(result, candidates, spec, tol, rng) -> None:
    streamable = _streamables(result, candidates, "state_roundtrip")
    T, k = 20, 7
    feeds = inp.random_feeds(spec, 2, T, rng, random_state=True)
    for cand in streamable:
        try:
            whole = cand.backend.run(feeds)
            first = dict(feeds)
            first[spec.x] = np.ascontiguousarray(feeds[spec.x][:, :k])
            if spec.lengths:
                first[spec.lengths] = np.full(2, k, dtype=feeds[spec.lengths].dtype)
            o1 = cand.backend.run(first)
            # snapshot the state as an app would across a restart: serialise, reload
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
            o2 = cand.backend.run(second)
            resumed = dict(o2)
            for n, v in o2.items():
                if _is_per_step(spec, n, v, T - k):
                    resumed[n] = np.concatenate([o1[n], v], axis=1)
            ok, per, problems = _compare(tol, cand.profile, whole, resumed, spec.output_names)
        except Exception as e:
            ok, per, problems = False, {}, [f"run failed: {_why(e)}"]
        msg = f"resuming from a restored state at step {k} differs: " + "; ".join(problems) if problems else ""
        result.add(CheckResult("state_roundtrip", cand.backend.name, "whole sequence", None, ok,
                               f"snapshot+restore == uninterrupted, {cand.profile.precision} profile", msg,
                               f"batch=2 time={T} split={k}", _worst(per)))
