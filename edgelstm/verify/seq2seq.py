"""Seq2seq verification: an ``OUT.encoder.onnx`` + ``OUT.decoder_step.onnx`` pair against the
PyTorch ``Seq2Seq`` (``encode`` / ``decode_step``), per docs/DESIGN.md.

Every backend runs the pair the way a deployment does: the encoder once, then the decoder step
with its own state carried from step to step (its ``h_out``/``c_out`` fed back as ``h_in``/
``c_in``, starting from its own encoder's ``h_out``/``c_out``), so errors accumulate as they
would on the device.

Checks (names as in :data:`edgelstm.verify.result.CHECKS`):

* ``outputs``           encoder ``memory``/``h_out``/``c_out`` and the decoder step's ``logits``/
                        ``h_out``/``c_out``/``attention`` at every step of a teacher-forced target
                        (named ``encoder.memory``, ``decoder_step.logits``...; ``--atol`` takes
                        these names), judged by the candidate's precision profile.
* ``task``              top-1 agreement of the teacher-forced logits (ties excused); greedy
                        decoding exact match vs the reference's greedy decoding (a divergence
                        where the reference's own logits tie within the tolerance is excused);
                        with the run's data, exact match vs the labels for every backend.
* ``batch_invariance``  a source alone vs the same source inside a padded batch (src_lengths).

Streaming, drift and the state round-trip are whole-sequence checks of a recurrent graph with
an input sequence; the decoder step's carried state is covered by the teacher-forced and greedy
checks above, so they are skipped with that reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgelstm.errors import (DataError, EdgeLSTMError, ManifestError, UnknownChoiceError, UnsupportedError,
                             UsageError)
from edgelstm.runtime.interface import pair_paths, pair_stem
from edgelstm.runtime.providers import check_provider_options
from edgelstm.verify.backends import (Backend, GraphSpec, NumpyBackend, OrtBackend, ReferenceBackend,
                                      load_graph, load_torch_reference, resolve_provider)
from edgelstm.verify.common import describe_error, environment, take_baseline
from edgelstm.verify.options import VerifyOptions
from edgelstm.verify.result import CheckResult, VerifyResult
from edgelstm.stats import error_stats, top1_agreement
from edgelstm.tokens import SPECIAL_TOKENS
from edgelstm.verify.tolerance import (INT8_PRECISIONS, Profile, Tolerances, parse_overrides, profile_for,
                                      select_profile)

ENC_OUT = ("memory", "h_out", "c_out")
DEC_OUT = ("logits", "h_out", "c_out", "attention")
OUTPUT_NAMES = [f"encoder.{n}" for n in ENC_OUT] + [f"decoder_step.{n}" for n in DEC_OUT]
SKIPPED_CHECKS = {
    "streaming": "seq2seq: the decoder step's carried state is checked step by step in outputs "
                 "(teacher-forced) and task (greedy decoding)",
    "drift": "seq2seq: decoding is bounded by max_len; carried-state error is checked over the "
             "teacher-forced sequence",
    "state_roundtrip": "seq2seq: the decoder state is a plain tensor fed back every step (checked in outputs)",
}


# ==================================================================================== files
def _stem(path: Path) -> str:
    return pair_stem(path.name)[0]


def resolve_pair(path: str | os.PathLike) -> tuple[Path, Path] | None:
    """``OUT.onnx`` (absent, its pair present), ``OUT.encoder.onnx`` or ``OUT.decoder_step.onnx``
    -> (encoder, decoder_step) paths; None for anything else (an ordinary model file).

    When the given file is one of the pair, the companion its manifest names wins over the
    naming convention (quantize renames both and records the new names)."""
    p = Path(path)
    role = pair_stem(p.name)[1]
    if role is not None:
        enc, dec = pair_paths(p)
        other = _manifest_companion(p, "decoder_step" if role == "encoder" else "encoder")
        # the manifest's name wins when that file is there; files renamed after export fall
        # back to the naming convention (as edgelstm.runtime.load does)
        if other is not None and other.exists():
            enc, dec = (p, other) if role == "encoder" else (other, p)
        return enc, dec
    if not p.exists():
        enc, dec = pair_paths(p)
        if enc.exists() or dec.exists():
            return enc, dec
    return None


def _manifest_companion(p: Path, role: str) -> Path | None:
    if not p.is_file():
        return None
    try:
        from edgelstm.runtime.integrity import peek_manifest

        manifest = peek_manifest(p.read_bytes(), str(p))
        if manifest is None:
            return None
        name = manifest.companions.get(role)
    except Exception:  # unreadable here: load_graph reports it properly later
        return None
    return p.with_name(name) if name else None


@dataclass
class PairSpec:
    """Both graphs of one seq2seq export."""

    encoder: GraphSpec
    decoder: GraphSpec
    enc_proto: Any
    dec_proto: Any

    @property
    def label(self) -> str:
        return f"{_stem(self.encoder.path)}.onnx"

    @property
    def precision(self) -> str:
        return self.encoder.precision if self.encoder.precision != "fp32" else self.decoder.precision

    @property
    def manifest(self):
        return self.decoder.manifest or self.encoder.manifest


def load_pair(path: str | os.PathLike, *, trust_modified: bool = False) -> PairSpec:
    pair = resolve_pair(path)
    if pair is None:
        raise UsageError(str(path), "not a seq2seq export", expected="OUT.onnx (stem), OUT.encoder.onnx or "
                         "OUT.decoder_step.onnx", got=Path(path).name)
    (ep, es), (dp, ds) = (load_graph(pair[0], trust_modified=trust_modified),
                          load_graph(pair[1], trust_modified=trust_modified))
    for spec, role, names in ((es, "encoder", ("src", "src_lengths")),
                              (ds, "decoder_step", ("token", "h_in", "c_in", "memory", "src_lengths"))):
        if spec.manifest is not None and spec.manifest.graph != role:
            raise ManifestError(str(spec.path), "wrong graph in the seq2seq pair", expected=role, got=spec.manifest.graph)
        missing = [n for n in names if n not in spec.input_names]
        if missing:
            raise ManifestError(str(spec.path), f"the {role} graph lacks required inputs", expected=list(names),
                                got=spec.input_names)
    if es.precision != ds.precision:
        raise UsageError(str(path), "the encoder and decoder step have different precisions",
                         expected="one precision for the pair", got=[es.precision, ds.precision])
    return PairSpec(es, ds, ep, dp)


# ==================================================================================== backends
class PairBackend:
    """Runs one seq2seq pair: ``encode`` and ``step`` with graph-named arrays."""

    name = "pair"
    oracle = False

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def step(self, token, h, c, memory, lengths) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


class GraphPair(PairBackend):
    def __init__(self, kind: str, pair: PairSpec, enc: Backend, dec: Backend):
        self.pair, self.enc, self.dec = pair, enc, dec
        self.name = f"{kind}[{pair.label}]"
        self.oracle = kind in ("numpy", "reference")
        # onnx.reference ignores sequence_lens: its encoder runs one source at a time, cut to length
        self.per_sequence = getattr(enc, "ignores_sequence_lens", False)
        self.providers = getattr(dec, "providers", None)

    def _feeds(self, spec: GraphSpec, **arrays) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v, dtype=spec.spec(k).dtype) for k, v in arrays.items()}

    def encode(self, src, lengths):
        spec = self.pair.encoder
        if not self.per_sequence or np.all(lengths == src.shape[1]):
            return self.enc.run(self._feeds(spec, src=src, src_lengths=lengths))
        parts = [self.enc.run(self._feeds(spec, src=src[i:i + 1, :int(n)], src_lengths=lengths[i:i + 1]))
                 for i, n in enumerate(lengths)]
        mem = np.zeros((src.shape[0], src.shape[1], parts[0]["memory"].shape[-1]), dtype=parts[0]["memory"].dtype)
        for i, (n, p) in enumerate(zip(lengths, parts)):
            mem[i, :int(n)] = p["memory"][0]
        return {"memory": mem, "h_out": np.concatenate([p["h_out"] for p in parts], axis=1),
                "c_out": np.concatenate([p["c_out"] for p in parts], axis=1)}

    def step(self, token, h, c, memory, lengths):
        return self.dec.run(self._feeds(self.pair.decoder, token=token, h_in=h, c_in=c, memory=memory,
                                        src_lengths=lengths))


class TorchPair(PairBackend):
    def __init__(self, module, label: str):
        import torch

        for attr in ("encode", "decode_step"):
            if not callable(getattr(module, attr, None)):
                raise UsageError("--reference", "the PyTorch model is not a seq2seq model",
                                 expected="a Seq2Seq with encode() and decode_step()", got=type(module).__name__)
        self.torch, self.module, self.name = torch, module.eval(), label

    def _t(self, a, dtype):
        return self.torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    def encode(self, src, lengths):
        with self.torch.inference_mode():
            memory, h, c = self.module.encode(self._t(src, np.int64), self._t(lengths, np.int64))
        return {"memory": memory.numpy(), "h_out": h.numpy(), "c_out": c.numpy()}

    def step(self, token, h, c, memory, lengths):
        with self.torch.inference_mode():
            out = self.module.decode_step(self._t(token, np.int64), self._t(h, np.float32), self._t(c, np.float32),
                                          self._t(memory, np.float32), self._t(lengths, np.int64))
        return dict(zip(DEC_OUT, (t.numpy() for t in out)))


# ==================================================================================== running a pair
def teacher_forced(pair: PairBackend, src, lengths, tgt_in) -> dict[str, np.ndarray]:
    """Encoder outputs, and the decoder step's outputs at every step of ``tgt_in`` [b, U]
    (stacked on axis 1), the state carried by the pair itself."""
    enc = pair.encode(src, lengths)
    h, c = enc["h_out"], enc["c_out"]
    steps = []
    for t in range(tgt_in.shape[1]):
        o = pair.step(tgt_in[:, t], h, c, enc["memory"], lengths)
        h, c = o["h_out"], o["c_out"]
        steps.append(o)
    out = {f"encoder.{k}": enc[k] for k in ENC_OUT}
    for k in DEC_OUT:
        # states are [L, b, H] per step -> [L, b, U, H]; the others [b, ...] -> [b, U, ...]
        axis = 2 if k in ("h_out", "c_out") else 1
        out[f"decoder_step.{k}"] = np.stack([s[k] for s in steps], axis=axis)
    return out


def greedy(pair: PairBackend, src, lengths, max_len: int, bos: int, eos: int
           ) -> tuple[list[list[int]], np.ndarray]:
    """Greedy decoding as ``Seq2Seq.greedy``: tokens up to and including eos (or ``max_len``), and
    the logits of every step ``[b, steps, vocab]``."""
    enc = pair.encode(src, lengths)
    h, c = enc["h_out"], enc["c_out"]
    b = src.shape[0]
    token = np.full(b, bos, dtype=np.int64)
    done = np.zeros(b, dtype=bool)
    seqs: list[list[int]] = [[] for _ in range(b)]
    logits = []
    for _ in range(max_len):
        o = pair.step(token, h, c, enc["memory"], lengths)
        h, c = o["h_out"], o["c_out"]
        logits.append(o["logits"])
        token = o["logits"].argmax(-1).astype(np.int64)
        for i in np.flatnonzero(~done):
            seqs[i].append(int(token[i]))
        done |= token == eos
        if done.all():
            break
    return seqs, np.stack(logits, axis=1)


# ==================================================================================== inputs
@dataclass
class S2SCase:
    name: str
    src: np.ndarray          # int64 [b, S], pad after each length
    lengths: np.ndarray      # int32 [b]
    tgt_in: np.ndarray       # int64 [b, U]: bos + target[:-1]
    labels: np.ndarray | None = None       # [b, U'] targets ending in eos
    label_lengths: np.ndarray | None = None


def _vocab_size(pair: PairSpec) -> int:
    m = pair.manifest
    cfg = (m.extra or {}).get("model_config") or {} if m is not None else {}
    v = cfg.get("vocab_size") or (len(m.vocab) if m is not None and m.vocab else None)
    if not v:
        raise UsageError(pair.label, "cannot tell the vocabulary size to draw random tokens from",
                         expected="model_config.vocab_size or vocab in the manifest", got=None)
    return int(v)


def random_cases(pair: PairSpec, seed: int, bos: int, max_len: int) -> list[S2SCase]:
    rng = np.random.default_rng(seed)
    vocab = _vocab_size(pair)
    lo = 3 if vocab > 3 else 0  # ordinary tokens: not pad/bos/eos
    out = []
    for batch, time, varied in ((1, 4, False), (3, 9, True)):
        lengths = np.round(np.linspace(time, 1, batch)).astype(np.int32) if varied else np.full(batch, time, np.int32)
        src = rng.integers(lo, vocab, size=(batch, time)).astype(np.int64)
        src[np.arange(time)[None, :] >= lengths[:, None]] = 0
        tgt = rng.integers(lo, vocab, size=(batch, max_len)).astype(np.int64)
        tgt[:, 0] = bos
        out.append(S2SCase(f"batch={batch} src_time={time}" + (" varied-lengths" if varied else ""), src, lengths, tgt))
    return out


def run_data_case(run_dir, pair: PairSpec, bos: int, limit: int | None) -> S2SCase:
    from edgelstm.run_data import load_run_data

    data = load_run_data(run_dir, pair.manifest, max_rows=limit)
    if data.task != "seq2seq" or "src" not in data.arrays:
        raise DataError(data.source, "the run's data is not a seq2seq data set", expected="seq2seq", got=data.task)
    src = data.arrays["src"].astype(np.int64)
    vocab = _vocab_size(pair)
    for what, arr in (("src", src), ("targets", data.labels)):
        if arr.size and (arr.min() < 0 or arr.max() >= vocab):
            raise DataError(f"{data.source}:{what}", "token ids outside the model's vocabulary",
                            expected=f"0..{vocab - 1}", got=[int(arr.min()), int(arr.max())])
    y = data.labels.astype(np.int64)
    tgt_in = np.concatenate([np.full((y.shape[0], 1), bos, np.int64), y[:, :-1]], axis=1)
    return S2SCase(f"run data: {data.source}", src, data.arrays["lengths"].astype(np.int32), tgt_in, y,
                   data.label_lengths)


# ==================================================================================== verify
@dataclass
class _Cand:
    backend: PairBackend
    pair: PairSpec
    profile: Profile


def verify_pair(model, opts: VerifyOptions, *, reference=None) -> VerifyResult:
    """See :func:`edgelstm.verify.core.verify`; called by it for seq2seq exports."""
    checks, data = opts.checks, opts.data
    tol = Tolerances(parse_overrides(list(opts.atol), "--atol"), parse_overrides(list(opts.min_snr), "--min-snr"))
    tol.check_names(OUTPUT_NAMES)
    main = load_pair(model, trust_modified=opts.trust_modified)
    pairs = [main]
    for other in opts.against:
        pairs.append(load_pair(other, trust_modified=opts.trust_modified))
    result = VerifyResult(model=str(model), reference="")
    if data is not None:
        raise UsageError("--data", "seq2seq verification takes the run's own data (--reference RUN_DIR), "
                         "not an .npz", expected="no --data", got=str(data))

    module, torch_label = load_torch_reference(reference, model=opts.model_spec, checkpoint=opts.checkpoint)
    run_dir = Path(reference) if isinstance(reference, (str, os.PathLike)) else None
    baseline: PairBackend | None = TorchPair(module, torch_label) if module is not None else None
    providers = [resolve_provider(d) for d in opts.devices]
    popts = opts.provider_options
    check_provider_options(popts, providers)
    cands: list[_Cand] = []
    for pair in pairs:
        prof = profile_for(pair.precision)
        n_threads = 1 if pair.precision in INT8_PRECISIONS else opts.threads
        for prov in dict.fromkeys(providers):
            enc = OrtBackend(pair.encoder, prov, threads=n_threads, provider_options=popts.get(prov))
            dec = OrtBackend(pair.decoder, prov, threads=n_threads, provider_options=popts.get(prov))
            kind = prov.replace("ExecutionProvider", "").lower()
            cands.append(_Cand(GraphPair(f"ort:{kind}", pair, enc, dec), pair,
                               select_profile(pair.precision, prov, popts.get(prov))))
        for oracle in opts.oracles:
            if pair.precision != "fp32":
                result.skip(f"{oracle}[{pair.label}]", f"the {oracle} oracle evaluates fp32 graphs only ({pair.precision})")
                continue
            cls = {"reference": ReferenceBackend, "numpy": NumpyBackend}[oracle]
            try:
                gp = GraphPair(oracle, pair, cls(pair.enc_proto, pair.encoder), cls(pair.dec_proto, pair.decoder))
            except Exception as e:
                result.skip(f"{oracle}[{pair.label}]", describe_error(e))
                continue
            cands.append(_Cand(gp, pair, prof))
    if baseline is None:
        baseline = take_baseline(
            result, cands,
            [lambda c: c.pair is main and c.backend.name.startswith(("numpy[", "reference[")),
             lambda c: c.pair is main and c.pair.precision == "fp32"],
            expected="--reference RUN_DIR, --model FILE.py:FACTORY, or an fp32 pair",
            got=f"{main.label} ({main.precision})")
    result.reference = baseline.name
    result.candidates = [c.backend.name for c in cands]
    result.config = {"steps": opts.steps, "seed": opts.seed, "devices": list(opts.devices), "checks": list(checks),
                     "threads": opts.threads, "against": [str(a) for a in opts.against], "data": None,
                     "tolerances": tol.to_dict(), "task": "seq2seq",
                     "files": {p.label: [str(p.encoder.path), str(p.decoder.path)] for p in pairs},
                     "precisions": {p.label: p.precision for p in pairs},
                     "candidate_precisions": {c.backend.name: c.pair.precision for c in cands},
                     "candidate_profiles": {c.backend.name: c.profile.precision for c in cands},
                     "provider_options": popts}
    ort_pairs = [c.backend for c in cands if isinstance(c.backend.dec, OrtBackend)] \
        if cands and all(isinstance(c.backend, GraphPair) for c in cands) else []
    result.environment = environment((b.name, b.dec) for b in ort_pairs)

    m = main.manifest
    sp = {**SPECIAL_TOKENS, **((m.special_tokens if m is not None else None) or {})}
    bos, eos = int(sp["bos"]), int(sp["eos"])
    max_len = int(m.max_len) if m is not None and m.max_len else 16
    case_list = random_cases(main, opts.seed, bos, max_len)
    if run_dir is not None and opts.run_data:
        try:
            case_list.append(run_data_case(run_dir, main, bos, opts.data_limit))
            result.config["run_data"] = case_list[-1].name
        except (DataError, UnknownChoiceError) as e:
            result.skip("run data", describe_error(e))
    if case_list[-1].labels is not None:
        # decode at least as far as the longest label (eos included)
        max_len = max(max_len, int(case_list[-1].labels.shape[1]))
    result.config["max_len"] = max_len

    for check, why in SKIPPED_CHECKS.items():
        if check in checks:
            result.skip(check, why)
    if "outputs" in checks or "task" in checks:
        _check_outputs_task(result, baseline, cands, case_list, tol, checks, max_len, bos, eos)
    if "batch_invariance" in checks:
        _check_batch_invariance(result, cands, case_list[1], tol)
    return result


def _failed_run(result, cand, checks, e) -> None:
    if cand.backend.oracle and isinstance(e, UnsupportedError):  # an operator the oracle lacks
        result.skip(cand.backend.name, describe_error(e))
        return
    for check in ("outputs", "task"):
        if check in checks:
            result.add(CheckResult(check, cand.backend.name, result.reference, None, False,
                                   message=f"run failed: {describe_error(e)}"))


def _check_outputs_task(result, baseline, cands, case_list, tol, checks, max_len, bos, eos) -> None:
    ref_tf = [teacher_forced(baseline, c.src, c.lengths, c.tgt_in) for c in case_list]
    ref_gr = [greedy(baseline, c.src, c.lengths, max_len, bos, eos) for c in case_list]
    for cand in cands:
        try:
            got_tf = [teacher_forced(cand.backend, c.src, c.lengths, c.tgt_in) for c in case_list]
            got_gr = [greedy(cand.backend, c.src, c.lengths, max_len, bos, eos) for c in case_list] \
                if "task" in checks else []
        except Exception as e:
            _failed_run(result, cand, checks, e)
            continue
        if "outputs" in checks:
            for out in OUTPUT_NAMES:
                try:
                    ref = np.concatenate([r[out].ravel() for r in ref_tf]).astype(np.float64)
                    got = np.concatenate([g[out].ravel() for g in got_tf]).astype(np.float64)
                    per_case = [error_stats(r[out], g[out], name=out).max_abs for r, g in zip(ref_tf, got_tf)]
                except EdgeLSTMError as e:  # shape mismatch, named
                    result.add(CheckResult("outputs", cand.backend.name, result.reference, out, False, message=describe_error(e)))
                    continue
                s = error_stats(ref, got, name=out)
                ok, rule, why = tol.judge(out, s, cand.profile)
                worst = case_list[int(np.argmax(per_case))].name
                stats = {**s.to_dict(), "worst_case": worst,
                         "per_case_max_abs": dict(zip([c.name for c in case_list], per_case))}
                stats.pop("worst_index")
                result.add(CheckResult("outputs", cand.backend.name, result.reference, out, ok, rule,
                                       f"{out}: {why} (worst case: {worst})" if not ok else "",
                                       "all cases, teacher-forced" if out.startswith("decoder") else "all cases", stats))
        if "task" in checks:
            _check_task(result, cand, case_list, ref_tf, got_tf, ref_gr, got_gr, tol, eos)


def _task_groups(case_list):
    plain = [i for i, c in enumerate(case_list) if c.labels is None]
    groups = [("random sources", plain)] if plain else []
    return groups + [(c.name, [i]) for i, c in enumerate(case_list) if c.labels is not None]


def _tie_tol(tol: Tolerances, prof: Profile, ref: np.ndarray) -> float:
    out = "decoder_step.logits"
    atol = tol.atol_for(out, prof, float(np.max(np.abs(ref))) if ref.size else 0.0)
    if atol is None:  # int8: the noise level its SNR threshold allows
        snr = tol.snr_for(out, prof) or 20.0
        atol = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))) * 10 ** (-snr / 20) if ref.size else 0.0
    return atol


def _label_match(seqs: list[list[int]], labels: np.ndarray, lengths: np.ndarray | None, eos: int) -> np.ndarray:
    out = []
    for s, y, n in zip(seqs, labels, lengths if lengths is not None else [None] * len(seqs)):
        if n is None:
            hit = np.flatnonzero(y == eos)
            n = int(hit[0]) + 1 if hit.size else len(y)
        out.append(list(s) == [int(t) for t in y[:int(n)]])
    return np.array(out, dtype=bool)


def _check_task(result, cand, case_list, ref_tf, got_tf, ref_gr, got_gr, tol, eos) -> None:
    prof = cand.profile
    for group, idx in _task_groups(case_list):
        # 1. teacher-forced decisions (every step, ties excused)
        r_log = np.concatenate([ref_tf[i]["decoder_step.logits"].reshape(-1, ref_tf[i]["decoder_step.logits"].shape[-1])
                                for i in idx])
        g_log = np.concatenate([got_tf[i]["decoder_step.logits"].reshape(-1, got_tf[i]["decoder_step.logits"].shape[-1])
                                for i in idx])
        tie = _tie_tol(tol, prof, r_log)
        stats = top1_agreement(r_log, g_log, tie_tol=tie)
        problems = []
        if stats["agreement"] < prof.min_agreement:
            problems.append(f"decoder_step.logits: teacher-forced top-1 agreement {stats['agreement']:.4f} < "
                            f"{prof.min_agreement} ({stats['flips']} decisions changed beyond ties of {tie:.3g})")
        # 2. greedy decoding vs the reference's greedy decoding
        same, excused, lab_ref, lab_got, lab_adj = [], [], [], [], []
        for i in idx:
            r_seqs, r_logits = ref_gr[i]
            g_seqs, _ = got_gr[i]
            eq = np.array([a == b for a, b in zip(r_seqs, g_seqs)], dtype=bool)
            exc = np.zeros_like(eq)
            for b in np.flatnonzero(~eq):
                a, g = r_seqs[b], g_seqs[b]
                k = next(j for j in range(min(len(a), len(g))) if a[j] != g[j])
                margin = float(r_logits[b, k, a[k]] - r_logits[b, k, g[k]])
                exc[b] = margin <= tie  # the reference's own logits tie there: either token is within contract
            same.append(eq)
            excused.append(exc)
            c = case_list[i]
            if c.labels is not None:
                mr = _label_match(r_seqs, c.labels, c.label_lengths, eos)
                mg = _label_match(g_seqs, c.labels, c.label_lengths, eos)
                lab_ref.append(mr)
                lab_got.append(mg)
                lab_adj.append(np.where(exc, mr, mg))
        same_a, exc_a = np.concatenate(same), np.concatenate(excused)
        exact = float(same_a.mean())
        exact_adj = float((same_a | exc_a).mean())
        stats.update(exact_match=exact, exact_match_ties_excused=exact_adj, sequences=int(same_a.size),
                     tie_divergences=int(exc_a.sum()))
        if exact_adj < prof.min_agreement:
            problems.append(f"greedy decoding: {int((~(same_a | exc_a)).sum())} of {same_a.size} sequences differ "
                            f"from the reference's beyond ties of {tie:.3g} (exact match {exact:.4f})")
        rule = (f"teacher-forced top-1 and greedy exact match >= {prof.min_agreement} "
                f"(ties within {tie:.3g} excused)")
        if lab_ref:
            acc_ref = float(np.concatenate(lab_ref).mean())
            acc_got = float(np.concatenate(lab_got).mean())
            acc_adj = float(np.concatenate(lab_adj).mean())
            stats.update(label_exact_match=acc_got, reference_label_exact_match=acc_ref,
                         label_exact_match_ties_excused=acc_adj)
            rule += f"; exact match vs labels (ties excused) >= reference - {prof.max_accuracy_drop}"
            if acc_adj < acc_ref - prof.max_accuracy_drop:
                problems.append(f"exact match vs labels {acc_got:.4f} (ties excused {acc_adj:.4f}) vs reference "
                                f"{acc_ref:.4f} (drop > {prof.max_accuracy_drop})")
        result.add(CheckResult("task", cand.backend.name, result.reference, "decoder_step.logits", not problems, rule,
                               "; ".join(problems), group, stats))


def _check_batch_invariance(result, cands, case: S2SCase, tol) -> None:
    """Each source alone (cut to its length) vs inside the padded batch: src_lengths must mask."""
    for cand in cands:
        problems, worst = [], {}
        try:
            batched = teacher_forced(cand.backend, case.src, case.lengths, case.tgt_in)
            for i, n in enumerate(case.lengths):
                n = int(n)
                alone = teacher_forced(cand.backend, case.src[i:i + 1, :n], case.lengths[i:i + 1], case.tgt_in[i:i + 1])
                for out in OUTPUT_NAMES:
                    v = batched[out]
                    if out.endswith(("h_out", "c_out")):
                        inside = v[:, i:i + 1]
                    elif out in ("encoder.memory",):
                        inside = v[i:i + 1, :n]
                    elif out == "decoder_step.attention":
                        inside = v[i:i + 1, ..., :n]
                    else:
                        inside = v[i:i + 1]
                    s = error_stats(alone[out], inside, name=out)
                    ok, _, why = tol.judge(out, s, cand.profile)
                    if s.max_abs >= worst.get("max_abs", -1.0):
                        worst = {"max_abs": s.max_abs, "snr_db": s.snr_db, "cosine": s.cosine, "worst_output": out}
                    if not ok:
                        problems.append(f"source {i} (length {n}) {out}: {why}")
        except Exception as e:
            if cand.backend.oracle and isinstance(e, UnsupportedError):
                result.skip(f"batch_invariance [{cand.backend.name}]", describe_error(e))
                continue
            problems.append(f"run failed: {describe_error(e)}")
        result.add(CheckResult("batch_invariance", cand.backend.name, "source alone", None, not problems,
                               f"in padded batch == alone, {cand.profile.precision} profile", "; ".join(problems),
                               f"{case.name} lengths={case.lengths.tolist()}", worst))
