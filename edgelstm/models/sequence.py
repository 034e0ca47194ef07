"""``SequenceModel``: one recurrent stack (``.rnn``) and one linear task head (``.head``).

The interface every part relies on (docs/DESIGN.md)::

    forward(x [batch, time, features], lengths [batch] | None, state | None) -> (out, state_out)

``state`` is ``(h, c)`` for lstm/peephole and ``(h,)`` for gru, each
``[layers*directions, batch, hidden]``. ``lengths`` follows ONNX ``sequence_lens``: steps past a
sequence's length do not change its state, their recurrent outputs are zero, and the reverse
direction starts at the last valid step. For ``nn.LSTM``/``nn.GRU`` that is what a
``PackedSequence`` computes; ``PeepholeLSTM`` masks the same way.

Task heads: ``classify`` -> ``head(top-layer final h, directions concatenated)`` ``[B, classes]``
(see :func:`top_state`); ``label``/``regress``/``forecast`` -> ``head(y)`` per step
``[B, T, outputs]`` (past a sequence's length ``y`` is zero, so those steps give ``head.bias``).
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from edgelstm.errors import InputError
from edgelstm.models.config import ModelConfig
from edgelstm.models.peephole import PeepholeLSTM, _checking

__all__ = ["SequenceModel", "check_inputs", "make_rnn"]


def make_rnn(config: ModelConfig, input_size: int | None = None) -> nn.Module:
    cls = {"lstm": nn.LSTM, "peephole": PeepholeLSTM, "gru": nn.GRU, "attention": nn.LSTM}[config.family]
    return cls(config.input_size if input_size is None else input_size, config.hidden_size,
               num_layers=config.num_layers, batch_first=config.batch_first,
               # nn.LSTM warns about dropout with one layer: it only acts between layers
               dropout=config.dropout if config.num_layers > 1 else 0.0,
               bidirectional=config.bidirectional)


def check_inputs(name: str, x: Tensor, lengths, state, *, features: int, n_state: int,
                 state_shape: tuple[int, int]) -> Tensor | None:
    """Validate the model-boundary inputs; return ``lengths`` as a tensor (None = all full).

    ``state_shape`` is ``(layers*directions, hidden)``. Value checks are skipped while tracing
    or exporting (they would freeze data-dependent branches into the graph).
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise InputError(f"{name} x", "wrong rank", expected="[batch, time, features]",
                         got=list(x.shape) if isinstance(x, Tensor) else type(x).__name__)
    check = _checking()
    B, T = x.shape[0], x.shape[1]
    if check:
        if x.shape[2] != features:
            raise InputError(f"{name} x", "wrong feature size", expected=features, got=x.shape[2])
        if not x.is_floating_point():
            raise InputError(f"{name} x", "wrong dtype", expected="a floating-point tensor", got=x.dtype)
    if state is not None:
        if not isinstance(state, (tuple, list)) or len(state) != n_state:
            want = "(h, c)" if n_state == 2 else "(h,)"
            raise InputError(f"{name} state", "wrong number of state tensors", expected=want,
                             got=len(state) if isinstance(state, (tuple, list)) else type(state).__name__)
        if check:
            for label, s in zip(("h", "c"), state):
                if tuple(s.shape) != (state_shape[0], B, state_shape[1]):
                    raise InputError(f"{name} state {label}", "wrong shape",
                                     expected=[state_shape[0], B, state_shape[1]], got=list(s.shape))
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if check:
        if tuple(lengths.shape) != (B,):
            raise InputError(f"{name} lengths", "wrong shape", expected=[B], got=list(lengths.shape))
        if lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise InputError(f"{name} lengths", "wrong dtype", expected="an integer tensor", got=lengths.dtype)
        if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
            raise InputError(f"{name} lengths", "length out of range", expected=f"1..{T}", got=lengths.tolist())
    return lengths


#: The exporter's way in (:func:`rnn_hook`): consulted by :func:`run_rnn` first, so an export
#: can route its recurrent proxies without patching this module.
_RNN_HOOK: ContextVar[Callable | None] = ContextVar("edgelstm_run_rnn_hook", default=None)


@contextlib.contextmanager
def rnn_hook(hook: Callable) -> Iterator[None]:
    """While the block runs, :func:`run_rnn` first calls ``hook(rnn, x, lengths, hx)`` and returns
    its result unless it is None (the hook does not take that rnn). Used by
    ``edgelstm.exporters.runs`` while exporting: a proxied rnn gets the padded tensor and
    ``lengths=`` instead of a packed sequence."""
    token = _RNN_HOOK.set(hook)
    try:
        yield
    finally:
        _RNN_HOOK.reset(token)


def run_rnn(rnn: nn.Module, x: Tensor, lengths: Tensor | None, hx):
    """Run ``rnn`` on batch-major ``x`` with ONNX ``sequence_lens`` semantics.

    Returns ``y [B, T, D*H]`` (zeros past each length) and the rnn's final state.
    """
    hook = _RNN_HOOK.get()
    if hook is not None:
        out = hook(rnn, x, lengths, hx)
        if out is not None:
            return out
    T = x.shape[1]
    rnn_in = x if rnn.batch_first else x.transpose(0, 1)
    if isinstance(rnn, PeepholeLSTM):
        y, h_n = rnn(rnn_in, hx, lengths=lengths)
    elif lengths is None or (_checking() and bool((lengths == T).all())):
        y, h_n = rnn(rnn_in, hx)
    else:
        packed = pack_padded_sequence(rnn_in, lengths.to("cpu", torch.int64), batch_first=rnn.batch_first,
                                      enforce_sorted=False)
        y, h_n = rnn(packed, hx)
        y, _ = pad_packed_sequence(y, batch_first=rnn.batch_first, total_length=T)
    if not rnn.batch_first:
        y = y.transpose(0, 1)
    return y, h_n


def top_state(h_n: Tensor, directions: int) -> Tensor:
    """Top layer's final hidden state, directions concatenated: ``[L*D, B, H]`` -> ``[B, D*H]``.

    Forward direction: the state at the last valid step; reverse direction: its state after
    reading back to step 0 (the whole sequence). This is ONNX ``Y_h`` of the top layer,
    transposed to ``[B, D, H]`` and flattened. (Reading the reverse half of ``y`` at the last
    valid step instead would give it a one-step view: its recurrent weights would get no
    gradient.)
    """
    if directions == 1:
        return h_n[-1]                                       # [B, H]: one Gather in ONNX
    # flatten(1), not reshape(B, -1): it exports to one Flatten instead of Shape/Gather/Concat/Reshape
    return h_n[-directions:].transpose(0, 1).flatten(1)      # [D, B, H] -> [B, D*H]


class SequenceModel(nn.Module):
    """lstm / peephole / gru family: ``.rnn`` + ``.head`` (``nn.Linear``) for one task."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        if config.family not in ("lstm", "peephole", "gru"):
            raise InputError("SequenceModel family", "not a plain recurrent family",
                             expected=["lstm", "peephole", "gru"], got=config.family)
        self.config = config
        self.rnn = make_rnn(config)
        self.head = nn.Linear(config.hidden_size * config.directions, config.num_outputs)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h",) if self.config.family == "gru" else ("h", "c")

    def initial_state(self, batch: int, *, device=None, dtype=torch.float32) -> tuple[Tensor, ...]:
        c = self.config
        z = torch.zeros(c.num_layers * c.directions, batch, c.hidden_size, device=device, dtype=dtype)
        return tuple(z.clone() for _ in self.state_names)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: tuple[Tensor, ...] | None = None):
        c = self.config
        lengths = check_inputs("SequenceModel", x, lengths, state, features=c.input_size,
                               n_state=len(self.state_names),
                               state_shape=(c.num_layers * c.directions, c.hidden_size))
        hx = None
        if state is not None:
            hx = state[0] if c.family == "gru" else (state[0], state[1])
        y, h_n = run_rnn(self.rnn, x, lengths, hx)          # y [B, T, D*H]
        state_out = (h_n,) if c.family == "gru" else tuple(h_n)
        if c.task == "classify":
            return self.head(top_state(state_out[0], c.directions)), state_out   # [B, classes]
        return self.head(y), state_out                             # [B, T, outputs]
