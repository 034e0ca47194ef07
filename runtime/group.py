"""Many independent streams served by one batched session call per step.

An edge box with several microphones, or a server with many users, steps N streams of one model
at the same rate. Stepping N :class:`~edgelstm.runtime.stream.Stream` objects one by one pays
onnxruntime's fixed cost per call (about 5-10 us here) N times and multiplies a ``[1, hidden]``
row by the recurrent weights N times; a :class:`StreamGroup` stacks the N frames into one
``[N, 1, features]`` call, so the fixed cost is paid once and the products run as matrix-matrix
products over the whole group.

Streams are positions ``0 .. n-1``, in the order of the rows of ``frames``: ``add()`` appends a
stream (zero state) and returns its position; ``drop(i)`` removes stream ``i`` and the streams
after it move down by one, as in a list. Each stream's state is its own column (axis 1, the batch
axis of ``[layers*directions, batch, hidden]``) of the group's state arrays, so a stream's
results never depend on which other streams share the call (the recurrent operator treats the
batch rows independently; ``tests/test_group.py`` checks the group against separate streams).

The step path is one ``run_with_iobinding``, as in a single stream: two sets of state buffers
(onnxruntime values, on the device under a GPU provider), one read and the other written, swapped
each step, so the state never passes through numpy. The frames are copied into a bound value
(``update_inplace``) each step. ``add``/``drop``/``reset``/``state_of`` move the state through host
memory and make the buffers anew (membership changes are rare next to steps).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, UsageError
from edgelstm.runtime.result import RunResult
from edgelstm.runtime.stream import check_stream, drop_time, step_outputs

if TYPE_CHECKING:  # annotations only: model.py imports this module to make streams
    from edgelstm.runtime.model import Model


class StreamGroup:
    """``n`` streams of one model stepped together: ``step(frames [n, features])``.

    Made by :meth:`Model.streams`. Like a :class:`~edgelstm.runtime.stream.Stream`, a group owns
    its state and is used from one thread at a time; the model stays shared and immutable.
    """

    def __init__(self, model: Model, n: int = 0, *, nan: str | None = None):
        nan = check_stream(model, nan)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise UsageError("n", "stream count must be an integer >= 0", expected=">= 0", got=n)
        self.model = model
        self._nan = nan
        self._sess = model.session
        self._device = model.state_device
        self._mixed = model.mixed_devices
        self._x_name = model.x_name
        self._lengths_name = model.lengths_name
        self._lengths_dtype = model._in[model.lengths_name].dtype if model.lengths_name else None
        self._pairs = [(s.input, s.output) for s in model.states]
        self._data = step_outputs(model)
        self._per_step = dict(self._data)
        # each state's own batch axis: 1 in [layers*directions, batch, hidden], 0 in a cell's [batch, hidden]
        self._bax = {s.input: (model.interface.input(s.input).batch_axis if model.interface.input(s.input) is not None
                               and model.interface.input(s.input).batch_axis is not None else 1) for s in model.states}
        info = model.interface.primary
        self._time_axis = info.time_axis
        self._frame_batch = info.frame_axis(info.batch_axis)
        self._zero1 = model.zero_state(1)          # one stream's zero state, by state input name
        self._sets: list[dict[str, ort.OrtValue]] = []
        self._par = 0
        self._x: ort.OrtValue | None = None
        self._binds: list = []
        self._outs: list[tuple[str, bool, np.ndarray]] | None = None
        self._ones: ort.OrtValue | None = None
        self._n = 0
        self._set_host_state({k: np.concatenate([z] * n, axis=self._bax[k]) if n else np.take(z, [], axis=self._bax[k])
                              for k, z in self._zero1.items()})
        self.steps = 0

    # -------------------------------------------------------------- membership
    def __len__(self) -> int:
        return self._n

    def add(self, state: Mapping[str, Any] | None = None) -> int:
        """Append a stream (zero state, or ``state`` as from :meth:`state_of`); return its position."""
        one = self.model.prepare_state(state, 1)
        host = self._host_state()
        self._set_host_state({k: np.concatenate([host[k], one[k]], axis=self._bax[k]) for k in host})
        return self._n - 1

    def drop(self, i: int) -> None:
        """Remove stream ``i``; the streams after it move down by one position."""
        i = self._index(i)
        self._set_host_state({k: np.delete(v, i, axis=self._bax[k]) for k, v in self._host_state().items()})

    def reset(self, i: int | None = None) -> None:
        """Zero the state of stream ``i`` (of every stream when ``i`` is None)."""
        host = self._host_state()
        if i is None:
            host = {k: np.zeros_like(v) for k, v in host.items()}
        else:
            i = self._index(i)
            for k, v in host.items():
                np.moveaxis(v, self._bax[k], 0)[i] = 0  # a view: zeroes stream i's column
        self._set_host_state(host)

    def state_of(self, i: int) -> dict[str, np.ndarray]:
        """A copy of stream ``i``'s state (batch 1), by state input name: feed it to a
        :class:`~edgelstm.runtime.stream.Stream` or to :meth:`add`."""
        i = self._index(i)
        return {k: np.ascontiguousarray(np.take(v, [i], axis=self._bax[k])) for k, v in self._host_state().items()}

    # -------------------------------------------------------------- stepping
    def step(self, frames: Any) -> RunResult:
        """One time step of every stream: ``frames [n, features]`` (row ``i`` feeds stream ``i``).
        Per-step outputs lose their time axis; row ``i`` of each output belongs to stream ``i``."""
        if self._n == 0:
            raise UsageError("frames", "the group has no streams", expected="add() a stream first", got="0 streams")
        x = self.model.prepare_x(frames, frame=True, name="frames", nan=self._nan)
        if x.shape[self._frame_batch] != self._n:
            raise InputError("frames", "one row per stream", expected=f"{self._n} along the batch axis",
                             got=list(x.shape))
        x1 = np.ascontiguousarray(np.expand_dims(x, self._time_axis))
        if self._x is None or tuple(self._x.shape()) != x1.shape:  # first step, or a symbolic size changed
            # an owned copy: on the CPU an OrtValue wraps the array, and later steps write into it
            self._x = ort.OrtValue.ortvalue_from_numpy(np.array(x1, copy=True), self._device, 0)
            self._binds = [self._binding(p) for p in range(2)]
            self._outs = None
        else:
            self._x.update_inplace(x1)
        p = self._par
        bnd = self._binds[p]
        # bound again before every run: onnxruntime copies an input read on another device than
        # the one it lives on *when it is bound* (as Stream does; tests/test_stream_binding.py)
        bnd.bind_ortvalue_input(self._x_name, self._x)
        if self._mixed:  # a state read across devices: its binding is a copy too
            read = self._sets[p]
            for name_in, _ in self._pairs:
                bnd.bind_ortvalue_input(name_in, read[name_in])
        self._sess.run_with_iobinding(bnd)
        self._par = 1 - p
        self.steps += 1
        if self._outs is None:  # first step on these buffers: learn the output shapes, then preallocate
            values = bnd.get_outputs()[len(self._pairs):]  # binding order: the state outputs, then the data
            self._outs = []
            for (name, per_step), v in zip(self._data, values):
                buf = np.empty(v.shape(), v.numpy().dtype)
                self._outs.append((name, per_step, buf))
                for b in self._binds:
                    b.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(buf))
            outs = {name: v.numpy() for (name, _), v in zip(self._data, values)}
        else:
            outs = {name: buf.copy() for name, _, buf in self._outs}
        return RunResult({k: drop_time(v, self._per_step[k]) for k, v in outs.items()}, None,
                         self.model.labels, self.model.label_output)

    # -------------------------------------------------------------- internals
    def _binding(self, p: int):
        """Read state set ``p``, write set ``1 - p`` (one buffer is never both read and written)."""
        bnd = self._sess.io_binding()
        read, write = self._sets[p], self._sets[1 - p]
        for name_in, name_out in self._pairs:
            bnd.bind_ortvalue_input(name_in, read[name_in])
            bnd.bind_ortvalue_output(name_out, write[name_in])
        bnd.bind_ortvalue_input(self._x_name, self._x)
        if self._lengths_name is not None:
            bnd.bind_ortvalue_input(self._lengths_name, self._ones)
        for name, _ in self._data:
            bnd.bind_output(name, "cpu")
        return bnd

    def _index(self, i: Any) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -self._n <= i < self._n:
            raise UsageError("i", "no such stream in the group", expected=f"a position in 0..{self._n - 1}", got=i)
        return int(i) % self._n

    def _host_state(self) -> dict[str, np.ndarray]:
        return {k: np.array(v.numpy(), copy=True) for k, v in self._sets[self._par].items()}

    def _set_host_state(self, host: dict[str, np.ndarray]) -> None:
        """New buffers for ``host`` (the group's size may have changed): two state sets, set 0 current."""
        k0, v0 = next(iter(host.items()))
        n = v0.shape[self._bax[k0]]
        self._sets = [{k: ort.OrtValue.ortvalue_from_numpy(np.array(v, copy=True, order="C"), self._device, 0)
                       for k, v in host.items()} for _ in range(2)]
        self._par = 0
        # sequence_lens is read on the host by every provider's RNN kernels: keep it there
        self._ones = ort.OrtValue.ortvalue_from_numpy(np.ones(max(n, 1), self._lengths_dtype)[:n]) \
            if self._lengths_name is not None else None
        self._x = None  # the bindings are made again on the next step
        self._n = n

    def __repr__(self) -> str:
        return f"StreamGroup(n={self._n}, steps={self.steps}, model={self.model.path.name!r})"
