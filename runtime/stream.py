"""Streaming: feed a recurrent model frame by frame (or chunk by chunk) with carried state.

A :class:`Stream` owns its state; the :class:`~edgelstm.runtime.model.Model` it comes from is
shared and never changes, so any number of streams (in any number of threads, one thread per
stream) can use one model. The input spec is checked once when the stream is made, so a step
only compares the frame's shape and dtype.

The step path is one ``run_with_iobinding`` with no allocation and no re-binding: the stream
owns two sets of state buffers (onnxruntime values; on a GPU provider they live on the device)
and two bindings made once, one reading set 0 and writing set 1, the other the reverse; each
step copies the frame into a bound input buffer, runs the binding of the current parity and
flips it. Per-step outputs go to preallocated buffers and are copied out (a few hundred bytes).
Binding one buffer as both input and output would let onnxruntime overwrite the state it is
reading; the two sets rule that out. ``feed`` (chunks of any length) uses the same state sets
and lets onnxruntime allocate the other outputs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, UnsupportedError, UsageError
from edgelstm.fileio import atomic_path
from edgelstm.runtime.model import NAN_MODES, Model, RunResult


class Stream:
    """Step-by-step inference with state carried between calls.

    ``step(frame)``: ``frame [batch, features]`` -> outputs for that one step (per-step outputs
    lose their time axis; the result carries no state, read :attr:`state`). ``feed(chunk)``:
    ``chunk [batch, time, features]`` -> outputs and state after the chunk. ``reset()`` zeroes
    the state. ``state`` is a dict of numpy arrays (a copy; assign a dict to restore it);
    :meth:`save_state` / :meth:`load_state` persist it as ``.npz``.
    A stream is not itself thread-safe: use one stream per thread.
    """

    def __init__(self, model: Model, batch: int = 1, *, nan: str | None = None):
        if not model.streamable:
            why = "it is bidirectional or pools over time" if model.manifest is not None else "it has no state inputs"
            raise UnsupportedError(str(model.path), f"this model cannot be streamed: {why}",
                                   expected="a unidirectional model with state inputs/outputs (streamable=true)",
                                   got=f"streamable={model.streamable}, states={[s.input for s in model.states]}")
        if model.x_name is None:
            raise UnsupportedError(str(model.path), "cannot stream a graph without a single data input x",
                                   expected="an input named x", got=[s.name for s in model.inputs])
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise UsageError("batch", "stream batch must be a positive integer", expected=">= 1", got=batch)
        nan = nan or model.nan
        if nan not in NAN_MODES:
            raise UsageError("nan", "unknown NaN/Inf policy", expected=list(NAN_MODES), got=nan)
        self.model = model
        self.batch = b = int(batch)
        self._nan = nan
        self._check_nan = nan == "raise"
        self._sess = model.session
        spec = model._in[model.x_name]
        self._x_name = model.x_name
        self._dtype = spec.dtype
        self._features = spec.fixed(-1)
        self._norm = model._norm
        self._device = model.state_device
        out_names = [o.name for o in model.outputs]
        state_outs = {s.output for s in model.states}
        self._pairs = [(s.input, s.output) for s in model.states]
        self._data = [(n, model._out[n].rank == 3) for n in out_names if n not in state_outs]
        self._lengths_name = model.lengths_name
        self._lengths_dtype = model._in[model.lengths_name].dtype if model.lengths_name else None
        self._zeros = model.zero_state(b)
        # two state sets, each a private buffer per state input; set p is read, set 1-p written
        self._sets = [{k: self._ortvalue(v) for k, v in self._zeros.items()} for _ in range(2)]
        self._par = 0
        # the step bindings: x (an owned buffer when the feature size is fixed), lengths = 1,
        # state set p -> set 1-p, per-step outputs -> preallocated buffers (made on the first step)
        self._xbuf = np.zeros((b, 1, self._features), self._dtype) if self._features else None
        self._xbuf2 = self._xbuf[:, 0] if self._xbuf is not None else None
        self._ones = np.ones(b, self._lengths_dtype) if self._lengths_name else None
        self._step_bind = [self._make_binding(p) for p in range(2)]
        self._step_out: list[tuple[str, bool, np.ndarray]] | None = None
        self._feed_bind = [self._make_binding(p, step=False) for p in range(2)]
        self.steps = 0

    # -------------------------------------------------------------- buffers and bindings
    def _ortvalue(self, arr: np.ndarray) -> ort.OrtValue:
        """A value this stream owns (a private copy: onnxruntime writes into it later)."""
        return ort.OrtValue.ortvalue_from_numpy(np.array(arr, copy=True, order="C"), self._device, 0)

    def _make_binding(self, p: int, step: bool = True):
        bnd = self._sess.io_binding()
        read, write = self._sets[p], self._sets[1 - p]
        for name_in, name_out in self._pairs:
            bnd.bind_ortvalue_input(name_in, read[name_in])
            bnd.bind_ortvalue_output(name_out, write[name_in])
        if step:
            if self._xbuf is not None:
                bnd.bind_cpu_input(self._x_name, self._xbuf)
            if self._ones is not None:
                bnd.bind_cpu_input(self._lengths_name, self._ones)
        return bnd

    def reset(self) -> None:
        """Zero the state (the start of a new utterance / sequence)."""
        cur = self._sets[self._par]
        for k, z in self._zeros.items():
            cur[k].update_inplace(z)
        self.steps = 0

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, by state input name: plain numpy, picklable, ``np.savez``-able."""
        return {k: np.array(v.numpy(), copy=True) for k, v in self._sets[self._par].items()}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        checked = self.model.prepare_state(value, self.batch)  # validates names, shapes, batch, dtype
        cur = self._sets[self._par]
        for k, v in checked.items():
            cur[k].update_inplace(np.ascontiguousarray(v))

    def save_state(self, path: str | Path) -> Path:
        """Write the state to ``path`` (``.npz``) atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **self.state)
        return path

    def load_state(self, path: str | Path) -> None:
        from edgelstm.data.readers import load_arrays  # numpy + stdlib only

        self.state = load_arrays(Path(path), text_ok=())  # refuses truncated / corrupt / pickled archives

    # -------------------------------------------------------------- running
    def _prepare(self, arr: Any, rank: int) -> np.ndarray:
        """Fast path for the common case (right type, shape, dtype); full checks otherwise."""
        name = "frame" if rank == 2 else "chunk"  # the caller's argument name, for error messages
        if (type(arr) is np.ndarray and arr.dtype == self._dtype and arr.ndim == rank
                and arr.shape[0] == self.batch and (rank == 2 or arr.shape[1] >= 1)
                and (self._features is None or arr.shape[-1] == self._features)):
            if self._check_nan and not math.isfinite(float(arr.sum(dtype=np.float64))):
                self.model.check_nan(name, arr, self._nan)
            if self._norm is not None:
                arr = arr * self._norm[0] + self._norm[1]
            return arr
        out = self.model.prepare_x(arr, rank=rank, name=name, nan=self._nan)  # raises for rank, features, dtype, NaN
        if out.shape[0] != self.batch:
            raise InputError(name, "batch does not match the stream's state", expected=self.batch, got=out.shape[0])
        return out

    def step(self, frame: Any) -> RunResult:
        """One time step: ``frame [batch, features]``. Per-step outputs lose their time axis."""
        x = self._prepare(frame, 2)
        if self._step_out is None:  # first step: learn the output shapes through feed, then preallocate
            r = self._feed(np.ascontiguousarray(x[:, None]))
            self._step_out = []
            for name, per_step in self._data:
                buf = np.empty(r.outputs[name].shape, r.outputs[name].dtype)
                self._step_out.append((name, per_step, buf))
                for bnd in self._step_bind:
                    bnd.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
            return RunResult({n: (r.outputs[n][:, 0] if per_step else r.outputs[n]) for n, per_step in self._data},
                             None, self.model.labels, self.model.label_output)
        p = self._par
        bnd = self._step_bind[p]
        if self._xbuf2 is not None:
            self._xbuf2[...] = x
        else:
            bnd.bind_cpu_input(self._x_name, x.reshape(self.batch, 1, -1))
        self._sess.run_with_iobinding(bnd)
        self._par = 1 - p
        self.steps += 1
        return RunResult({name: (buf[:, 0] if per_step else buf).copy() for name, per_step, buf in self._step_out},
                         None, self.model.labels, self.model.label_output)

    def feed(self, chunk: Any, lengths: Any = None) -> RunResult:
        """A chunk of steps: ``chunk [batch, time, features]``; ``lengths`` (optional, per sequence)
        stops a sequence early: its state then stays at its last valid step."""
        return self._feed(np.ascontiguousarray(self._prepare(chunk, 3)), lengths)

    def _feed(self, x: np.ndarray, lengths: Any = None) -> RunResult:
        time = x.shape[1]
        if time < 1:
            raise InputError("chunk", "empty chunk", expected="at least one time step", got=list(x.shape))
        p = self._par
        bnd = self._feed_bind[p]
        bnd.bind_cpu_input(self._x_name, x)
        lens = None
        if self._lengths_name is not None:
            lens = self.model.prepare_lengths(lengths, self.batch, time)
            bnd.bind_cpu_input(self._lengths_name, lens)
        elif lengths is not None:
            raise InputError("lengths", "this graph has no lengths input", expected=None, got="lengths")
        for name, _ in self._data:
            bnd.bind_output(name, "cpu")  # the chunk length varies: onnxruntime allocates
        self._sess.run_with_iobinding(bnd)
        outs = bnd.get_outputs()  # in binding order: the state outputs, then the data outputs
        self._par = 1 - p
        self.steps += time
        k = len(self._pairs)
        data = {name: outs[k + i].numpy() for i, (name, _) in enumerate(self._data)}
        m = self.model
        return RunResult(data, self.state, m.labels, m.label_output, lens)

    def __repr__(self) -> str:
        return f"Stream(batch={self.batch}, steps={self.steps}, model={self.model.path.name!r})"
