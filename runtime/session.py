"""Sessions: the one home of onnxruntime session setup (options, the thread rule, creation).

Every session edgelstm makes (the runtime, verify, inspect, the benchmark) is built here, so
the thread rule (``None`` or 0 = onnxruntime's default) and the optimization levels are spelled
once. Torch-free: numpy, onnxruntime and the standard library.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from edgelstm.errors import ModelFileError, UsageError
from edgelstm.runtime.integrity import read_model_bytes
from edgelstm.runtime.providers import ProviderPlan

NAN_MODES = ("raise", "pass")


@dataclass(frozen=True)
class LoadOptions:
    """How :func:`edgelstm.runtime.load` makes a model's session(s); checked when made.

    ``device``: ``auto``, ``cpu``, ``cuda``, ``tensorrt``, ``arm``, ``coreml``, ``nnapi``, ``qnn``
    or a list of onnxruntime provider names; ``threads``: intra-op threads (None or 0 =
    onnxruntime's default); ``fallback``: fall back to the next available provider (False raises
    :class:`~edgelstm.errors.ProviderUnavailableError`); ``provider_options``: provider name ->
    options; ``nan``: ``"raise"`` or ``"pass"`` for NaN/Inf inputs; ``session_options``: the
    caller's own ``onnxruntime.SessionOptions``, used as given (``threads`` must then stay None:
    set it, the graph optimization level and any other knob on those options);
    ``session_config``: session config entries added to the options; ``trust_modified``: load a
    file whose seal does not match, with a warning.
    """

    device: str | Sequence[str] = "auto"
    threads: int | None = None
    fallback: bool = True
    provider_options: dict[str, dict[str, Any]] | None = None
    nan: str = "raise"
    session_options: ort.SessionOptions | None = None
    session_config: dict[str, Any] | None = None
    trust_modified: bool = False

    def __post_init__(self) -> None:
        if self.nan not in NAN_MODES:
            raise UsageError("nan", "unknown NaN/Inf policy", expected=list(NAN_MODES), got=self.nan)
        object.__setattr__(self, "threads", check_threads(self.threads))
        if self.session_options is not None and self.threads is not None:
            raise UsageError("session_options", "threads given twice",
                             expected="set it on the SessionOptions you pass, or pass no session_options",
                             got=f"threads={self.threads!r}")


def read_model_file(path: str | os.PathLike) -> tuple[Path, bytes]:
    """Read and structurally check an ONNX file; raise :class:`ModelFileError` if it is not one."""
    return read_model_bytes(path)


def session_options(threads: int | None = None, *, inter_threads: int | None = None,
                    optimization: str = "all", record_placement: bool = True,
                    profile_prefix: str | None = None, base: ort.SessionOptions | None = None,
                    config: dict[str, Any] | None = None) -> ort.SessionOptions:
    """The session options edgelstm uses. ``base``: the caller's own ``SessionOptions``, used as
    given (only ``config`` entries and placement recording are added to it); ``config``: session
    config entries (``{"mlas.disable_kleidiai": "1"}``), values given as strings or numbers."""
    if base is not None:
        if not isinstance(base, ort.SessionOptions):
            raise UsageError("session_options", "not an onnxruntime.SessionOptions",
                             expected="onnxruntime.SessionOptions()", got=type(base).__name__)
        so = base
    else:
        so = _own_session_options(threads, inter_threads, optimization, profile_prefix)
    for key, value in (config or {}).items():
        if not isinstance(key, str) or isinstance(value, (dict, list, tuple, set)) or value is None:
            raise UsageError("session_config", "entries are name -> string (or number)",
                             expected='e.g. {"mlas.disable_kleidiai": "1"}', got=f"{key!r}: {value!r}")
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        try:
            so.add_session_config_entry(key, text)
        except Exception as e:  # onnxruntime refuses some keys/values with its own exception types
            raise UsageError("session_config", f"onnxruntime refused the entry {key!r}", got=str(e)[:200]) from None
    if record_placement:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return so



def _own_session_options(threads, inter_threads, optimization, profile_prefix) -> ort.SessionOptions:
    so = ort.SessionOptions()
    threads = check_threads(threads)
    if threads is not None:
        so.intra_op_num_threads = threads
    if inter_threads is not None:
        so.inter_op_num_threads = inter_threads
    levels = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise UsageError("optimization", "unknown graph optimization level", expected=list(levels), got=optimization)
    so.graph_optimization_level = levels[optimization]
    so.log_severity_level = 3  # errors only: onnxruntime warnings go through our own checks
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def check_threads(threads: Any) -> int | None:
    """The one rule for ``threads`` everywhere: an integer >= 0, or None; 0 and None both mean
    onnxruntime's default (0 is onnxruntime's own spelling of it)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise UsageError("threads", "intra-op thread count must be an integer >= 0 or None",
                         expected="an int >= 1, or 0 / None for onnxruntime's default", got=repr(threads))
    return int(threads)


def create_session(path: Path, plan: ProviderPlan, so: ort.SessionOptions,
                   data: bytes | None = None) -> ort.InferenceSession:
    """A session on ``path`` (or, for a model given as bytes, on ``data``; ``path`` names it)."""
    try:
        return ort.InferenceSession(str(path) if data is None else data, so, providers=plan.providers,
                                    provider_options=plan.options)
    except Exception as e:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(str(path), "onnxruntime cannot load this model", expected="a valid ONNX model",
                             got=first[:400]) from None
