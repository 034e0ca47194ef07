"""Input preparation for :class:`~edgelstm.runtime.model.Model`: the checks every input takes
before onnxruntime sees it (dtype, rank, sizes, NaN/Inf, token range, lengths, state), written
once and shared by ``Model.run``, :class:`~edgelstm.runtime.stream.Stream` and
:class:`~edgelstm.runtime.group.StreamGroup`. Torch-free: numpy, onnxruntime, stdlib."""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, UsageError
from edgelstm.runtime.interface import TensorInfo
from edgelstm.runtime.providers import ort_type_to_dtype
from edgelstm.runtime.result import IOSpec


def all_finite(arr: np.ndarray) -> bool:
    """True when every element of ``arr`` is finite, in one pass with no temporary array.

    The sum is taken in ``arr``'s own dtype (no float64 upcast): under IEEE arithmetic a NaN or
    an Inf makes the sum NaN or Inf, so a finite sum proves every element finite. A sum that
    overflows (finite inputs near the dtype's maximum) is re-checked exactly with ``np.isfinite``.
    For a ``[1024, 256, 128]`` float32 input this measured about 2.5x cheaper than the float64
    sum it replaces and than ``np.isfinite(arr).all()`` (which writes a bool array), on one core.
    The overflow / invalid warnings such a sum may raise are silenced: the answer is exact.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(arr, axis=None)
    if math.isfinite(float(total)):
        return True
    return bool(np.isfinite(arr).all())


class InputChecks:
    """The input checks of a loaded model (mixed into :class:`~edgelstm.runtime.model.Model`, whose
    constructor sets ``_in``, ``interface``, ``states``, ``manifest``, ``x_name``, ``lengths_name``,
    ``nan``, ``_norm`` and ``_cast_warned``)."""

    def check_nan(self, name: str, arr: np.ndarray, nan: str | None = None) -> None:
        """Raise :class:`InputError` naming ``name`` for NaN/Inf in ``arr`` (policy ``nan``, default the model's)."""
        if (nan or self.nan) == "pass" or arr.dtype.kind != "f":
            return
        if all_finite(arr):  # one pass over the input (see all_finite)
            return
        bad = ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(name, "input contains NaN or Inf (pass nan='pass' to allow)",
                             expected="finite values", got=f"{int(bad.sum())} non-finite, first at index {first}")

    def prepare_x(self, x: Any, *, rank: int | None = None, name: str | None = None, nan: str | None = None,
                  frame: bool | None = None) -> np.ndarray:
        """Validate the primary input (``x``, any dtype and rank: ``[batch, time, features]``,
        token ids ``[batch, time]`` or ``[time, batch]``, an image ``[batch, 1, H, W]``...), cast it
        to the graph's dtype, check NaN/Inf (floats) or the id range (tokens), apply the
        manifest's normalization. ``frame=True`` (or the older ``rank=2``): one step, the input's
        shape without its time axis."""
        spec = self._in[self.x_name]
        info = self.interface.input(self.x_name)
        name = name or self.x_name or "x"
        frame = bool(frame) if frame is not None else (rank is not None and rank == spec.rank - 1)
        arr = np.asarray(x)
        if arr.dtype.kind not in "iu" and info.role == "tokens":
            raise InputError(name, "wrong dtype", expected=f"integer token ids ({spec.dtype.name})", got=arr.dtype.name)
        if arr.dtype.kind != "f" and spec.dtype.kind == "f":
            raise InputError(name, "wrong dtype", expected=f"floating point ({spec.dtype.name})", got=arr.dtype.name)
        want = info.layout(frame=frame)
        axes = [i for i in range(spec.rank) if not (frame and i == info.time_axis)]
        if arr.ndim != len(axes):
            raise InputError(name, "wrong rank", expected=f"{len(axes)}-D {want}", got=f"{arr.ndim}-D shape {arr.shape}")
        batch_axis = info.frame_axis(info.batch_axis) if frame else info.batch_axis
        if batch_axis is not None and arr.shape[batch_axis] < 1:
            raise InputError(name, "empty batch", expected=f"at least one sequence: {want} with batch >= 1",
                             got=f"shape {arr.shape}")
        if not frame and info.time_axis is not None and arr.shape[info.time_axis] < 1:
            raise InputError(name, "no time steps", expected=f"{want} with time >= 1", got=f"shape {arr.shape}")
        for k, axis in enumerate(axes):
            f = spec.fixed(axis)
            if f is not None and arr.shape[k] != f:
                what = "wrong feature size" if _classic(info) and axis == 2 else f"wrong size of dimension {axis}"
                raise InputError(name, what, expected=f, got=arr.shape[k])
        if arr.dtype != spec.dtype:  # another float (or int) type: cast, and say so once per input and dtype
            if (name, arr.dtype.name) not in self._cast_warned and spec.dtype.kind == "f":
                self._cast_warned.add((name, arr.dtype.name))
                warnings.warn(f"{name}: {arr.dtype.name} input cast to the graph's {spec.dtype.name}",
                              RuntimeWarning, stacklevel=4)
            arr = arr.astype(spec.dtype)
        if info.role == "tokens":
            check_token_range(name, arr, info)
        self.check_nan(name, arr, nan)
        if self._norm is not None:
            scale, offset = self._norm
            out = np.multiply(arr, scale)  # one new array (C-contiguous), then the offset in place
            out += offset
            return out
        return np.ascontiguousarray(arr)

    def prepare_lengths(self, lengths: Any, batch: int, time: int) -> np.ndarray:
        dtype = self._in[self.lengths_name].dtype if self.lengths_name else np.dtype(np.int32)
        if lengths is None:
            if time is None:
                raise InputError(self.lengths_name or "lengths", "missing input: no input has a time axis to "
                                 "take full lengths from", expected="a lengths array [batch]", got=None)
            return np.full(batch, time, dtype=dtype)
        arr = np.asarray(lengths)
        if arr.ndim == 0:
            arr = np.full(batch, int(arr), dtype=dtype)
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                arr = arr.astype(dtype)
            else:
                raise InputError("lengths", "wrong dtype", expected="integers", got=arr.dtype.name)
        if arr.shape != (batch,):
            raise InputError("lengths", "wrong shape", expected=f"[{batch}] (one per sequence)", got=list(arr.shape))
        if arr.size and (arr.min() < 1 or (time is not None and arr.max() > time)):
            raise InputError("lengths", "length out of range", expected=f"1..{time}",
                             got=f"min {int(arr.min())}, max {int(arr.max())}")
        return arr.astype(dtype, copy=False)

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        out = {}
        m = self.manifest
        for s in self.states:
            info = self.interface.input(s.input)
            defaults = None
            if m is not None and info.rank == 3:  # [layers*directions, batch, hidden] with symbolic sizes
                defaults = {0: m.layers * m.directions, 2: m.hidden_size}
            try:
                out[s.input] = self.interface.fill(s.input, batch, None, defaults=defaults)
            except InputError:
                raise InputError(s.input, "state size is symbolic and there is no manifest; pass state=",
                                 expected="a state array", got=list(s.spec.shape)) from None
        return out

    def prepare_state(self, state: Mapping[str, Any] | None, batch: int) -> dict[str, np.ndarray]:
        zeros = self.zero_state(batch)
        if state is None:
            return zeros
        if not isinstance(state, Mapping):
            raise InputError("state", "wrong type", expected=f"a dict with keys {list(zeros)}", got=type(state).__name__)
        by_out = {s.output: s.input for s in self.states}
        out = {}
        for key, value in state.items():
            name = by_out.get(key, key)
            if name not in zeros:
                raise InputError("state", f"unknown state name {key!r}", expected=sorted(zeros), got=key)
            arr = np.asarray(value)
            want = zeros[name]
            if arr.shape != want.shape:
                axis = self.interface.input(name).batch_axis
                what = ("batch does not match" if arr.ndim == want.ndim and axis is not None and arr.shape[axis] != batch
                        else "wrong shape")
                raise InputError(name, f"state {what}", expected=list(want.shape), got=list(arr.shape))
            if arr.dtype.kind != "f":
                raise InputError(name, "wrong dtype", expected=want.dtype.name, got=arr.dtype.name)
            self.check_nan(name, arr)
            out[name] = np.ascontiguousarray(arr, dtype=want.dtype)
        missing = set(zeros) - set(out)
        if missing:
            raise InputError("state", "incomplete state", expected=sorted(zeros), got=sorted(out))
        return out

    def _check_ortvalue_x(self, x: ort.OrtValue) -> ort.OrtValue:
        name, spec = self.x_name, self._in[self.x_name]
        if self._norm is not None:
            raise UsageError(name, "this model normalizes its input on the host; a device-resident OrtValue "
                             "would skip that", expected="a numpy array (normalized by the runtime)",
                             got="an OrtValue")
        shape = list(x.shape())
        if not _classic(self.interface.input(name)):
            return self._check_ortvalue(name, x, spec)
        if len(shape) != 3 or shape[0] < 1 or shape[1] < 1:
            raise InputError(name, "wrong shape", expected="[batch >= 1, time >= 1, features]", got=shape)
        f = spec.fixed(-1)
        if f is not None and shape[-1] != f:
            raise InputError(name, "wrong feature size", expected=f, got=shape[-1])
        return self._check_ortvalue(name, x, spec)

    def _check_ortvalue(self, name: str, value: ort.OrtValue, spec: IOSpec) -> ort.OrtValue:
        """A device-resident input: its dtype must be the graph's (no cast without a host copy),
        its shape the graph's where fixed; no NaN/Inf scan. States are taken as numpy only."""
        if name in {s.input for s in self.states}:
            raise UsageError(name, "a state is taken as a numpy array (state=...), not as an OrtValue",
                             expected="numpy", got="an OrtValue")
        shape, dtype = list(value.shape()), ort_type_to_dtype(value.data_type())
        if dtype != spec.dtype.name:
            raise InputError(name, "wrong dtype", expected=spec.dtype.name, got=dtype)
        if len(shape) != spec.rank or 0 in shape:
            raise InputError(name, "wrong shape", expected=list(spec.shape), got=shape)
        for axis, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0 and shape[axis] != d:
                raise InputError(name, f"wrong size of dimension {axis}", expected=d, got=shape[axis])
        return value

    def _check_named_inputs(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, value in inputs.items():
            spec = self._in.get(name)
            if spec is None:
                raise InputError(name, "unknown input", expected=[s.name for s in self.inputs], got=name)
            if name == self.x_name:
                out[name] = self._check_ortvalue_x(value) if isinstance(value, ort.OrtValue) else self.prepare_x(value)
                continue
            if isinstance(value, ort.OrtValue):
                out[name] = self._check_ortvalue(name, value, spec)
                continue
            arr = np.asarray(value)
            if arr.ndim != spec.rank:
                raise InputError(name, "wrong rank", expected=f"{spec.rank}-D {list(spec.shape)}",
                                 got=f"{arr.ndim}-D {list(arr.shape)}")
            if arr.size == 0:
                raise InputError(name, "empty input (a dimension of size 0)",
                                 expected=f"every dimension >= 1 ({list(spec.shape)})", got=f"shape {arr.shape}")
            for axis, d in enumerate(spec.shape):
                if isinstance(d, int) and d > 0 and arr.shape[axis] != d:
                    raise InputError(name, f"wrong size of dimension {axis}", expected=d, got=arr.shape[axis])
            if arr.dtype != spec.dtype:
                if arr.dtype.kind != spec.dtype.kind and not (arr.dtype.kind in "iu" and spec.dtype.kind in "iu"):
                    raise InputError(name, "wrong dtype", expected=spec.dtype.name, got=arr.dtype.name)
                arr = arr.astype(spec.dtype)
            info = self.interface.input(name)
            if info.role == "tokens":
                check_token_range(name, arr, info)
            self.check_nan(name, arr)
            out[name] = np.ascontiguousarray(arr)
        return out


def _classic(info: TensorInfo) -> bool:
    """edgelstm's own layout: float ``[batch, time, features]`` (its messages keep those words)."""
    return info.role == "data" and info.rank == 3 and info.batch_axis == 0 and info.time_axis == 1


def check_token_range(name: str, arr: np.ndarray, info: TensorInfo) -> None:
    """Token ids outside the embedding table would read past it (onnxruntime: an index error)."""
    if info.token_range is None or arr.size == 0:
        return
    low, high = info.token_range
    lo, hi = int(arr.min()), int(arr.max())
    if lo < low or hi >= high:
        raise InputError(name, "token id out of range", expected=f"ids in {low}..{high - 1}",
                         got=f"min {lo}, max {hi}")
