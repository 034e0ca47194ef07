"""Pure-NumPy reference implementations of the ONNX recurrent operators ``LSTM``, ``GRU`` and ``RNN``.

These are the independent oracle the tests and the verification harness compare PyTorch and
onnxruntime against. They follow the ONNX operator specification (opset 14+) and use its
symbols: ``X, W, R, B, sequence_lens, initial_h, initial_c, P`` in, ``Y, Y_h, Y_c`` out; LSTM
gates ``i, o, f, c`` with peepholes ``p_i, p_o, p_f``; GRU gates ``z, r, h``.

Structure: one function per operator for ONE direction (``lstm_direction``, ``gru_direction``,
``rnn_direction``; the ``num_directions`` axis removed, ``X`` always ``[seq, batch, input]``)
and one wrapper per operator (``lstm``, ``gru``, ``rnn``) that checks shapes, handles
``direction`` and ``layout`` and stacks the directions back.

``sequence_lens`` semantics (what onnxruntime does and what edgelstm's models reproduce):
for sequence ``b`` of length ``L``, the forward direction reads steps ``0 .. L-1``, the reverse
direction reads ``L-1 .. 0``; ``Y`` is zero for steps ``>= L``; ``Y_h`` / ``Y_c`` are the state
after the last step read. A length of 0 gives zero ``Y_h`` / ``Y_c`` (not the initial state): the
spec is silent and this is what onnxruntime 1.32's CPU kernels do for LSTM, GRU and RNN.

Computation is done in float64 and returned in the dtype of ``X``, so the reference is a more
accurate oracle than the float32 implementations it checks.

Options that are not implemented raise :class:`~edgelstm.errors.UnsupportedError`; nothing
is accepted and silently ignored. Supported activation names: Sigmoid, Tanh, Relu, Softsign,
Softplus (case-insensitive). ``activation_alpha`` / ``activation_beta`` are refused, and so is
``clip``: the spec's wording ("applied to the input of activations") and onnxruntime's kernels
disagree (measured: up to 0.16 apart), so there is no single answer to reproduce.

Also here: converters from PyTorch's parameter layout (gate order ``i, f, g, o`` for LSTM and
``r, z, n`` for GRU) to the ONNX one and back, for one direction. NumPy only.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from edgelstm.errors import InputError, UnsupportedError

__all__ = [
    "lstm", "gru", "rnn", "lstm_direction", "gru_direction", "rnn_direction",
    "torch_lstm_to_onnx", "onnx_lstm_to_torch", "torch_gru_to_onnx", "onnx_gru_to_torch",
    "torch_rnn_to_onnx", "ACTIVATIONS", "DIRECTIONS",
]

DIRECTIONS = ("forward", "reverse", "bidirectional")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so that exp never overflows.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0.0, x),
}


# ---------------------------------------------------------------------------- one direction
def lstm_direction(
    X: np.ndarray, W: np.ndarray, R: np.ndarray, B: np.ndarray, P: np.ndarray,
    H_0: np.ndarray, C_0: np.ndarray, sequence_lens: np.ndarray, *, reverse: bool = False,
    input_forget: bool = False,
    f: Callable = _sigmoid, g: Callable = np.tanh, h: Callable = np.tanh,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LSTM direction.

    Shapes (num_directions squeezed out): ``X [seq, batch, input]``, ``W [4*hidden, input]``,
    ``R [4*hidden, hidden]``, ``B [8*hidden]`` (``Wb`` then ``Rb``), ``P [3*hidden]``
    (``p_i, p_o, p_f``), ``H_0``/``C_0 [batch, hidden]``, ``sequence_lens [batch]``.
    Returns ``Y [seq, batch, hidden]``, ``Y_h``, ``Y_c [batch, hidden]``.
    """
    seq = X.shape[0]
    Wb, Rb = np.split(B, 2)
    p_i, p_o, p_f = np.split(P, 3)
    XW = X @ W.T + (Wb + Rb)                     # [seq, batch, 4*hidden], all steps at once
    H_t, C_t = H_0, C_0
    Y = np.zeros(X.shape[:2] + (H_0.shape[-1],), dtype=X.dtype)
    steps = range(seq - 1, -1, -1) if reverse else range(seq)
    for t in steps:
        valid = (t < sequence_lens)[:, None]     # [batch, 1]; state frozen outside the sequence
        gates = XW[t] + H_t @ R.T                # [batch, 4*hidden]
        i, o, fg, c = np.split(gates, 4, axis=-1)
        i = f(i + p_i * C_t)
        fg = 1.0 - i if input_forget else f(fg + p_f * C_t)
        c = g(c)
        C = fg * C_t + i * c
        o = f(o + p_o * C)
        H = o * h(C)
        Y[t] = np.where(valid, H, 0.0)
        H_t = np.where(valid, H, H_t)
        C_t = np.where(valid, C, C_t)
    empty = (sequence_lens == 0)[:, None]         # onnxruntime: an empty sequence ends in zero state
    return Y, np.where(empty, 0.0, H_t), np.where(empty, 0.0, C_t)


def gru_direction(
    X: np.ndarray, W: np.ndarray, R: np.ndarray, B: np.ndarray, H_0: np.ndarray,
    sequence_lens: np.ndarray, *, reverse: bool = False,
    linear_before_reset: int = 0, f: Callable = _sigmoid, g: Callable = np.tanh,
) -> tuple[np.ndarray, np.ndarray]:
    """One GRU direction.

    Shapes: ``X [seq, batch, input]``, ``W [3*hidden, input]``, ``R [3*hidden, hidden]``,
    ``B [6*hidden]`` (``Wb[zrh]`` then ``Rb[zrh]``), ``H_0 [batch, hidden]``,
    ``sequence_lens [batch]``. Returns ``Y [seq, batch, hidden]``, ``Y_h [batch, hidden]``.
    ``linear_before_reset=1`` is PyTorch's ``nn.GRU``: ``r * (H_{t-1} R_h^T + Rb_h)``.
    """
    seq, hidden = X.shape[0], H_0.shape[-1]
    Wb, Rb = np.split(B, 2)
    R_zr, R_h = R[: 2 * hidden], R[2 * hidden:]
    Rb_zr, Rb_h = Rb[: 2 * hidden], Rb[2 * hidden:]
    XW = X @ W.T + Wb                            # [seq, batch, 3*hidden]
    H_t = H_0
    Y = np.zeros(X.shape[:2] + (hidden,), dtype=X.dtype)
    steps = range(seq - 1, -1, -1) if reverse else range(seq)
    for t in steps:
        valid = (t < sequence_lens)[:, None]
        xz, xr, xh = np.split(XW[t], 3, axis=-1)
        hz, hr = np.split(H_t @ R_zr.T + Rb_zr, 2, axis=-1)
        z, r = f(xz + hz), f(xr + hr)
        if linear_before_reset:
            pre_h = xh + r * (H_t @ R_h.T + Rb_h)
        else:
            pre_h = xh + (r * H_t) @ R_h.T + Rb_h
        H = (1.0 - z) * g(pre_h) + z * H_t
        Y[t] = np.where(valid, H, 0.0)
        H_t = np.where(valid, H, H_t)
    return Y, np.where((sequence_lens == 0)[:, None], 0.0, H_t)


def rnn_direction(
    X: np.ndarray, W: np.ndarray, R: np.ndarray, B: np.ndarray, H_0: np.ndarray,
    sequence_lens: np.ndarray, *, reverse: bool = False, f: Callable = np.tanh,
) -> tuple[np.ndarray, np.ndarray]:
    """One simple-RNN direction: ``H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)``.

    Shapes: ``X [seq, batch, input]``, ``W [hidden, input]``, ``R [hidden, hidden]``,
    ``B [2*hidden]``, ``H_0 [batch, hidden]``. Returns ``Y [seq, batch, hidden]``, ``Y_h``.
    """
    seq = X.shape[0]
    Wb, Rb = np.split(B, 2)
    XW = X @ W.T + (Wb + Rb)
    H_t = H_0
    Y = np.zeros(X.shape[:2] + (H_0.shape[-1],), dtype=X.dtype)
    steps = range(seq - 1, -1, -1) if reverse else range(seq)
    for t in steps:
        valid = (t < sequence_lens)[:, None]
        H = f(XW[t] + H_t @ R.T)
        Y[t] = np.where(valid, H, 0.0)
        H_t = np.where(valid, H, H_t)
    return Y, np.where((sequence_lens == 0)[:, None], 0.0, H_t)


# ---------------------------------------------------------------------------- wrappers
def _activations(op: str, names: Sequence[str] | None, per_dir: int, num_dir: int,
                 default: Sequence[str]) -> list[list[Callable]]:
    if names is None:
        names = list(default) * num_dir
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != per_dir * num_dir:
        raise UnsupportedError(f"{op} activations", "wrong number of activation functions",
                               expected=f"{per_dir} per direction ({per_dir * num_dir})", got=names)
    funcs = []
    for n in names:
        fn = ACTIVATIONS.get(n.lower())
        if fn is None:
            raise UnsupportedError(f"{op} activations", f"activation {n!r} is not implemented",
                                   expected=sorted(ACTIVATIONS), got=n)
        funcs.append(fn)
    return [funcs[d * per_dir:(d + 1) * per_dir] for d in range(num_dir)]


def _prepare(op: str, X, W, R, B, sequence_lens, initial_h, direction, layout, hidden_size,
             gates: int, activation_alpha, activation_beta, clip):
    if direction not in DIRECTIONS:
        raise UnsupportedError(f"{op} direction", "unknown direction", expected=list(DIRECTIONS), got=direction)
    if layout not in (0, 1):
        raise UnsupportedError(f"{op} layout", "unknown layout", expected="0 or 1", got=layout)
    if activation_alpha is not None or activation_beta is not None:
        raise UnsupportedError(f"{op} activation_alpha/activation_beta",
                               "parameterised activations are not implemented", expected=None,
                               got=(activation_alpha, activation_beta))
    if clip is not None:
        raise UnsupportedError(f"{op} clip", "cell clipping is not implemented (spec and onnxruntime disagree)",
                               expected=None, got=clip)
    X = np.asarray(X)
    if X.ndim != 3:
        raise InputError(f"{op} X", "wrong rank", expected="3 dims", got=X.shape)
    out_dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float32)
    X = X.astype(np.float64)
    if layout == 1:
        X = X.transpose(1, 0, 2)                 # -> [seq, batch, input]
    seq, batch, inp = X.shape
    num_dir = 2 if direction == "bidirectional" else 1
    W = np.asarray(W, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    if W.ndim != 3 or W.shape[0] != num_dir or W.shape[2] != inp or W.shape[1] % gates:
        raise InputError(f"{op} W", "wrong shape", expected=f"[{num_dir}, {gates}*hidden, {inp}]", got=list(W.shape))
    hidden = W.shape[1] // gates
    if hidden_size is not None and hidden_size != hidden:
        raise InputError(f"{op} hidden_size", "disagrees with W", expected=hidden, got=hidden_size)
    if R.shape != (num_dir, gates * hidden, hidden):
        raise InputError(f"{op} R", "wrong shape", expected=[num_dir, gates * hidden, hidden], got=list(R.shape))
    if B is None:
        B = np.zeros((num_dir, 2 * gates * hidden))
    B = np.asarray(B, dtype=np.float64)
    if B.shape != (num_dir, 2 * gates * hidden):
        raise InputError(f"{op} B", "wrong shape", expected=[num_dir, 2 * gates * hidden], got=list(B.shape))
    if sequence_lens is None:
        sequence_lens = np.full(batch, seq, dtype=np.int64)
    sequence_lens = np.asarray(sequence_lens)
    if sequence_lens.shape != (batch,) or not np.issubdtype(sequence_lens.dtype, np.integer):
        raise InputError(f"{op} sequence_lens", "wrong shape or dtype", expected=f"int [{batch}]",
                         got=f"{sequence_lens.dtype} {list(sequence_lens.shape)}")
    if batch and (sequence_lens.min() < 0 or sequence_lens.max() > seq):
        raise InputError(f"{op} sequence_lens", "length out of range", expected=f"0..{seq}",
                         got=sequence_lens.tolist())
    H_0 = _state(op, "initial_h", initial_h, num_dir, batch, hidden, layout)
    return X, W, R, B, sequence_lens, H_0, num_dir, hidden, out_dtype


def _state(op, name, value, num_dir, batch, hidden, layout):
    if value is None:
        return np.zeros((num_dir, batch, hidden))
    value = np.asarray(value, dtype=np.float64)
    if layout == 1:
        value = value.transpose(1, 0, 2)
    if value.shape != (num_dir, batch, hidden):
        want = [num_dir, batch, hidden] if layout == 0 else [batch, num_dir, hidden]
        got = list(value.shape) if layout == 0 else [value.shape[1], value.shape[0], value.shape[2]]
        raise InputError(f"{op} {name}", "wrong shape", expected=want, got=got)
    return value


def _finish(Ys, Hs, layout, dtype):
    Y = np.stack(Ys, axis=1)                     # [seq, num_dir, batch, hidden]
    Y_h = np.stack(Hs, axis=0)                   # [num_dir, batch, hidden]
    if layout == 1:
        Y = Y.transpose(2, 0, 1, 3)              # [batch, seq, num_dir, hidden]
        Y_h = Y_h.transpose(1, 0, 2)             # [batch, num_dir, hidden]
    return Y.astype(dtype), Y_h.astype(dtype)


def lstm(
    X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None, P=None, *,
    direction: str = "forward", layout: int = 0, hidden_size: int | None = None,
    activations: Sequence[str] | None = None, activation_alpha=None, activation_beta=None,
    clip: float | None = None, input_forget: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ONNX ``LSTM`` operator. Returns ``(Y, Y_h, Y_c)`` with ONNX shapes for ``layout``.

    layout 0: ``X [seq, batch, input]`` -> ``Y [seq, num_dir, batch, hidden]``,
    ``Y_h``/``Y_c [num_dir, batch, hidden]``; layout 1: ``X [batch, seq, input]`` ->
    ``Y [batch, seq, num_dir, hidden]``, ``Y_h``/``Y_c [batch, num_dir, hidden]``.
    """
    X, W, R, B, lens, H_0, num_dir, hidden, dtype = _prepare(
        "LSTM", X, W, R, B, sequence_lens, initial_h, direction, layout, hidden_size, 4,
        activation_alpha, activation_beta, clip)
    if input_forget not in (0, 1):
        raise InputError("LSTM input_forget", "must be 0 or 1", expected="0 or 1", got=input_forget)
    C_0 = _state("LSTM", "initial_c", initial_c, num_dir, X.shape[1], hidden, layout)
    if P is None:
        P = np.zeros((num_dir, 3 * hidden))
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (num_dir, 3 * hidden):
        raise InputError("LSTM P", "wrong shape", expected=[num_dir, 3 * hidden], got=list(P.shape))
    acts = _activations("LSTM", activations, 3, num_dir, ("Sigmoid", "Tanh", "Tanh"))
    Ys, Hs, Cs = [], [], []
    for d in range(num_dir):
        reverse = direction == "reverse" or d == 1
        f, g, h = acts[d]
        Y, H, C = lstm_direction(X, W[d], R[d], B[d], P[d], H_0[d], C_0[d], lens, reverse=reverse,
                                 input_forget=bool(input_forget), f=f, g=g, h=h)
        Ys.append(Y), Hs.append(H), Cs.append(C)
    Y, Y_h = _finish(Ys, Hs, layout, dtype)
    _, Y_c = _finish(Ys, Cs, layout, dtype)
    return Y, Y_h, Y_c


def gru(
    X, W, R, B=None, sequence_lens=None, initial_h=None, *, direction: str = "forward",
    layout: int = 0, hidden_size: int | None = None, activations: Sequence[str] | None = None,
    activation_alpha=None, activation_beta=None, clip: float | None = None,
    linear_before_reset: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ONNX ``GRU`` operator. Returns ``(Y, Y_h)``; shapes as in :func:`lstm`.

    PyTorch's ``nn.GRU`` is ``linear_before_reset=1``; the ONNX default is 0.
    """
    X, W, R, B, lens, H_0, num_dir, _, dtype = _prepare(
        "GRU", X, W, R, B, sequence_lens, initial_h, direction, layout, hidden_size, 3,
        activation_alpha, activation_beta, clip)
    if linear_before_reset not in (0, 1):
        raise InputError("GRU linear_before_reset", "must be 0 or 1", expected="0 or 1", got=linear_before_reset)
    acts = _activations("GRU", activations, 2, num_dir, ("Sigmoid", "Tanh"))
    Ys, Hs = [], []
    for d in range(num_dir):
        f, g = acts[d]
        Y, H = gru_direction(X, W[d], R[d], B[d], H_0[d], lens, reverse=direction == "reverse" or d == 1,
                             linear_before_reset=linear_before_reset, f=f, g=g)
        Ys.append(Y), Hs.append(H)
    return _finish(Ys, Hs, layout, dtype)


def rnn(
    X, W, R, B=None, sequence_lens=None, initial_h=None, *, direction: str = "forward",
    layout: int = 0, hidden_size: int | None = None, activations: Sequence[str] | None = None,
    activation_alpha=None, activation_beta=None, clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ONNX ``RNN`` operator (default activation Tanh). Returns ``(Y, Y_h)``."""
    X, W, R, B, lens, H_0, num_dir, _, dtype = _prepare(
        "RNN", X, W, R, B, sequence_lens, initial_h, direction, layout, hidden_size, 1,
        activation_alpha, activation_beta, clip)
    acts = _activations("RNN", activations, 1, num_dir, ("Tanh",))
    Ys, Hs = [], []
    for d in range(num_dir):
        Y, H = rnn_direction(X, W[d], R[d], B[d], H_0[d], lens, reverse=direction == "reverse" or d == 1,
                             f=acts[d][0])
        Ys.append(Y), Hs.append(H)
    return _finish(Ys, Hs, layout, dtype)


# ---------------------------------------------------------------------------- weight layouts
# Block permutations between PyTorch and ONNX gate orders.
_LSTM_TORCH_TO_ONNX = (0, 3, 1, 2)   # torch i,f,g,o -> onnx i,o,f,c
_LSTM_ONNX_TO_TORCH = (0, 2, 3, 1)   # onnx i,o,f,c -> torch i,f,g,o
_GRU_SWAP = (1, 0, 2)                # torch r,z,n <-> onnx z,r,h (its own inverse)


def _blocks(a: np.ndarray, order: Sequence[int], name: str, gates: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 0 or a.shape[0] % gates:
        raise InputError(name, "first axis is not a multiple of the gate count",
                         expected=f"{gates}*hidden", got=list(a.shape))
    parts = np.split(a, gates, axis=0)
    return np.concatenate([parts[k] for k in order], axis=0)


def _bias_pair(bias_ih, bias_hh, rows: int, order, gates, dtype) -> np.ndarray:
    b_ih = np.zeros(rows, dtype) if bias_ih is None else _blocks(bias_ih, order, "bias_ih", gates)
    b_hh = np.zeros(rows, dtype) if bias_hh is None else _blocks(bias_hh, order, "bias_hh", gates)
    return np.concatenate([b_ih, b_hh])


def torch_lstm_to_onnx(weight_ih, weight_hh, bias_ih=None, bias_hh=None, peepholes=None):
    """PyTorch LSTM parameters of one direction -> ONNX ``(W, R, B, P)`` of one direction.

    ``weight_ih [4H, input]``, ``weight_hh [4H, H]``, ``bias_* [4H]`` (None = zeros) in gate
    order ``i, f, g, o``; ``peepholes`` = ``(weight_ci, weight_cf, weight_co)`` each ``[H]`` or
    None. Returns ``W [4H, input]``, ``R [4H, H]``, ``B [8H]`` in order ``i, o, f, c``, and
    ``P [3H]`` = ``[p_i, p_o, p_f]`` (None when ``peepholes`` is None). Add the leading
    ``num_directions`` axis (``W[None]``) to feed an ONNX node.
    """
    W = _blocks(weight_ih, _LSTM_TORCH_TO_ONNX, "weight_ih", 4)
    R = _blocks(weight_hh, _LSTM_TORCH_TO_ONNX, "weight_hh", 4)
    B = _bias_pair(bias_ih, bias_hh, W.shape[0], _LSTM_TORCH_TO_ONNX, 4, W.dtype)
    P = None
    if peepholes is not None:
        ci, cf, co = (np.asarray(p) for p in peepholes)
        P = np.concatenate([ci, co, cf])
    return W, R, B, P


def onnx_lstm_to_torch(W, R, B=None, P=None) -> dict[str, np.ndarray]:
    """ONNX ``(W, R, B, P)`` of one direction -> PyTorch names without the ``_l{k}`` suffix.

    Returns ``weight_ih, weight_hh, bias_ih, bias_hh`` and, when ``P`` is given,
    ``weight_ci, weight_cf, weight_co`` (the :class:`edgelstm.models.PeepholeLSTM` names).
    """
    W, R = np.asarray(W), np.asarray(R)
    out = {"weight_ih": _blocks(W, _LSTM_ONNX_TO_TORCH, "W", 4),
           "weight_hh": _blocks(R, _LSTM_ONNX_TO_TORCH, "R", 4)}
    B = np.zeros(2 * W.shape[0], W.dtype) if B is None else np.asarray(B)
    Wb, Rb = np.split(B, 2)
    out["bias_ih"] = _blocks(Wb, _LSTM_ONNX_TO_TORCH, "B", 4)
    out["bias_hh"] = _blocks(Rb, _LSTM_ONNX_TO_TORCH, "B", 4)
    if P is not None:
        p_i, p_o, p_f = np.split(np.asarray(P), 3)
        out.update(weight_ci=p_i, weight_cf=p_f, weight_co=p_o)
    return out


def torch_gru_to_onnx(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """PyTorch GRU parameters of one direction (``r, z, n``) -> ONNX ``(W, R, B)`` (``z, r, h``).

    Use with ``linear_before_reset=1`` (PyTorch's GRU semantics).
    """
    W = _blocks(weight_ih, _GRU_SWAP, "weight_ih", 3)
    R = _blocks(weight_hh, _GRU_SWAP, "weight_hh", 3)
    B = _bias_pair(bias_ih, bias_hh, W.shape[0], _GRU_SWAP, 3, W.dtype)
    return W, R, B


def onnx_gru_to_torch(W, R, B=None) -> dict[str, np.ndarray]:
    """ONNX GRU ``(W, R, B)`` of one direction -> PyTorch ``weight_ih, weight_hh, bias_ih, bias_hh``."""
    W, R = np.asarray(W), np.asarray(R)
    B = np.zeros(2 * W.shape[0], W.dtype) if B is None else np.asarray(B)
    Wb, Rb = np.split(B, 2)
    return {"weight_ih": _blocks(W, _GRU_SWAP, "W", 3), "weight_hh": _blocks(R, _GRU_SWAP, "R", 3),
            "bias_ih": _blocks(Wb, _GRU_SWAP, "B", 3), "bias_hh": _blocks(Rb, _GRU_SWAP, "B", 3)}


def torch_rnn_to_onnx(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """PyTorch ``nn.RNN`` (tanh) parameters of one direction -> ONNX ``(W, R, B)`` (same order)."""
    W, R = np.asarray(weight_ih), np.asarray(weight_hh)
    B = _bias_pair(bias_ih, bias_hh, W.shape[0], (0,), 1, W.dtype)
    return W, R, B
