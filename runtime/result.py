"""What a run takes and gives back: the graph's I/O specs, state pairs, node placement and
:class:`RunResult` (outputs, state, predictions). Torch-free: numpy, onnxruntime, stdlib.
Imported by :mod:`edgelstm.runtime.model`, ``stream``, ``group`` and the package root."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np
import onnxruntime as ort

from edgelstm.errors import UsageError
from edgelstm.runtime.providers import ort_type_to_dtype


@dataclass(frozen=True)
class IOSpec:
    """One graph input or output as the session reports it."""

    name: str
    dtype: np.dtype
    shape: tuple  # int for fixed dims, str / None for symbolic ones

    @property
    def rank(self) -> int:
        return len(self.shape)

    def fixed(self, axis: int) -> int | None:
        d = self.shape[axis]
        return d if isinstance(d, int) and d > 0 else None


@dataclass(frozen=True)
class StatePair:
    """Graph input ``input`` is fed from graph output ``output`` of the previous call."""

    input: str
    output: str
    spec: IOSpec  # of the input

    @property
    def size(self) -> tuple[int | None, int | None]:
        """(layers*directions, hidden) where fixed."""
        return self.spec.fixed(0), self.spec.fixed(-1)


class NodePlacement(NamedTuple):
    name: str       # node name ("" for unnamed nodes)
    op_type: str
    provider: str   # e.g. "CPUExecutionProvider"


def io_specs(args) -> list[IOSpec]:
    out = []
    for a in args:
        dt = ort_type_to_dtype(a.type)
        out.append(IOSpec(a.name, np.dtype(dt) if dt != "str" else np.dtype(object), tuple(a.shape)))
    return out


def _host(value: Any) -> np.ndarray:
    """A NumPy array of an output, also one kept on a device (``run(..., output_device=...)``)."""
    return value.numpy() if isinstance(value, ort.OrtValue) else value


# ---------------------------------------------------------------------------------------- result
class RunResult:
    """Outputs of one call. ``outputs`` maps output name -> array (state outputs excluded);
    ``state`` maps state *input* name -> final state (feed it back as ``state=``);
    ``labels`` decodes classifier outputs with the manifest's class names (None without them).
    ``state`` and ``labels`` are computed on first access, so a streaming step pays nothing for them.
    """

    __slots__ = ("outputs", "_state_src", "_state", "_label_names", "_label_output", "_labels", "_lengths", "filled")

    def __init__(self, outputs: dict[str, np.ndarray], state_src: dict[str, Any] | None,
                 label_names: Sequence[str] | None, label_output: str | None, lengths=None):
        self.outputs = outputs
        self._state_src = state_src
        self._state: dict[str, np.ndarray] | None = None
        self._label_names = label_names
        self._label_output = label_output
        self._labels = None
        self._lengths = lengths
        self.filled: list[str] = []  # inputs the runtime made up (zero state, full lengths)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]

    def __contains__(self, name: str) -> bool:
        return name in self.outputs

    def __repr__(self) -> str:
        shapes = {k: (tuple(v.shape()) if callable(v.shape) else v.shape) for k, v in self.outputs.items()}
        return f"RunResult(outputs={shapes}, state={list(self._state_src or [])})"

    @property
    def state(self) -> dict[str, np.ndarray]:
        if self._state_src is None:
            raise UsageError("state", "a stream step result does not hold the state (the stream reuses its "
                             "buffers)", expected="stream.state", got="result.state")
        if self._state is None:
            self._state = {k: (v.numpy() if isinstance(v, ort.OrtValue) else v) for k, v in self._state_src.items()}
        return self._state

    @property
    def predictions(self) -> np.ndarray | None:
        """Arg-max class index per sequence (``[batch]``) or per step (``[batch, time]``)."""
        if self._label_output is None:
            return None
        return np.argmax(_host(self.outputs[self._label_output]), axis=-1)

    @property
    def labels(self) -> list | None:
        """Class names: one per sequence for ``logits [b, K]``; a list per sequence (valid steps
        only) for ``y [b, t, K]``. None when the manifest has no labels."""
        if self._labels is None and self._label_names is not None and self._label_output is not None:
            idx = self.predictions
            names = self._label_names
            if idx.ndim == 1:
                self._labels = [names[i] for i in idx]
            else:
                lens = self._lengths if self._lengths is not None else [idx.shape[1]] * idx.shape[0]
                self._labels = [[names[i] for i in row[:n]] for row, n in zip(idx, lens)]
        return self._labels

    def to_dict(self) -> dict:
        """JSON-ready: outputs and state as nested lists, labels where known."""
        d: dict[str, Any] = {"outputs": {k: _host(v).tolist() for k, v in self.outputs.items()},
                             "state": {k: v.tolist() for k, v in (self.state if self._state_src is not None
                                                                   else {}).items()}}
        if self.labels is not None:
            d["labels"] = self.labels
        return d
