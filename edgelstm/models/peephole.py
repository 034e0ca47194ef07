"""``PeepholeLSTM``: a drop-in for ``nn.LSTM`` with peephole connections (Gers & Schmidhuber).

Same constructor, forward, parameter names and layouts as ``nn.LSTM`` (``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, gate order ``i, f, g, o``, suffix
``_reverse``), plus three peephole vectors per layer and direction, each ``[hidden_size]``:
``weight_ci_l{k}`` and ``weight_cf_l{k}`` read ``c_{t-1}``, ``weight_co_l{k}`` reads ``c_t``::

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi + w_ci * c_{t-1})
    f = sigmoid(W_if x + b_if + W_hf h + b_hf + w_cf * c_{t-1})
    g = tanh   (W_ig x + b_ig + W_hg h + b_hg)
    c_t = f * c_{t-1} + i * g
    o = sigmoid(W_io x + b_io + W_ho h + b_ho + w_co * c_t)
    h_t = o * tanh(c_t)

This is exactly the ONNX ``LSTM`` operator with ``P = [w_ci, w_co, w_cf]`` (see
:func:`edgelstm.reference.torch_lstm_to_onnx`), which the exporter relies on.

``forward(input, hx=None, *, lengths=None)``: ``lengths`` (int ``[batch]``, 1..time) gives ONNX
``sequence_lens`` semantics: outputs past a sequence's length are zero, ``h_n``/``c_n`` are the
state at its last valid step, and the reverse direction starts at that step. A
``PackedSequence`` input is accepted too, as with ``nn.LSTM``.

The input projection ``x @ W_ih^T`` is done for all time steps in one matmul; only the
recurrent part loops over time.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from edgelstm.errors import InputError, UsageError

__all__ = ["PeepholeLSTM", "lstm_layer"]


def _checking() -> bool:
    """Value checks (data-dependent Python branches) are skipped while tracing or exporting."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    try:
        if torch.compiler.is_compiling():
            return False
    except AttributeError:  # pragma: no cover - older torch
        pass
    return not torch.onnx.is_in_onnx_export()


def lstm_layer(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b: Tensor | None,
               peepholes: tuple[Tensor, Tensor, Tensor], mask: Tensor | None,
               reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of one peephole-LSTM layer, time-major.

    ``x [T, B, in]``, ``h``/``c [B, H]``, ``peepholes = (w_ci, w_cf, w_co)`` each ``[H]``,
    ``mask [T, B, 1]`` bool (True = valid step) or None.
    Returns ``out [T, B, H]`` (zero at invalid steps), ``h_n``, ``c_n``.
    """
    w_ci, w_cf, w_co = peepholes
    xw = torch.matmul(x, w_ih.t())                         # [T, B, 4H], every step at once
    if b is not None:
        xw = xw + b
    w_hh_t = w_hh.t()                                      # [H, 4H]
    T = x.shape[0]
    outs: list[Tensor] = [h] * T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        gates = torch.addmm(xw[t], h, w_hh_t)              # [B, 4H]
        i, f, g, o = gates.chunk(4, 1)
        i = torch.sigmoid(i + w_ci * c)
        f = torch.sigmoid(f + w_cf * c)
        g = torch.tanh(g)
        c_new = f * c + i * g
        o = torch.sigmoid(o + w_co * c_new)
        h_new = o * torch.tanh(c_new)
        if mask is None:
            h, c = h_new, c_new
            outs[t] = h_new
        else:
            m = mask[t]                                    # [B, 1]
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c)
            outs[t] = h_new * m
    return torch.stack(outs, 0), h, c


class PeepholeLSTM(nn.Module):
    """``nn.LSTM`` with peepholes. See the module docstring for the equations and names."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"PeepholeLSTM {name}", "must be a positive integer", expected=">= 1", got=value)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise UsageError("PeepholeLSTM dropout", "out of range", expected="0 <= dropout <= 1", got=dropout)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0  # nn.LSTM attribute, read by code that inspects LSTMs generically
        factory = {"device": device, "dtype": dtype}
        num_dir = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * num_dir
            for d in range(num_dir):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                params = [("weight_ih", (4 * hidden_size, layer_in)), ("weight_hh", (4 * hidden_size, hidden_size))]
                if bias:
                    params += [("bias_ih", (4 * hidden_size,)), ("bias_hh", (4 * hidden_size,))]
                params += [("weight_ci", (hidden_size,)), ("weight_cf", (hidden_size,)), ("weight_co", (hidden_size,))]
                for name, shape in params:
                    self.register_parameter(name + sfx, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name + sfx)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, peepholes included (as nn.LSTM)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def _param(self, name: str, layer: int, d: int) -> Tensor:
        return getattr(self, f"{name}_l{layer}" + ("_reverse" if d == 1 else ""))

    # ------------------------------------------------------------------ forward
    def forward(self, input, hx: tuple[Tensor, Tensor] | None = None, *, lengths: Tensor | None = None):
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise UsageError("PeepholeLSTM lengths", "a PackedSequence carries its own lengths",
                                 expected=None, got="lengths")
            return self._forward_packed(input, hx)
        unbatched = input.dim() == 2
        if input.dim() not in (2, 3):
            raise InputError("PeepholeLSTM input", "wrong rank", expected="2 (unbatched) or 3 dims",
                             got=list(input.shape))
        if unbatched:
            input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        x = input.transpose(0, 1) if self.batch_first else input   # [T, B, in]
        out, (h_n, c_n) = self._run(x, hx, lengths)
        if self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return out, (h_n, c_n)

    def _forward_packed(self, packed: PackedSequence, hx):
        # pad_packed_sequence returns the original batch order, the order hx and h_n use.
        padded, lens = pad_packed_sequence(packed, batch_first=False)
        out, (h_n, c_n) = self._run(padded, hx, lens)
        if packed.sorted_indices is not None:
            out = out.index_select(1, packed.sorted_indices)
            lens = lens.index_select(0, packed.sorted_indices.cpu())
        data = pack_padded_sequence(out, lens, enforce_sorted=True)
        return PackedSequence(data.data, data.batch_sizes, packed.sorted_indices, packed.unsorted_indices), (h_n, c_n)

    def _run(self, x: Tensor, hx, lengths):
        T, B = x.shape[0], x.shape[1]
        num_dir = 2 if self.bidirectional else 1
        H = self.hidden_size
        check = _checking()
        if check and x.shape[2] != self.input_size:
            raise InputError("PeepholeLSTM input", "wrong feature size", expected=self.input_size, got=x.shape[2])
        if hx is None:
            h0 = x.new_zeros(self.num_layers * num_dir, B, H)
            c0 = h0
        else:
            h0, c0 = hx
            if check:
                for name, s in (("h_0", h0), ("c_0", c0)):
                    if tuple(s.shape) != (self.num_layers * num_dir, B, H):
                        raise InputError(f"PeepholeLSTM {name}", "wrong shape",
                                         expected=[self.num_layers * num_dir, B, H], got=list(s.shape))
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if check:
                if tuple(lengths.shape) != (B,):
                    raise InputError("PeepholeLSTM lengths", "wrong shape", expected=[B], got=list(lengths.shape))
                if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
                    raise InputError("PeepholeLSTM lengths", "length out of range", expected=f"1..{T}",
                                     got=lengths.tolist())
            steps = torch.arange(T, device=x.device).unsqueeze(1)           # [T, 1]
            mask = (steps < lengths.unsqueeze(0)).unsqueeze(2)              # [T, B, 1]
        h_out, c_out = [], []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(num_dir):
                k = layer * num_dir + d
                b = None
                if self.bias:
                    b = self._param("bias_ih", layer, d) + self._param("bias_hh", layer, d)
                out, h, c = lstm_layer(
                    layer_in, h0[k], c0[k], self._param("weight_ih", layer, d), self._param("weight_hh", layer, d),
                    b, (self._param("weight_ci", layer, d), self._param("weight_cf", layer, d),
                        self._param("weight_co", layer, d)), mask, reverse=d == 1)
                outs.append(out)
                h_out.append(h)
                c_out.append(c)
            layer_in = outs[0] if num_dir == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        return layer_in, (torch.stack(h_out, 0), torch.stack(c_out, 0))
