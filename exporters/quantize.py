"""Quantize an exported edgelstm ONNX file: int8 (dynamic or static QDQ) or fp16.

``quantize(IN, OUT, mode, ...)`` is path in, path out, like onnxruntime's own functions, with the
options in a typed :class:`QuantizeOptions` and every invalid combination rejected before any
work is done. The result is written to a temporary name and renamed, so a failure never leaves a
half-written file.

Modes
-----
``int8-dynamic``
    ``onnxruntime.quantization.quantize_dynamic``: ``LSTM`` becomes ``com.microsoft.DynamicQuantizeLSTM``
    and ``MatMul``/``Gemm`` become integer ops. ``GRU`` (left in float by onnxruntime) is first
    rewritten by :mod:`edgelstm.exporters.gru_int8` into an input-projection ``MatMul`` plus a
    ``Scan`` whose per-step ``MatMul`` with ``R^T`` quantizes, so GRU weights become int8 too.
``int8-static``
    QDQ quantization with calibration on real data (MinMax, Entropy or Percentile) for the
    non-recurrent operators (head, attention projections). onnxruntime's QDQ quantizer has no
    recurrent operators (LSTM/GRU would stay float), so by default the recurrent weights get the
    dynamic treatment above (``recurrent="int8-dynamic"``); ``recurrent="float"`` keeps them float.
``fp16``
    ``onnxruntime.transformers.float16.convert_float_to_float16``. For ``target="cpu"`` the
    recurrent nodes (LSTM/GRU/RNN) stay float32, since onnxruntime's CPU provider has no fp16
    kernels for them and would cast around them anyway; ``target="gpu"`` converts them as well.

The output keeps the edgelstm manifest (``metadata_props["edgelstm"]``) with ``precision``
updated and the options under ``extra["quantization"]``.

The pipeline lives here; its parts each have their module: the options and the report
(:mod:`~edgelstm.exporters.quant_options`), calibration and evaluation data
(:mod:`~edgelstm.exporters.calibration`), the error measurement (:mod:`~edgelstm.exporters.quant_eval`),
the int8 and fp16 passes (:mod:`~edgelstm.exporters.quant_passes`, with :mod:`~edgelstm.exporters.int8_plan`
and :mod:`~edgelstm.exporters.gru_int8`).

Imports: those modules, onnx and onnxruntime, the runtime's integrity check, interface and model
load, :mod:`edgelstm.manifest`, :mod:`edgelstm.fileio`. Imported by ``edgelstm quantize``
(:mod:`edgelstm.cli.quantize`), the demo and the benchmarks; never by the runtime or verify.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from edgelstm.errors import DataError, UnsupportedError, UsageError
from edgelstm.exporters import quant_passes as passes
from edgelstm.exporters.calibration import CalibrationData, CalibrationReader, load_calibration, random_data
from edgelstm.exporters.int8_plan import plan_int8
from edgelstm.exporters.quant_eval import check_accuracy, evaluate, session
from edgelstm.exporters.quant_options import QuantizeJob, QuantizeOptions, QuantizeReport, options_from_keywords
from edgelstm.fileio import atomic_path
from edgelstm.manifest import SCHEMA_VERSION, Manifest
from edgelstm.runtime.integrity import set_manifest as _set_manifest  # the one manifest writer
from edgelstm.runtime.interface import Interface, pair_paths

log = logging.getLogger(__name__)


def quantize(model_path: str | os.PathLike, output_path: str | os.PathLike,
             mode: str | QuantizeOptions = "int8-dynamic", **keywords) -> QuantizeReport:
    """Quantize one ONNX file, or a seq2seq pair given by its stem.

    ``keywords`` are the fields of :class:`QuantizeOptions` (``per_channel``, ``method``,
    ``target``, ``keep_io_types``, ``recurrent``, ``gru``, ``calibration_samples``, ``batch_size``,
    ``threads``, ``force_int8``, ``accept_error``) and of :class:`QuantizeJob` (``calibration``,
    ``evaluate_error``, ``overwrite``, ``trust_modified``); ``mode`` is a mode name or a full
    :class:`QuantizeOptions` (then no option keywords). See :func:`quantize_file`.

    ``edgelstm export`` writes a seq2seq model ``OUT.onnx`` as ``OUT.encoder.onnx`` and
    ``OUT.decoder_step.onnx``. Given the stem (a path that does not exist while that pair does),
    both graphs are quantized into the pair of ``output_path``, each manifest naming its new
    companion; the returned report is the encoder's, with the decoder step's in ``companions``.
    """
    return quantize_model(model_path, output_path, *options_from_keywords(mode, keywords))


def quantize_model(model_path: str | os.PathLike, output_path: str | os.PathLike, options: QuantizeOptions,
                   job: QuantizeJob = QuantizeJob()) -> QuantizeReport:
    """:func:`quantize` with the typed options: one file (:func:`quantize_file`) or a seq2seq pair."""
    opts = options
    src, dst = Path(model_path), Path(output_path)
    pair = pair_paths(src)
    if not src.exists() and all(p.exists() for p in pair):
        return _quantize_pair(src, pair, dst, opts, job)
    return quantize_file(src, dst, opts, job)


def _quantize_pair(src: Path, pair: tuple[Path, Path], dst: Path, opts: QuantizeOptions,
                   job: QuantizeJob) -> QuantizeReport:
    """Both graphs of the seq2seq pair of stem ``src``, renamed into place together (never half a
    pair on disk)."""
    if dst.suffix.lower() != ".onnx":
        raise UsageError("-o", "output must be an .onnx file", expected="a path ending in .onnx", got=str(dst))
    if opts.mode == "int8-static":
        raise UnsupportedError(str(src), "int8-static is not available for a seq2seq pair: its decoder step "
                               "needs calibration data for memory and states, which a run directory or an "
                               ".npz of source sequences does not hold", expected="--mode int8-dynamic or fp16",
                               got="int8-static")
    out_pair = pair_paths(dst)
    if not job.overwrite and any(p.exists() for p in out_pair):
        raise UsageError(str(dst), "output exists", expected="a new path or --overwrite",
                         got=[str(p) for p in out_pair if p.exists()])
    roles = {"encoder": out_pair[0].name, "decoder_step": out_pair[1].name}
    reports = []
    # both graphs are written into a temporary folder beside the output and renamed into place
    # only when both succeeded
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent if str(dst.parent) else "."))
    try:
        for role, s_path, d_path in (("encoder", pair[0], out_pair[0]), ("decoder_step", pair[1], out_pair[1])):
            other = {k: v for k, v in roles.items() if k != role}
            # the run's (or npz's) source sequences feed the encoder; the decoder step's inputs
            # (memory, states) are not in them: its error is measured on random tokens and states
            role_job = replace(job, companions=other, calibration=job.calibration if role == "encoder" else None)
            reports.append(quantize_file(s_path, stage / d_path.name, opts, role_job))
        for d_path in out_pair:
            os.replace(stage / d_path.name, d_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    for r, d_path in zip(reports, out_pair):
        r.output = str(d_path)
    reports[0].companions = reports[1:]
    return reports[0]


def _check_paths(src: Path, dst: Path, job: QuantizeJob) -> None:
    """The output path and the calibration path, before anything is read."""
    if dst.suffix.lower() != ".onnx":
        raise UsageError("-o", "output must be an .onnx file", expected="a path ending in .onnx", got=str(dst))
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise UsageError("-o", "output would overwrite the input model", expected="a different path", got=str(dst))
    if dst.exists() and not job.overwrite:
        raise UsageError(str(dst), "output exists", expected="a new path or --overwrite", got="an existing file")
    if job.calibration is not None and not Path(job.calibration).exists():
        raise DataError(str(job.calibration), "calibration data not found",
                        expected="an .npz file or a run directory", got="no such path")


def quantize_file(model_path: str | os.PathLike, output_path: str | os.PathLike, options: QuantizeOptions,
                  job: QuantizeJob = QuantizeJob()) -> QuantizeReport:
    """Quantize ``model_path`` into ``output_path`` and measure the error against the float model.

    Errors: :class:`UnknownChoiceError` / :class:`UsageError` for bad options (raised before
    anything is read), :class:`ModelFileError` for a missing or non-ONNX input,
    :class:`DataError` for unreadable calibration data, :class:`UnsupportedError` for a model the
    mode cannot take (already quantized, GRU options the rewrite cannot keep...).
    The input goes through the runtime's integrity check (seal and manifest schema); with
    ``job.trust_modified`` a file that fails the seal check is quantized but its output is left
    unsealed, so it is refused as modified in turn: quantize never re-seals a modified file.
    """
    opts = options.validate(has_calibration=job.calibration is not None)
    src, dst = Path(model_path), Path(output_path)
    _check_paths(src, dst, job)

    import onnx

    from edgelstm.runtime.integrity import read_model_bytes, seal_problem
    from edgelstm.runtime.model import Model
    from edgelstm.runtime.session import LoadOptions

    # the runtime's own load (the integrity check, then the manifest against the graph): what run
    # refuses, quantize refuses
    src_path, src_bytes = read_model_bytes(src)
    loaded = Model(src_path, src_bytes, LoadOptions(device="cpu", threads=1, trust_modified=job.trust_modified))
    manifest = loaded.manifest
    sealed = seal_problem(src_bytes, str(src)) is None
    model = passes.load_model(src)
    why = passes.already_quantized(model, manifest)
    if why:
        raise UnsupportedError(str(src), "model is already quantized", expected="an fp32 model", got=why)
    float_model = onnx.ModelProto()
    float_model.CopyFrom(model)
    sess_inputs = session(float_model.SerializeToString(), opts.threads, subject=str(src)).get_inputs()
    iface = _interface(loaded, model)
    data = load_calibration(job.calibration, iface, manifest) if job.calibration is not None else None
    if data is not None and len(data) == 0:
        raise DataError(str(job.calibration), "calibration data holds no sequences", expected=">= 1", got=0)

    report = QuantizeReport(input=str(src), output=str(dst), options=asdict(opts), size_before=src.stat().st_size,
                            size_after=0, ops_before=passes.op_counts(model), ops_after={})
    feed = _Feed(iface, manifest, sess_inputs, data)
    with tempfile.TemporaryDirectory(prefix="edgelstm-quant-") as tmp:
        result = _apply_mode(model, float_model, opts, report, feed, Path(tmp), str(src))
        out_model = onnx.load(str(result))
        if report.gru_rewritten:  # the quantizer sorts by explicit inputs; the GRU If reads the outer scope
            from edgelstm.exporters.gru_int8 import finish_quantized

            finish_quantized(out_model)
        _finish_manifest(out_model, manifest, opts, report, data, job.companions, seal=sealed)
        report.ops_after = passes.op_counts(out_model)
        # the file to evaluate must be the file we ship: write it, evaluate, then publish
        final = Path(tmp) / "final.onnx"
        onnx.save(out_model, str(final))
        try:
            onnx.checker.check_model(str(final))
        except onnx.checker.ValidationError as e:
            raise UnsupportedError(str(src), f"{opts.mode} produced an invalid model", expected="a valid ONNX model",
                                   got=str(e).splitlines()[0]) from None
        if job.evaluate_error:
            _measure(float_model, final, opts, report, feed)
        if sealed and manifest is not None:  # what is shipped passes the check every reader runs
            from edgelstm.runtime.integrity import check_model_bytes

            check_model_bytes(final.read_bytes(), str(dst))
        with atomic_path(dst) as out_tmp:  # temp name beside dst, renamed onto it on success
            shutil.copyfile(final, out_tmp)
        report.size_after = dst.stat().st_size
    log.info("quantized %s -> %s (%s)", src, dst, opts.mode)
    return report


class _Feed:
    """What the passes and the measurement feed the graph from: its interface, manifest, session
    inputs and the calibration data (None: none given)."""

    def __init__(self, iface: Interface, manifest: Manifest | None, sess_inputs, data: CalibrationData | None):
        self.iface, self.manifest, self.sess_inputs, self.data = iface, manifest, sess_inputs, data

    def reader(self, opts: QuantizeOptions) -> CalibrationReader:
        return CalibrationReader(self.data, self.iface, self.sess_inputs, opts, self.manifest)


def _apply_mode(model, float_model, opts: QuantizeOptions, report: QuantizeReport, feed: _Feed, tmp: Path,
                subject: str) -> Path:
    """Run the mode's passes on ``model``; return the path of the quantized (unfinished) graph."""
    import onnx

    stage, result = tmp / "stage.onnx", tmp / "result.onnx"
    if opts.mode == "fp16":
        onnx.save(passes.fp16(model, opts, report), str(result))
        return result
    passes.name_nodes(model)
    decisions = plan_int8(model, target=opts.target, force=opts.force_int8)
    report.int8_decisions = [d.to_dict() for d in decisions]
    paying = {d.node for d in decisions if d.int8}
    if not paying:
        report.notes.append(f"int8 does not pay for any node of this model on --target {opts.target}: "
                            "the output keeps fp32 (--force-int8 quantizes anyway)")
        onnx.save(float_model, str(result))
        return result
    if opts.mode == "int8-static" and opts.recurrent == "float":
        model, recurrent_names, new_nodes = passes.prepare_int8(model, replace(opts, gru="float"), report, paying)
        report.kept_float += [f"{n.name} (LSTM: --recurrent float)" for n in passes.recurrent_nodes(model)
                              if n.op_type == "LSTM" and n.name in paying]
        recurrent_names = []
    else:
        model, recurrent_names, new_nodes = passes.prepare_int8(model, opts, report, paying)
    onnx.save(model, str(stage))
    recurrent = {n.name for n in passes.recurrent_nodes(model)}
    if opts.mode == "int8-dynamic":
        other = sorted(paying - recurrent - set(report.gru_rewritten))
        passes.run_dynamic(stage, result, opts, recurrent_names + other, subject)
        return result
    static_out = tmp / "static.onnx"
    # every node of the GRU rewrite, every recurrent node and every node int8 does not pay for
    # stays out of QDQ
    exclude = sorted(set(new_nodes) | recurrent | {d.node for d in decisions if not d.int8})
    passes.run_static(stage, static_out if recurrent_names else result, opts, feed.reader(opts), exclude, subject)
    if recurrent_names:
        passes.run_dynamic(static_out, result, opts, recurrent_names, subject)
    return result


def _measure(float_model, final: Path, opts: QuantizeOptions, report: QuantizeReport, feed: _Feed) -> None:
    """The error of ``final`` against the float model, on the calibration data or random inputs."""
    eval_data = feed.data if feed.data is not None else random_data(feed.iface, feed.manifest, feed.sess_inputs)
    if eval_data is None:
        report.notes.append("no data to measure the error on: an input has a size nothing determines "
                            "(pass --calibration DATA.npz)")
        return
    report.data_source = eval_data.source
    if opts.mode == "fp16" and opts.target == "gpu":
        report.notes.append("error measured on the CPU provider (fp16 kernels differ on GPU)")
    manifest = feed.manifest
    report.errors, report.metric, report.samples = evaluate(
        float_model, final, eval_data, opts, task=manifest.task if manifest else None, iface=feed.iface,
        manifest=manifest)
    check_accuracy(report, opts)


def _interface(loaded, model) -> Interface:
    """The runtime's interface of the float model, with token ranges read off its embedding tables."""
    from edgelstm.runtime.interface import token_ranges

    return loaded.interface.with_token_ranges(token_ranges(model.graph))


def _finish_manifest(out_model, manifest: Manifest | None, opts: QuantizeOptions, report: QuantizeReport,
                     data: CalibrationData | None, companions: dict[str, str] | None = None, *,
                     seal: bool = True) -> None:
    if manifest is None:
        report.notes.append("input has no edgelstm manifest; the output has none either")
        return
    m = Manifest.from_json(manifest.to_json())
    if opts.mode == "fp16" or any(d["int8"] for d in report.int8_decisions):
        m.precision = opts.mode  # else int8 paid for no node: the file is the fp32 one
    for imp in out_model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            m.opset = imp.version
    if opts.mode == "fp16" and not opts.keep_io_types:
        for spec in list(m.inputs) + list(m.outputs):
            if spec.dtype == "float32":
                spec.dtype = "float16"
        for s in m.states:
            if s.dtype == "float32":
                s.dtype = "float16"
    info = {k: v for k, v in asdict(opts).items()
            if v is not None and k not in ("batch_size", "threads", "accept_error")}
    info["gru_rewritten"] = report.gru_rewritten
    info["kept_float"] = report.kept_float
    if report.int8_decisions:  # the reasons are in the report; the file keeps which node got what
        info["int8_nodes"] = [d["node"] for d in report.int8_decisions if d["int8"]]
        info["float_nodes"] = [d["node"] for d in report.int8_decisions if not d["int8"]]
    if data is not None:
        info["calibration"] = {"source": data.source, "samples": min(len(data), opts.calibration_samples)}
    import onnxruntime

    from edgelstm.runtime.integrity import DIGEST_KEY, SEAL_KEY, seal_proto  # stdlib only

    m.extra = {k: v for k, v in m.extra.items() if k != DIGEST_KEY}
    m.extra["quantization"] = info
    if companions is not None:
        m.companions = dict(companions)
    m.producer = {**m.producer, "onnxruntime": onnxruntime.__version__}
    m.schema_version = SCHEMA_VERSION
    m.validate(source=report.output)
    _set_manifest(out_model, m)
    out_model.producer_name = "edgelstm"
    if seal:  # the graph changed: re-seal it, or the runtime would (rightly) call the file modified
        seal_proto(out_model)
    else:
        for prop in [p for p in out_model.metadata_props if p.key == SEAL_KEY]:
            out_model.metadata_props.remove(prop)
        report.notes.append("the input failed the seal check (--trust-modified): the output is not sealed")


__all__ = ["QuantizeJob", "QuantizeOptions", "QuantizeReport", "quantize", "quantize_file", "quantize_model"]
