"""What ``verify`` is asked to do: one typed, frozen options object shared by the single-graph
harness (:mod:`edgelstm.verify.core`) and the seq2seq pair (:mod:`edgelstm.verify.seq2seq`).

Imports only the standard library, ``edgelstm.errors`` and the verify modules that name the
checks and the default input cases. Imported by
``verify.core``, ``verify.seq2seq``, ``edgelstm.verify`` (public API) and ``edgelstm.cli.verify``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from edgelstm.errors import UnknownChoiceError, UsageError
from edgelstm.verify.inputs import DEFAULT_CASES
from edgelstm.verify.result import CHECKS

ORACLES = ("reference", "numpy")


@dataclass(frozen=True)
class VerifyOptions:
    """Every knob of one verification, with the defaults of the Python API.

    ``reference`` (a run directory or an ``nn.Module``) is not here: it is what the model is
    compared against, passed beside the options."""

    model_spec: str | None = None            # the PyTorch original as FILE.py:FACTORY (with checkpoint)
    checkpoint: str | None = None            # weights for model_spec
    against: tuple = ()                      # other files of the same model (int8, fp16...) to verify too
    devices: tuple[str, ...] = ("cpu",)      # short provider names (cpu, cuda, ...)
    data: str | os.PathLike | None = None    # .npz with arrays named after the graph inputs (+ labels y)
    steps: int = 200                         # drift horizon; 0 skips the drift check
    atol: tuple[str, ...] = ()               # "1e-4" or "name:1e-4" overrides
    min_snr: tuple[str, ...] = ()            # "30" or "name:30" overrides (dB)
    seed: int = 0                            # seed of the random inputs
    checks: tuple[str, ...] = CHECKS         # which checks to run
    oracles: tuple[str, ...] = ORACLES       # extra fp32 oracles
    chunks: tuple[int, ...] = (1, 4, 16)     # streaming chunk sizes
    drift_chunk: int = 1                     # chunk size of the drift stream
    threads: int = 1                         # onnxruntime intra-op threads (int8 always runs on one)
    cases: tuple = DEFAULT_CASES             # (batch, time, varied lengths, random state) random cases
    run_data: bool = True                    # with a run directory: also its held-out test split
    data_limit: int | None = 256             # at most this many sequences of that split
    trust_modified: bool = False             # load files whose seal is missing or does not match
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("against", "devices", "atol", "min_snr", "checks", "oracles", "chunks", "cases"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):  # one value where several are allowed
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "provider_options",
                           {k: dict(v) for k, v in (self.provider_options or {}).items()})
        for c in self.checks:
            if c not in CHECKS:
                raise UnknownChoiceError("--checks", "unknown check", expected=list(CHECKS), got=c)
        for o in self.oracles:
            if o not in ORACLES:
                raise UnknownChoiceError("--oracles", "unknown oracle backend", expected=list(ORACLES), got=o)
        if any(int(c) < 1 for c in self.chunks):
            raise UsageError("chunks", "chunk sizes must be >= 1", expected=">= 1", got=list(self.chunks))
        if self.steps < 0:
            raise UsageError("--steps", "negative step count", expected=">= 0", got=self.steps)
        if self.drift_chunk < 1:
            raise UsageError("drift_chunk", "chunk size must be >= 1", expected=">= 1", got=self.drift_chunk)

    @classmethod
    def build(cls, options: VerifyOptions | None = None, **fields: Any) -> VerifyOptions:
        """``options`` (or the defaults) with ``fields`` replaced; an unknown field is a UsageError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise UsageError("verify()", "unknown option", expected=sorted(known), got=unknown)
        return dataclasses.replace(options, **fields) if options is not None else cls(**fields)
