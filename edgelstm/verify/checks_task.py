"""Checks 1 and 2 of the single-graph harness: ``outputs`` (each candidate vs the reference,
per output, judged by its precision profile) and ``task`` (top-1 agreement, accuracy or RMSE vs
labels where a case has them).

Imports numpy, ``edgelstm.stats`` and the verify modules it judges with; imported by ``verify.core``.
"""
from __future__ import annotations

import numpy as np

from edgelstm.errors import EdgeLSTMError
from edgelstm.stats import error_stats, top1_agreement
from edgelstm.tokens import IGNORE_INDEX
from edgelstm.verify.candidate import mask_padding
from edgelstm.verify.common import describe_error
from edgelstm.verify.result import CheckResult


def check_outputs(result, baseline, spec0, candidates, case_list, tol, checks) -> None:
    # the reference sees the run's own normalization where the manifest's differs (edgelstm.run_data.load_run_data)
    ref_outs = [mask_padding(spec0, case.feeds, baseline.run(case.meta.get("reference_feeds", case.feeds)))
                for case in case_list]
    for cand in candidates:
        name, spec, prof = cand.backend.name, cand.spec, cand.profile
        got_outs = []
        try:
            for case in case_list:
                got_outs.append(mask_padding(spec, case.feeds, cand.backend.run(case.feeds)))
        except Exception as e:
            for check in ("outputs", "task"):
                if check in checks:
                    result.add(CheckResult(check, name, result.reference, None, False, message=f"run failed: {describe_error(e)}"))
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
                    result.add(CheckResult("outputs", name, result.reference, out, False, message=describe_error(e)))
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
        keep = y != IGNORE_INDEX  # label padding: no contract, left out of accuracy
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
