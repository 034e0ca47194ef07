"""Quantization options and the report: what ``quantize`` is asked for and what it did.

:class:`QuantizeOptions` decides what is written (validated in one place, :meth:`QuantizeOptions.validate`);
:class:`QuantizeJob` how the pipeline runs (where the data is, overwrite, the seal rule);
:func:`options_from_keywords` turns the keyword form of :func:`edgelstm.exporters.quantize.quantize`
into both. :class:`QuantizeReport` is the result.

Imports: the standard library, :mod:`edgelstm.errors`, :mod:`edgelstm.units` and
:mod:`edgelstm.exporters.int8_plan` (no onnx, no torch; onnxruntime only inside ``validate``,
through the runtime's thread rule). Imported by every
``exporters/quant*`` module, :mod:`edgelstm.exporters.calibration` and the CLI's ``quantize``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from edgelstm.errors import UnknownChoiceError, UnsupportedError, UsageError
from edgelstm.exporters.int8_plan import Int8Decision
from edgelstm.units import format_size

MODES = ("int8-dynamic", "int8-static", "fp16")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("cpu", "gpu")
RECURRENT_CHOICES = ("int8-dynamic", "float")  # what int8-static does with LSTM/GRU weights


@dataclass(frozen=True)
class QuantizeOptions:
    """Everything that decides what ``quantize`` writes. Validated by :meth:`validate`."""

    mode: str                                  # one of MODES
    per_channel: bool = False                  # int8: one scale per output channel of each weight
    method: str | None = None                  # int8-static calibration: minmax (default), entropy, percentile
    target: str = "cpu"                        # cpu | gpu: fp16 keeps recurrent nodes fp32 on cpu
    keep_io_types: bool | None = None          # fp16: keep graph inputs/outputs float32 (default True)
    recurrent: str | None = None               # int8-static: "int8-dynamic" (default) or "float"
    gru: str = "int8"                          # int8: "int8" rewrites GRU for int8 weights, "float" leaves it
    calibration_samples: int = 512             # at most this many sequences are used to calibrate / evaluate
    batch_size: int = 32                       # sequences per onnxruntime call while calibrating / evaluating
    threads: int | None = 1                    # intra-op threads when evaluating (int8 LSTM output depends on
                                               # it); None or 0: onnxruntime's default (the one thread rule)
    force_int8: bool = False                   # int8: quantize every node the mode can take, even where int8
                                               # is slower than float (see int8_plan.py)
    accept_error: bool = False                 # write the output even when it is far off (see MIN_SQNR_DB)

    def validate(self, *, has_calibration: bool) -> "QuantizeOptions":
        """Reject unknown names and option combinations that would be ignored; fill defaults."""
        if self.mode not in MODES:
            raise UnknownChoiceError("--mode", "unknown quantization mode", expected=list(MODES), got=self.mode)
        if self.target not in TARGETS:
            raise UnknownChoiceError("--target", "unknown target", expected=list(TARGETS), got=self.target)
        if self.gru not in ("int8", "float"):
            raise UnknownChoiceError("gru", "unknown GRU treatment", expected=["int8", "float"], got=self.gru)
        if self.method is not None and self.method not in CALIBRATION_METHODS:
            raise UnknownChoiceError("--method", "unknown calibration method",
                                     expected=list(CALIBRATION_METHODS), got=self.method)
        if self.recurrent is not None and self.recurrent not in RECURRENT_CHOICES:
            raise UnknownChoiceError("--recurrent", "unknown recurrent treatment",
                                     expected=list(RECURRENT_CHOICES), got=self.recurrent)
        from edgelstm.runtime.session import check_threads  # the one thread rule (imports onnxruntime)

        check_threads(self.threads)
        for name, value in (("calibration_samples", self.calibration_samples), ("batch_size", self.batch_size)):
            if not isinstance(value, int) or value < 1:
                raise UsageError(name, "must be a positive integer", expected=">= 1", got=value)
        if self.mode == "int8-static":
            if not has_calibration:
                raise UsageError("--calibration", "int8-static needs calibration data",
                                 expected="an .npz of graph inputs or a run directory", got="nothing")
        else:
            if self.method is not None:
                raise UsageError("--method", "a calibration method only applies to int8-static",
                                 expected="no --method", got=f"{self.method} with {self.mode}")
            if self.recurrent is not None:
                raise UsageError("--recurrent", "only applies to int8-static",
                                 expected="no --recurrent", got=f"{self.recurrent} with {self.mode}")
        if self.mode == "fp16":
            if self.keep_io_types is False and self.target == "cpu":
                raise UsageError("--fp16-io", "float16 inputs/outputs need fp16 compute",
                                 expected="--target gpu", got="--target cpu")
            if self.per_channel:
                raise UsageError("--per-channel", "per-channel scales only apply to int8 modes",
                                 expected="int8-dynamic or int8-static", got=self.mode)
            if self.force_int8:
                raise UsageError("--force-int8", "only applies to int8 modes",
                                 expected="int8-dynamic or int8-static", got=self.mode)
        else:
            if self.keep_io_types is not None:
                raise UsageError("--keep-io-types", "only applies to fp16",
                                 expected="no --keep-io-types/--fp16-io", got=f"set with {self.mode}")
            if self.target == "gpu" and (self.mode == "int8-dynamic" or self.recurrent != "float"):
                raise UnsupportedError(
                    "--target", "int8 recurrent kernels (DynamicQuantizeLSTM, MatMulInteger) exist only on "
                    "onnxruntime's CPU provider", expected="--target cpu, or int8-static with --recurrent float "
                    "(QDQ, for TensorRT), or fp16", got=f"gpu with {self.mode}")
        d = asdict(self)
        if self.mode == "int8-static":
            d["method"] = self.method or "minmax"
            d["recurrent"] = self.recurrent or "int8-dynamic"
        if self.mode == "fp16":
            d["keep_io_types"] = True if self.keep_io_types is None else bool(self.keep_io_types)
        return QuantizeOptions(**d)


@dataclass
class OutputError:
    """Quantized vs float on one graph output."""

    name: str
    snr_db: float
    max_abs: float
    mean_abs: float


@dataclass
class QuantizeReport:
    """What ``quantize`` did and how far the result is from the float model."""

    input: str
    output: str
    options: dict[str, Any]
    size_before: int
    size_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    gru_rewritten: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)   # recurrent nodes left in float, and why
    int8_decisions: list[dict] = field(default_factory=list)  # int8 modes: every node's int8-or-float decision
    data_source: str | None = None                        # where the error was measured
    samples: int = 0
    errors: list[OutputError] = field(default_factory=list)
    metric: dict[str, Any] | None = None                  # {"name", "float", "quantized", "delta"}
    notes: list[str] = field(default_factory=list)
    companions: list["QuantizeReport"] = field(default_factory=list)  # seq2seq: the decoder step's report

    @property
    def ratio(self) -> float:
        return self.size_before / max(self.size_after, 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d

    def lines(self) -> list[str]:
        """Human-readable summary (the CLI prints these)."""
        out = [f"{self.options['mode']}: {self.input} -> {self.output}",
               f"size: {format_size(self.size_before)} -> {format_size(self.size_after)} ({self.ratio:.2f}x smaller)"]
        if self.gru_rewritten:
            out.append(f"GRU rewritten for int8 weights: {', '.join(self.gru_rewritten)}")
        out += [f"kept float: {k}" for k in self.kept_float]
        out += [f"  {Int8Decision(**d).line()}" for d in self.int8_decisions]
        if self.errors:
            out.append(f"error vs float on {self.data_source} ({self.samples} sequences):")
            out += [f"  {e.name}: SQNR {e.snr_db:.1f} dB, max abs {e.max_abs:.3g}, mean abs {e.mean_abs:.3g}"
                    for e in self.errors]
        if self.metric:
            m = self.metric
            out.append(f"{m['name']}: float {m['float']:.4f}, quantized {m['quantized']:.4f} "
                       f"(delta {m['delta']:+.4f})")
        out += [f"note: {n}" for n in self.notes]
        for c in self.companions:
            out += c.lines()
        return out



@dataclass(frozen=True)
class QuantizeJob:
    """How one ``quantize`` call runs, beside what it writes (:class:`QuantizeOptions`)."""

    calibration: str | os.PathLike | None = None  # an .npz of graph inputs or a run directory
    evaluate_error: bool = True                   # measure the output against the float model
    overwrite: bool = True                        # replace an existing output
    trust_modified: bool = False                  # quantize an input that fails the seal check (output unsealed)
    companions: dict[str, str] | None = None      # seq2seq: the other graph of the pair, by role


_OPTION_FIELDS = frozenset(f.name for f in fields(QuantizeOptions)) - {"mode"}
_JOB_FIELDS = frozenset(f.name for f in fields(QuantizeJob))


def options_from_keywords(mode: str | QuantizeOptions, keywords: dict[str, Any]
                          ) -> tuple[QuantizeOptions, QuantizeJob]:
    """The keyword form (``quantize(src, dst, "int8-dynamic", threads=1, calibration=...)``) as the
    two option objects; a full :class:`QuantizeOptions` as ``mode`` takes no option keywords."""
    unknown = sorted(set(keywords) - _OPTION_FIELDS - _JOB_FIELDS)
    if unknown:
        raise TypeError(f"quantize() got unexpected keyword arguments {unknown}")
    job = QuantizeJob(**{k: v for k, v in keywords.items() if k in _JOB_FIELDS})
    given = {k: v for k, v in keywords.items() if k in _OPTION_FIELDS}
    if isinstance(mode, QuantizeOptions):
        if given:
            raise TypeError(f"quantize() got option keywords {sorted(given)} beside a QuantizeOptions")
        return mode, job
    return QuantizeOptions(mode=mode, **given), job
