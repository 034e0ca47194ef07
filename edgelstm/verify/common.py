"""What both harnesses share: the single-graph one (:mod:`edgelstm.verify.core` and its check
modules) and the seq2seq pair (:mod:`edgelstm.verify.seq2seq`).

Imports numpy, the standard library and ``edgelstm.errors``; imported by ``verify.core``,
``verify.checks_task``, ``verify.checks_state`` and ``verify.seq2seq``.
"""
from __future__ import annotations

import platform
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgelstm.errors import EdgeLSTMError, UsageError


def describe_error(e: Exception) -> str:
    """One line for a check that could not run: the typed error's own text, else the type and message."""
    return str(e) if isinstance(e, EdgeLSTMError) else f"{type(e).__name__}: {e}"


def environment(ort_backends: Iterable[tuple[str, Any]]) -> dict:
    """The report's environment: versions, and the providers and threads of each onnxruntime
    backend (``(name, backend)`` pairs; a backend has ``providers`` and ``threads``)."""
    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "numpy": np.__version__}
    for mod in ("onnxruntime", "onnx", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            env[mod] = getattr(m, "__version__", "?")
    ort = list(ort_backends)
    env["providers"] = {name: b.providers for name, b in ort}
    env["threads"] = {name: b.threads for name, b in ort}
    return env


def take_baseline(result, cands: list, preferences: Sequence[Callable[[Any], bool]], *,
                  expected: str, got: str):
    """Without a PyTorch original, the first candidate that a preference (in order) accepts
    becomes the reference: removed from ``cands``, recorded as the reason torch was skipped.
    None accepted: the UsageError says what would do (``expected``) and what was given."""
    pick = next((c for accept in preferences for c in cands if accept(c)), None)
    if pick is None:
        raise UsageError("--reference", "no fp32 reference to compare against", expected=expected, got=got)
    cands.remove(pick)
    result.skip("torch", "no --reference run directory or --model given: the export itself is not checked "
                f"against PyTorch; {pick.backend.name} is the reference")
    return pick.backend
