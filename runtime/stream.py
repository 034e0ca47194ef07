"""Streaming: feed a recurrent model frame by frame (or chunk by chunk) with carried state.

A :class:`Stream` owns its state; the :class:`~edgelstm.runtime.model.Model` it comes from is
shared and never changes, so any number of streams (in any number of threads, one thread per
stream) can use one model. The input spec is checked once when the stream is made, so a step
only compares the frame's shape and dtype. A stream used from two threads at once raises
:class:`~edgelstm.errors.StreamInUseError` (an atomic in-use token, not a lock: nothing waits).

The step path is one ``run_with_iobinding`` with no allocation on the CPU provider: the stream
owns two sets of state buffers (onnxruntime values; on a GPU provider they live on the device)
and two bindings, one reading set 0 and writing set 1, the other the reverse; each step copies
the frame into the stream's input buffer, **binds the frame again**, runs the binding of the
current parity and flips it. Per-step outputs go to preallocated buffers and are copied out (a
few hundred bytes). Binding one buffer as both input and output would let onnxruntime overwrite
the state it is reading; the two sets rule that out. ``feed`` (chunks of any length) uses the
same state sets and lets onnxruntime allocate the other outputs.

Why bind the frame each step: onnxruntime copies an input to the device of the node that reads
it *when the input is bound* (``bind_cpu_input`` on a CUDA session, or any value on one device
read by a node on another). A binding made once and refilled in place would feed every later
step the frame seen at bind time. Re-binding is the same code on every provider: on the CPU it
stores a pointer (a microsecond or two), on a GPU it uploads the frame. The state values live on
the device that runs the graph and are read there, so their binding is made once and the
hand-over (outputs of step t are the inputs of step t+1) copies nothing; when some nodes run on
the CPU under a GPU provider (:attr:`Model.mixed_devices`), a state might be read across
devices, and the state set is bound again before every step too.
``tests/test_stream_binding.py`` reproduces the copy-at-bind behaviour on a CPU.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, StreamInUseError, UnsupportedError, UsageError
from edgelstm.fileio import atomic_path
from edgelstm.runtime.result import RunResult
from edgelstm.runtime.session import NAN_MODES

if TYPE_CHECKING:  # annotations only: model.py imports this module to make streams
    from edgelstm.runtime.model import Model


def check_stream(model: Model, nan: str | None) -> str:
    """What every stream (a :class:`Stream`, a :class:`~edgelstm.runtime.group.StreamGroup`) needs of
    its model: streamable, one primary input with batch and time axes; returns the NaN/Inf policy
    (``nan``, else the model's), checked."""
    if not model.streamable:
        why = "it is bidirectional or pools over time" if model.manifest is not None else "it has no state inputs"
        raise UnsupportedError(str(model.path), f"this model cannot be streamed: {why}",
                               expected="a unidirectional model with state inputs/outputs (streamable=true)",
                               got=f"streamable={model.streamable}, states={[s.input for s in model.states]}")
    info = model.interface.primary
    if info is None or info.time_axis is None or info.batch_axis is None:
        raise UnsupportedError(str(model.path), "cannot stream a graph without a single data input that has a "
                               "batch and a time axis", expected="one data or token input with batch and time axes",
                               got={t.name: t.layout() for t in model.interface.data_inputs})
    nan = nan or model.nan
    if nan not in NAN_MODES:
        raise UsageError("nan", "unknown NaN/Inf policy", expected=list(NAN_MODES), got=nan)
    return nan


def step_outputs(model: Model) -> list[tuple[str, int | None]]:
    """The data outputs with the axis a step drops (their time axis; None for per-sequence outputs)."""
    return [(t.name, t.time_axis) for t in model.interface.data_outputs]


def drop_time(arr: np.ndarray, axis: int | None) -> np.ndarray:
    """``arr`` without its time axis (a view of step 0), or ``arr`` itself when ``axis`` is None."""
    return arr if axis is None else arr[(slice(None),) * axis + (0,)]


class Stream:
    """Step-by-step inference with state carried between calls.

    ``step(frame)``: ``frame`` is the data input's shape without its time axis (``[batch,
    features]``; ``[batch]`` token ids; ``[batch, 1, H]`` for an image whose width is time) ->
    outputs for that one step (per-step outputs lose their time axis; the result carries no
    state, read :attr:`state`). ``feed(chunk)``: a chunk in the input's own layout (``[batch,
    time, features]``) -> outputs and state after the chunk. ``reset()`` zeroes
    the state. ``state`` is a dict of numpy arrays (a copy; assign a dict to restore it);
    :meth:`save_state` / :meth:`load_state` persist it as ``.npz``.
    A stream is used by one thread at a time: a call made while another thread's call on the same
    stream is running raises :class:`~edgelstm.errors.StreamInUseError` (use one stream per thread).
    """

    def __init__(self, model: Model, batch: int = 1, *, nan: str | None = None):
        nan = check_stream(model, nan)
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise UsageError("batch", "stream batch must be a positive integer", expected=">= 1", got=batch)
        self.model = model
        self.batch = b = int(batch)
        self._nan = nan
        self._check_nan = nan == "raise"
        self._sess = model.session
        spec = model._in[model.x_name]
        info = model.interface.input(model.x_name)
        self._x_name = model.x_name
        self._info = info
        self._dtype = spec.dtype
        self._time_axis = info.time_axis
        self._frame_batch = info.frame_axis(info.batch_axis)
        self._tokens = info.role == "tokens"
        # the frame's shape where every dimension but batch is fixed (else None: checked in full)
        fixed = [info.fixed(i) for i in range(info.rank) if i not in (info.batch_axis, info.time_axis)]
        one = [1 if i == info.time_axis else (b if i == info.batch_axis else info.fixed(i)) for i in range(info.rank)]
        self._frame_shape = tuple(d for i, d in enumerate(one) if i != info.time_axis) \
            if all(f is not None for f in fixed) else None
        self._norm = model._norm
        self._device = model.state_device
        self._pairs = [(s.input, s.output) for s in model.states]
        self._data = step_outputs(model)
        self._lengths_name = model.lengths_name
        self._lengths_dtype = model._in[model.lengths_name].dtype if model.lengths_name else None
        self._zeros = model.zero_state(b)
        # two state sets, each a private buffer per state input; set p is read, set 1-p written
        self._sets = [{k: self._ortvalue(v) for k, v in self._zeros.items()} for _ in range(2)]
        self._par = 0
        # the step bindings: x (an owned buffer when the feature size is fixed), lengths = 1,
        # state set p -> set 1-p, per-step outputs -> preallocated buffers (made on the first step)
        self._xbuf = np.zeros(one, self._dtype) if self._frame_shape is not None else None
        self._xbuf2 = drop_time(self._xbuf, self._time_axis) if self._xbuf is not None else None
        self._xval = ort.OrtValue.ortvalue_from_numpy(self._xbuf) if self._xbuf is not None else None
        self._ones = np.ones(b, self._lengths_dtype) if self._lengths_name else None
        self._step_bind = [self._make_binding(p) for p in range(2)]
        # per parity: the re-binding calls of a step (bound method, name, value): the frame, and the
        # state set the step reads where it may be read on another device than it lives on
        self._state_rebind = model.mixed_devices
        self._rebind = [([(b.bind_ortvalue_input, self._x_name, self._xval)] if self._xval is not None else [])
                        + ([(b.bind_ortvalue_input, k, v) for k, v in self._sets[p].items()]
                           if self._state_rebind else [])
                        for p, b in enumerate(self._step_bind)]
        self._step_out: list[tuple[str, bool, np.ndarray]] | None = None
        self._feed_bind = [self._make_binding(p, step=False) for p in range(2)]
        self.steps = 0
        self._free = [True]  # the in-use token: list.pop / list.append are atomic

    # -------------------------------------------------------------- buffers and bindings
    def _ortvalue(self, arr: np.ndarray) -> ort.OrtValue:
        """A value this stream owns (a private copy: onnxruntime writes into it later)."""
        return ort.OrtValue.ortvalue_from_numpy(np.array(arr, copy=True, order="C"), self._device, 0)

    def _make_binding(self, p: int, step: bool = True):
        """The binding of parity ``p``: state set ``p`` in, set ``1 - p`` out, the step's lengths
        (ones, never changed). The frame is bound before each run (and, with mixed devices, the
        state set again: :meth:`_bind_state`)."""
        bnd = self._sess.io_binding()
        read, write = self._sets[p], self._sets[1 - p]
        for name_in, name_out in self._pairs:
            bnd.bind_ortvalue_input(name_in, read[name_in])
            bnd.bind_ortvalue_output(name_out, write[name_in])
        if step and self._ones is not None:
            bnd.bind_cpu_input(self._lengths_name, self._ones)
        return bnd

    def _bind_state(self, bnd, p: int) -> None:
        """With mixed devices, bind state set ``p`` as the inputs of ``bnd`` now, right before it
        runs (see the module docstring: a binding made earlier may hold a copy taken then)."""
        if not self._state_rebind:
            return
        bind = bnd.bind_ortvalue_input
        for name_in, value in self._sets[p].items():
            bind(name_in, value)

    def _acquire(self) -> None:
        try:
            self._free.pop()
        except IndexError:
            raise StreamInUseError(repr(self), "stream used from two threads at once: a call on it is still "
                                   "running in another thread", expected="one thread per stream "
                                   "(model.stream() makes another)", got="a concurrent call") from None

    def reset(self) -> None:
        """Zero the state (the start of a new utterance / sequence)."""
        self._acquire()
        try:
            cur = self._sets[self._par]
            for k, z in self._zeros.items():
                cur[k].update_inplace(z)
            self.steps = 0
        finally:
            self._free.append(True)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the current state, by state input name: plain numpy, picklable, ``np.savez``-able."""
        return {k: np.array(v.numpy(), copy=True) for k, v in self._sets[self._par].items()}

    @state.setter
    def state(self, value: Mapping[str, Any]) -> None:
        checked = self.model.prepare_state(value, self.batch)  # validates names, shapes, batch, dtype
        self._acquire()
        try:
            cur = self._sets[self._par]
            for k, v in checked.items():
                cur[k].update_inplace(np.ascontiguousarray(v))
        finally:
            self._free.append(True)

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
    def _prepare(self, arr: Any, frame: bool) -> np.ndarray:
        """Fast path for the common case (right type, shape, dtype); full checks otherwise."""
        name = "frame" if frame else "chunk"  # the caller's argument name, for error messages
        if (frame and type(arr) is np.ndarray and arr.dtype == self._dtype and arr.shape == self._frame_shape
                and not self._tokens):
            # a frame is small: a float64 sum (which cannot overflow on float32 frames) is cheapest
            if self._check_nan and not math.isfinite(float(arr.sum(dtype=np.float64))):
                self.model.check_nan(name, arr, self._nan)
            if self._norm is not None:
                arr = arr * self._norm[0] + self._norm[1]
            return arr
        out = self.model.prepare_x(arr, frame=frame, name=name, nan=self._nan)  # raises for rank, sizes, dtype, NaN
        axis = self._frame_batch if frame else self._info.batch_axis
        if out.shape[axis] != self.batch:
            raise InputError(name, "batch does not match the stream's state", expected=self.batch,
                             got=out.shape[axis])
        return out

    def step(self, frame: Any) -> RunResult:
        """One time step: ``frame`` is the input's shape without its time axis (``[batch, features]``;
        ``[batch]`` token ids for a token input). Per-step outputs lose their time axis."""
        x = self._prepare(frame, True)
        free = self._free
        try:
            free.pop()
        except IndexError:
            self._acquire()  # raises StreamInUseError
        try:
            if self._step_out is None:  # first step: learn the output shapes through feed, then preallocate
                return self._first_step(x)
            p = self._par
            bnd = self._step_bind[p]
            if self._xval is not None:
                self._xbuf2[...] = x
            else:
                bnd.bind_cpu_input(self._x_name, np.ascontiguousarray(np.expand_dims(x, self._time_axis)))
            for bind, name, value in self._rebind[p]:
                bind(name, value)
            self._sess.run_with_iobinding(bnd)
            self._par = 1 - p
            self.steps += 1
            return RunResult({name: drop_time(buf, axis).copy() for name, axis, buf in self._step_out},
                             None, self.model.labels, self.model.label_output)
        finally:
            free.append(True)

    def _first_step(self, x: np.ndarray) -> RunResult:
        r = self._feed(np.ascontiguousarray(np.expand_dims(x, self._time_axis)))
        self._step_out = []
        for name, axis in self._data:
            buf = np.empty(r.outputs[name].shape, r.outputs[name].dtype)
            self._step_out.append((name, axis, buf))
            for bnd in self._step_bind:
                bnd.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
        return RunResult({n: drop_time(r.outputs[n], axis) for n, axis in self._data},
                         None, self.model.labels, self.model.label_output)

    def feed(self, chunk: Any, lengths: Any = None) -> RunResult:
        """A chunk of steps, in the input's own layout (``[batch, time, features]``, ``[time, batch]``
        token ids...); ``lengths`` (optional, per sequence) stops a sequence early: its state then
        stays at its last valid step."""
        x = np.ascontiguousarray(self._prepare(chunk, False))
        self._acquire()
        try:
            return self._feed(x, lengths)
        finally:
            self._free.append(True)

    def _feed(self, x: np.ndarray, lengths: Any = None) -> RunResult:
        time = x.shape[self._time_axis]
        if time < 1:
            raise InputError("chunk", "empty chunk", expected="at least one time step", got=list(x.shape))
        p = self._par
        bnd = self._feed_bind[p]
        bnd.bind_cpu_input(self._x_name, x)
        self._bind_state(bnd, p)
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
