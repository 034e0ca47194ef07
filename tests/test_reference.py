"""edgelstm.reference: the NumPy oracle against ONNX's own cases and against PyTorch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgelstm import reference as ref
from edgelstm.errors import InputError, UnsupportedError

torch.set_num_threads(1)

OPS = {"LSTM": ref.lstm, "GRU": ref.gru, "RNN": ref.rnn}
EXPECTED_CASES = {
    "test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes", "test_lstm_batchwise",
    "test_lstm_reverse", "test_lstm_bidirectional", "test_gru_defaults", "test_gru_with_initial_bias",
    "test_gru_seq_length", "test_gru_batchwise", "test_gru_reverse", "test_gru_bidirectional",
    "test_simple_rnn_defaults", "test_simple_rnn_with_initial_bias", "test_rnn_seq_length",
    "test_simple_rnn_batchwise", "test_simple_rnn_reverse", "test_simple_rnn_bidirectional",
}


def test_all_official_cases_are_found(onnx_rnn_cases):
    assert EXPECTED_CASES <= set(onnx_rnn_cases)


def test_reference_reproduces_official_cases(onnx_rnn_cases):
    # The expected outputs were computed in float32 by ONNX's own NumPy code; ours runs in
    # float64, so the only difference is float32 rounding over <= 3 steps: 1e-6 is ~10 ulps.
    failures = {}
    for name, (op, attrs, inputs, expected) in sorted(onnx_rnn_cases.items()):
        got = dict(zip(["Y", "Y_h", "Y_c"], OPS[op](**inputs, **attrs)))
        for out_name, want in expected.items():
            err = float(np.abs(got[out_name] - want).max())
            if got[out_name].shape != want.shape or err > 1e-6:
                failures[f"{name}:{out_name}"] = (got[out_name].shape, want.shape, err)
    assert not failures, failures
    assert len(onnx_rnn_cases) >= len(EXPECTED_CASES)


def _torch_layer_weights(mod, layer, d, kind):
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    p = {n: getattr(mod, n + sfx).detach().numpy() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    conv = {"lstm": ref.torch_lstm_to_onnx, "gru": ref.torch_gru_to_onnx, "rnn": ref.torch_rnn_to_onnx}[kind]
    return conv(p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])


def _run_reference_stack(kind, mod, x, lengths, h0, c0):
    """Layer-by-layer reference for a torch module (time-major x [T, B, I])."""
    num_dir = 2 if mod.bidirectional else 1
    layer_in = x
    hs, cs = [], []
    for layer in range(mod.num_layers):
        Ws, Rs, Bs = zip(*[_torch_layer_weights(mod, layer, d, kind)[:3] for d in range(num_dir)])
        sl = slice(layer * num_dir, (layer + 1) * num_dir)
        direction = "bidirectional" if num_dir == 2 else "forward"
        args = dict(sequence_lens=lengths, initial_h=h0[sl], direction=direction)
        if kind == "lstm":
            Y, Y_h, Y_c = ref.lstm(layer_in, np.stack(Ws), np.stack(Rs), np.stack(Bs), initial_c=c0[sl], **args)
            cs.append(Y_c)
        elif kind == "gru":
            Y, Y_h = ref.gru(layer_in, np.stack(Ws), np.stack(Rs), np.stack(Bs), linear_before_reset=1, **args)
        else:
            Y, Y_h = ref.rnn(layer_in, np.stack(Ws), np.stack(Rs), np.stack(Bs), **args)
        hs.append(Y_h)
        layer_in = Y.transpose(0, 2, 1, 3).reshape(Y.shape[0], Y.shape[2], -1)   # [T, B, D*H]
    return layer_in, np.concatenate(hs), (np.concatenate(cs) if cs else None)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["1layer-uni", "2layer-bi"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_reference_matches_torch(kind, layers, bidirectional, ragged):
    torch.manual_seed(0)
    T, B, I, H = 6, 3, 4, 5
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    mod = cls(I, H, num_layers=layers, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(T, B, I)
    h0 = torch.randn(layers * D, B, H)
    c0 = torch.randn(layers * D, B, H)
    lengths = torch.tensor([6, 3, 1]) if ragged else torch.full((B,), T)
    with torch.no_grad():
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        hx = (h0, c0) if kind == "lstm" else h0
        y, state = mod(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=T)
    h_n = state[0] if kind == "lstm" else state
    Y, Y_h, Y_c = _run_reference_stack(kind, mod, x.numpy(), lengths.numpy(), h0.numpy(), c0.numpy())
    # float32 torch vs float64 reference over 6 steps of O(1) values: ~1e-7 expected, 1e-5 bound.
    np.testing.assert_allclose(Y, y.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(Y_h, h_n.numpy(), atol=1e-5, rtol=0)
    if kind == "lstm":
        np.testing.assert_allclose(Y_c, state[1].numpy(), atol=1e-5, rtol=0)
    if ragged:   # ONNX semantics: nothing is written past a sequence's length
        assert np.all(Y[1:, 2] == 0) and np.all(Y[3:, 1] == 0)


@pytest.mark.parametrize("layout", [0, 1], ids=["layout0", "layout1"])
def test_layout_and_lengths_shapes(layout):
    rng = np.random.default_rng(1)
    T, B, I, H = 4, 2, 3, 2
    X = rng.standard_normal((T, B, I) if layout == 0 else (B, T, I)).astype(np.float32)
    W, R = rng.standard_normal((2, 4 * H, I)), rng.standard_normal((2, 4 * H, H))
    Y, Y_h, Y_c = ref.lstm(X, W, R, sequence_lens=np.array([4, 2]), direction="bidirectional", layout=layout)
    assert Y.dtype == np.float32
    if layout == 0:
        assert Y.shape == (T, 2, B, H) and Y_h.shape == (2, B, H)
        # the reverse direction of sequence 1 starts at its last valid step (t=1) and ends at t=0
        np.testing.assert_array_equal(Y_h[1, 1], Y[0, 1, 1])
    else:
        assert Y.shape == (B, T, 2, H) and Y_h.shape == (B, 2, H)
        np.testing.assert_array_equal(Y_h[1, 1], Y[1, 0, 1])


def test_zero_length_gives_zero_state():
    # onnxruntime 1.32 ends an empty sequence in zero state (not the initial one); we match it
    rng = np.random.default_rng(2)
    X, W, R = rng.standard_normal((3, 2, 2)), rng.standard_normal((1, 9, 2)), rng.standard_normal((1, 9, 3))
    h0 = rng.standard_normal((1, 2, 3))
    Y, Y_h = ref.gru(X, W, R, sequence_lens=np.array([0, 3]), initial_h=h0)
    assert np.all(Y_h[0, 0] == 0) and np.all(Y[:, 0, 0] == 0) and np.any(Y_h[0, 1] != 0)


def test_input_forget_couples_gates():
    # input_forget=1 means f = 1 - i; check via the cell state of one step from c0
    rng = np.random.default_rng(3)
    X, W, R = rng.standard_normal((1, 1, 2)), rng.standard_normal((1, 8, 2)), rng.standard_normal((1, 8, 2))
    c0 = rng.standard_normal((1, 1, 2))
    _, _, Y_c = ref.lstm(X, W, R, initial_c=c0, input_forget=1)
    pre = X[0] @ W[0].T
    i, _, _, c = np.split(pre, 4, axis=-1)
    i = 1 / (1 + np.exp(-i))
    np.testing.assert_allclose(Y_c[0], (1 - i) * c0[0] + i * np.tanh(c), atol=1e-12)


def test_weight_conversion_round_trip():
    rng = np.random.default_rng(4)
    w_ih, w_hh, b_ih, b_hh = (rng.standard_normal(s) for s in [(8, 3), (8, 2), (8,), (8,)])
    peep = [rng.standard_normal(2) for _ in range(3)]
    W, R, B, P = ref.torch_lstm_to_onnx(w_ih, w_hh, b_ih, b_hh, peep)
    # ONNX order i, o, f, c  <- torch order i, f, g, o (blocks of 2 rows)
    np.testing.assert_array_equal(W[2:4], w_ih[6:8])
    np.testing.assert_array_equal(P, np.concatenate([peep[0], peep[2], peep[1]]))
    back = ref.onnx_lstm_to_torch(W, R, B, P)
    for name, want in zip(["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ci", "weight_cf", "weight_co"],
                          [w_ih, w_hh, b_ih, b_hh, *peep]):
        np.testing.assert_array_equal(back[name], want)
    Wg, Rg, Bg = ref.torch_gru_to_onnx(rng.standard_normal((6, 3)), w_hh[:6], b_ih[:6], None)
    again = ref.onnx_gru_to_torch(Wg, Rg, Bg)
    np.testing.assert_array_equal(ref.torch_gru_to_onnx(again["weight_ih"], again["weight_hh"],
                                                        again["bias_ih"], again["bias_hh"])[0], Wg)
    assert np.all(Bg[6:] == 0)


ARGS = dict(X=np.zeros((2, 1, 3)), W=np.zeros((1, 8, 3)), R=np.zeros((1, 8, 2)))


@pytest.mark.parametrize("kw,err,match", [
    (dict(clip=1.0), UnsupportedError, r"LSTM clip \| cell clipping is not implemented"),
    (dict(activation_alpha=[0.1]), UnsupportedError, "parameterised activations are not implemented"),
    (dict(activations=["HardSigmoid", "Tanh", "Tanh"]), UnsupportedError, "activation 'HardSigmoid' is not implemented"),
    (dict(activations=["Sigmoid"]), UnsupportedError, "wrong number of activation functions"),
    (dict(direction="sideways"), UnsupportedError, "unknown direction"),
    (dict(layout=2), UnsupportedError, "unknown layout"),
    (dict(W=np.zeros((1, 7, 3))), InputError, r"LSTM W \| wrong shape; expected \[1, 4\*hidden, 3\]"),
    (dict(sequence_lens=np.array([3])), InputError, r"length out of range; expected 0..2, got \[3\]"),
    (dict(sequence_lens=np.array([1.0])), InputError, "sequence_lens | wrong shape or dtype"),
    (dict(initial_h=np.zeros((1, 2, 2))), InputError, r"initial_h \| wrong shape; expected \[1, 1, 2\]"),
    (dict(hidden_size=3), InputError, "hidden_size | disagrees with W; expected 2, got 3"),
], ids=["clip", "alpha", "activation", "activation-count", "direction", "layout", "W-shape", "length",
        "length-dtype", "initial-h", "hidden-size"])
def test_refuses_what_it_does_not_implement(kw, err, match):
    with pytest.raises(err, match=match):
        ref.lstm(**{**ARGS, **kw})


def test_other_activations_are_applied():
    rng = np.random.default_rng(5)
    X, W, R = rng.standard_normal((2, 1, 2)), rng.standard_normal((1, 2, 2)), rng.standard_normal((1, 2, 2))
    Y_relu, _ = ref.rnn(X, W, R, activations=["Relu"])
    Y_tanh, _ = ref.rnn(X, W, R)
    assert np.all(Y_relu >= 0) and not np.allclose(Y_relu, Y_tanh)
