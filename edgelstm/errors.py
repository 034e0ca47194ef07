"""Typed errors. Every user-facing failure is a subclass of :class:`EdgeLSTMError`.

Messages follow ``subject | problem`` then ``expected ... , got ...`` so a one-line CLI
message names the thing, what was expected and what was given. The CLI maps each class to
an exit code through :attr:`EdgeLSTMError.exit_code`.

This module imports only the standard library: the runtime depends on it.
"""
from __future__ import annotations


class EdgeLSTMError(Exception):
    """Base class of every error edgelstm raises on purpose."""

    exit_code = 1

    def __init__(self, subject: str, problem: str, *, expected: object = None, got: object = None):
        self.subject = subject
        self.problem = problem
        self.expected = expected
        self.got = got
        msg = f"{subject} | {problem}"
        if expected is not None:
            msg += f"; expected {expected}"
        if got is not None:
            msg += f", got {got}" if expected is not None else f"; got {got}"
        super().__init__(msg)


class UsageError(EdgeLSTMError, ValueError):
    """A bad option or argument value (CLI exit code 2)."""

    exit_code = 2


class UnknownChoiceError(UsageError):
    """A name that is not one of the known choices (family, dataset, device, mode...)."""


class DataError(EdgeLSTMError, ValueError):
    """User data that cannot be read: names file, line and column where it can."""

    exit_code = 3


class CheckpointError(EdgeLSTMError, ValueError):
    """A missing, corrupt or foreign checkpoint / run directory."""

    exit_code = 4


class RunDirExistsError(UsageError):
    """An output directory already holds a run and --overwrite was not given."""


class ModelDefinitionError(EdgeLSTMError, ValueError):
    """A user module that does not import, a factory that raises, no recurrent layer..."""

    exit_code = 5


class UnsupportedError(EdgeLSTMError, ValueError):
    """A layer option or quantization mode that edgelstm refuses rather than getting wrong."""

    exit_code = 6


class MissingExtraError(UnsupportedError):
    """A command or option needs an optional dependency group that is not installed (exit code 6).

    The message is the whole instruction: ``train needs edgelstm[train]: pip install "edgelstm[train]"``."""

    def __init__(self, what: str, extra: str, *, missing: list[str] | None = None):
        super().__init__(what, f"needs edgelstm[{extra}]")
        self.extra = extra
        self.missing = list(missing or [])
        suffix = f" (missing: {', '.join(self.missing)})" if self.missing else ""
        self.args = (f'{what} needs edgelstm[{extra}]: pip install "edgelstm[{extra}]"{suffix}',)


class ExportError(EdgeLSTMError):
    """Export failed its checks (checker, shape inference, onnxruntime load, parity)."""

    exit_code = 7


class ModelFileError(EdgeLSTMError, ValueError):
    """An ONNX file that is missing, not ONNX, truncated or tampered."""

    exit_code = 8


class ManifestError(EdgeLSTMError, ValueError):
    """A manifest with an unknown schema version, or one that disagrees with its graph."""

    exit_code = 8


class InputError(EdgeLSTMError, ValueError):
    """An input tensor of the wrong rank, feature size, dtype or batch, or with NaN/Inf."""

    exit_code = 9


class ProviderUnavailableError(EdgeLSTMError):
    """A requested execution provider is not available and fallback was not allowed."""

    exit_code = 10


class StreamInUseError(UsageError):
    """A :class:`~edgelstm.runtime.stream.Stream` called from a second thread while a call on it
    is still running (a stream owns one state: use one stream per thread)."""


class VerificationError(EdgeLSTMError):
    """A model failed verification (used where an exception, not a report, is wanted)."""

    exit_code = 1


class QuantizationAccuracyError(VerificationError):
    """``quantize``: the quantized model is far off the float one on the evaluation data (its
    SQNR or task metric past the documented threshold); nothing is written without --accept-error."""


__all__ = [name for name in dir() if name.endswith("Error")]
