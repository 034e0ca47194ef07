"""The verification harness: run every backend on the same inputs and judge every check.

Seq2seq exports (an encoder / decoder-step pair) go to :mod:`edgelstm.verify.seq2seq`.

``verify(model, options, reference=...)`` returns a :class:`~edgelstm.verify.result.VerifyResult`;
it never stops at the first failure. Checks (docs/DESIGN.md):

1. ``outputs``          each candidate vs the reference backend, per output: max/mean/p99 abs,
                        max rel, cosine, SNR; judged by the candidate's precision profile.
2. ``task``             top-1 agreement (classifiers, labellers); accuracy vs labels when given.
   (both in :mod:`edgelstm.verify.checks_task`)
3. ``streaming``        chunks of 1, 4, 16 with carried state vs the whole sequence.
4. ``drift``            a long sequence (``steps``) streamed through each backend; error vs time
                        step as a curve with its trend; growing state error fails.
5. ``batch_invariance`` a sample alone vs the same sample inside a padded batch with lengths.
   ``state_roundtrip``  state snapshotted (serialised and reloaded) mid-sequence and resumed.
   (3 to 5 in :mod:`edgelstm.verify.checks_state`)

Imports numpy, the runtime's providers and the verify modules; imported lazily by
``edgelstm.verify.verify`` (the public entry) and ``edgelstm.cli.verify``.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgelstm.errors import DataError, UnknownChoiceError, UsageError
from edgelstm.run_data import load_run_data
from edgelstm.runtime import providers as _providers
from edgelstm.verify import inputs as inp
from edgelstm.verify.backends import (Backend, GraphSpec, NumpyBackend, OrtBackend, ReferenceBackend,
                                      TorchBackend, load_graph, load_torch_reference, resolve_provider)
from edgelstm.verify.candidate import Candidate
from edgelstm.verify.checks_state import check_batch_invariance, check_drift, check_roundtrip, check_streaming
from edgelstm.verify.checks_task import check_outputs
from edgelstm.verify.common import describe_error, environment, take_baseline
from edgelstm.verify.options import VerifyOptions
from edgelstm.verify.result import VerifyResult
from edgelstm.verify.tolerance import INT8_PRECISIONS, Tolerances, parse_overrides, profile_for, select_profile

log = logging.getLogger("edgelstm.verify")

SME_NOTE = ("this CPU has SME: onnxruntime's KleidiAI int8 kernels quantize activations per row, so int8 "
            "outputs differ from x86 / non-SME results by about the quantization error (1e-3), not 1e-7; "
            "int8 is judged here by SQNR and the task, as everywhere. For x86-identical int8 results set "
            "the session option mlas.disable_kleidiai=1 (docs/ARM.md)")


def verify(model: str | os.PathLike, options: VerifyOptions | None = None, *, reference: Any = None,
           **fields: Any) -> VerifyResult:
    """Verify an exported model (and quantized or other files ``options.against`` it).

    ``options`` is a :class:`~edgelstm.verify.options.VerifyOptions`; its fields may also be
    given as keywords (``verify(path, steps=500, against=[q])``), replacing those of ``options``.

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
    opts = VerifyOptions.build(options, **fields)
    from edgelstm.verify.seq2seq import resolve_pair, verify_pair

    if resolve_pair(model) is not None:  # OUT.onnx stem, OUT.encoder.onnx or OUT.decoder_step.onnx
        return verify_pair(model, opts, reference=reference)
    tol = Tolerances(parse_overrides(list(opts.atol), "--atol"), parse_overrides(list(opts.min_snr), "--min-snr"))
    proto, spec = load_graph(model, trust_modified=opts.trust_modified)
    graphs = [(proto, spec)]
    for other in opts.against:
        o_proto, o_spec = load_graph(other, trust_modified=opts.trust_modified)
        if o_spec.input_names != spec.input_names or o_spec.output_names != spec.output_names:
            raise UsageError(str(other), "--against model has different inputs/outputs than the model",
                             expected={"inputs": spec.input_names, "outputs": spec.output_names},
                             got={"inputs": o_spec.input_names, "outputs": o_spec.output_names})
        graphs.append((o_proto, o_spec))
    tol.check_names(spec.output_names)
    result = VerifyResult(model=str(model), reference="")

    # ---------------------------------------------------------------- backends
    module, torch_label = load_torch_reference(reference, model=opts.model_spec, checkpoint=opts.checkpoint)
    run_dir = Path(reference) if isinstance(reference, (str, os.PathLike)) else None
    baseline: Backend | None = TorchBackend(module, spec, label=torch_label) if module is not None else None
    candidates = _candidates(result, graphs, opts)
    if baseline is None:
        baseline = take_baseline(
            result, candidates,
            [lambda c: c.backend.name.startswith("numpy[") and c.spec is spec,
             lambda c: c.backend.name.startswith("reference[") and c.spec is spec,
             lambda c: c.spec is spec and c.spec.precision == "fp32"],
            expected="--reference RUN_DIR, --model FILE.py:FACTORY, or an fp32 MODEL.onnx",
            got=f"{spec.label} ({spec.precision})")
    result.reference = baseline.name
    result.candidates = [c.backend.name for c in candidates]
    result.config = {"steps": opts.steps, "seed": opts.seed, "devices": list(opts.devices),
                     "checks": list(opts.checks), "chunks": list(opts.chunks), "drift_chunk": opts.drift_chunk,
                     "threads": opts.threads, "against": [str(a) for a in opts.against],
                     "data": str(opts.data) if opts.data else None, "tolerances": tol.to_dict(),
                     "precisions": {g.label: g.precision for _, g in graphs},
                     "candidate_precisions": {c.backend.name: c.spec.precision for c in candidates},
                     "candidate_profiles": {c.backend.name: c.profile.precision for c in candidates},
                     "provider_options": opts.provider_options}
    result.environment = environment((c.backend.name, c.backend) for c in candidates
                                     if isinstance(c.backend, OrtBackend))
    if any(c.spec.precision in INT8_PRECISIONS for c in candidates) and _providers.cpu_has_sme():
        result.notes.append(SME_NOTE)

    if spec.x is None and spec.manifest is not None and spec.manifest.graph != "model":
        result.skip("all checks", f"{spec.label} is a {spec.manifest.graph if spec.manifest else 'custom'} graph "
                    "without one data input that has a batch and a time axis (seq2seq exports are verified as their encoder / "
                    "decoder_step pair: pass OUT.onnx, OUT.encoder.onnx or OUT.decoder_step.onnx)")
        return result

    # ---------------------------------------------------------------- inputs
    case_list = inp.random_cases(spec, opts.seed, opts.cases)
    if opts.data is not None:
        case_list.append(inp.load_npz(opts.data, spec))
    if run_dir is not None and opts.run_data:
        rd = _run_data(result, run_dir, spec, opts.data_limit)
        if rd is not None:
            case_list.append(inp.run_data_case(rd, spec))
    rng = np.random.default_rng(opts.seed + 1)

    checks = opts.checks
    if "outputs" in checks or "task" in checks:
        check_outputs(result, baseline, spec, candidates, case_list, tol, checks)
    if "streaming" in checks:
        check_streaming(result, candidates, spec, tol, opts.chunks, rng)
    if "drift" in checks and opts.steps > 0:
        check_drift(result, baseline, candidates, spec, tol, opts.steps, opts.drift_chunk, rng)
    if "batch_invariance" in checks:
        check_batch_invariance(result, candidates, spec, tol, rng)
    if "state_roundtrip" in checks:
        check_roundtrip(result, candidates, spec, tol, rng)
    return result


def _candidates(result: VerifyResult, graphs: list, opts: VerifyOptions) -> list[Candidate]:
    """onnxruntime on every device, then the fp32 oracles, for every graph; an oracle that cannot
    run a graph is skipped with the reason."""
    providers = [resolve_provider(d) for d in opts.devices]
    popts = opts.provider_options
    _providers.check_provider_options(popts, providers)
    candidates: list[Candidate] = []
    for g_proto, g_spec in graphs:
        prof = profile_for(g_spec.precision)
        # int8 recurrent outputs depend on the intra-op thread count: int8 always runs on one
        n_threads = 1 if g_spec.precision in INT8_PRECISIONS else opts.threads
        for prov in dict.fromkeys(providers):
            candidates.append(Candidate(OrtBackend(g_spec, prov, threads=n_threads, provider_options=popts.get(prov)),
                                        g_spec, select_profile(g_spec.precision, prov, popts.get(prov))))
        for oracle in opts.oracles:
            cls = {"reference": ReferenceBackend, "numpy": NumpyBackend}[oracle]
            if g_spec.precision != "fp32":
                result.skip(f"{oracle}[{g_spec.label}]", f"the {oracle} oracle evaluates fp32 graphs only ({g_spec.precision})")
                continue
            try:
                b = cls(g_proto, g_spec)
            except Exception as e:  # an operator the oracle does not implement, for instance
                result.skip(f"{oracle}[{g_spec.label}]", describe_error(e))
                continue
            candidates.append(Candidate(b, g_spec, prof))
    return candidates


def _run_data(result, run_dir: Path, spec: GraphSpec, limit: int | None):
    """The run's test split, or None (with the reason in ``skipped``) when it has none to give."""
    try:
        data = load_run_data(run_dir, spec.manifest, max_rows=limit)
    except (DataError, UnknownChoiceError) as e:  # no data set in the config, a file that moved...
        result.skip("run data", describe_error(e))
        return None
    result.config["run_data"] = data.source
    return data
