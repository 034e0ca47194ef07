"""PeepholeLSTM: ONNX's official peephole cases, equality with nn.LSTM, lengths, drop-in behaviour."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from edgelstm import reference as ref
from edgelstm.errors import InputError, UsageError
from edgelstm.models import PeepholeLSTM

torch.set_num_threads(1)


def _load_onnx_direction(mod: PeepholeLSTM, W, R, B=None, P=None, layer=0, d=0):
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    for name, value in ref.onnx_lstm_to_torch(W, R, B, P).items():
        getattr(mod, name + sfx).data.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    if P is None:
        for name in ("weight_ci", "weight_cf", "weight_co"):
            getattr(mod, name + sfx).data.zero_()


@pytest.mark.parametrize("case", ["test_lstm_with_peepholes", "test_lstm_defaults", "test_lstm_with_initial_bias"])
def test_official_onnx_cases(onnx_rnn_cases, case):
    _, attrs, inputs, expected = onnx_rnn_cases[case]
    X, W = inputs["X"], inputs["W"]
    mod = PeepholeLSTM(X.shape[2], attrs["hidden_size"])
    _load_onnx_direction(mod, W[0], inputs["R"][0], inputs.get("B", [None])[0], inputs.get("P", [None])[0])
    hx = None
    if "initial_h" in inputs:
        hx = (torch.from_numpy(inputs["initial_h"]), torch.from_numpy(inputs["initial_c"]))
    lengths = torch.from_numpy(inputs["sequence_lens"]) if "sequence_lens" in inputs else None
    with torch.no_grad():
        y, (h_n, c_n) = mod(torch.from_numpy(X), hx, lengths=lengths)
    # expected values were computed in float32 by ONNX's NumPy code over <= 3 steps: 1e-6 ~ 10 ulps
    np.testing.assert_allclose(h_n.numpy(), expected["Y_h"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(y[-1].numpy(), expected["Y_h"][0], atol=1e-6, rtol=0)


def _twins(layers, bidirectional, batch_first, seed=0):
    torch.manual_seed(seed)
    ref_lstm = nn.LSTM(3, 5, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    peep = PeepholeLSTM(3, 5, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    state = {k: v.clone() for k, v in ref_lstm.state_dict().items()}
    for k, v in peep.state_dict().items():
        if k.startswith(("weight_ci", "weight_cf", "weight_co")):
            state[k] = torch.zeros_like(v)
    peep.load_state_dict(state)
    return ref_lstm, peep


GRID = [(layers, bi, bf) for layers in (1, 2) for bi in (False, True) for bf in (False, True)]
GRID_IDS = [f"{layers}layer-{'bi' if bi else 'uni'}-{'bf' if bf else 'tm'}" for layers, bi, bf in GRID]


@pytest.mark.parametrize("layers,bidirectional,batch_first", GRID, ids=GRID_IDS)
def test_zero_peepholes_equal_nn_lstm(layers, bidirectional, batch_first):
    ref_lstm, peep = _twins(layers, bidirectional, batch_first)
    D = 2 if bidirectional else 1
    x = torch.randn(4, 6, 3) if batch_first else torch.randn(6, 4, 3)
    h0, c0 = torch.randn(layers * D, 4, 5), torch.randn(layers * D, 4, 5)
    results = []
    for mod in (ref_lstm, peep):
        xi = x.clone().requires_grad_(True)
        hi, ci = h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
        y, (h, c) = mod(xi, (hi, ci))
        (y.pow(2).sum() + h.sum() + 0.5 * c.sum()).backward()
        grads = {n: p.grad for n, p in mod.named_parameters() if not n.startswith("weight_c")}
        results.append((y, h, c, xi.grad, hi.grad, ci.grad, grads))
    # Both float32 with the same math; only the summation order differs. Bound: 1e-6 scaled by
    # the tensor's magnitude (as docs/DESIGN.md): gradients sum over batch*time terms and reach
    # ~5 here, where one float32 ulp is already 4.8e-7 (measured worst: 1.4e-6 at |g| = 4.6).
    def close(got, want, what):
        bound = 1e-6 * max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, atol=bound, rtol=0, msg=lambda m: f"{what}: {m}")

    for what, a, b in zip(["y", "h_n", "c_n", "dx", "dh0", "dc0"], results[0][:6], results[1][:6]):
        close(b, a, what)
    assert results[0][6].keys() == results[1][6].keys()
    for name in results[0][6]:
        close(results[1][6][name], results[0][6][name], name)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lengths_match_packed_nn_lstm(bidirectional):
    ref_lstm, peep = _twins(2, bidirectional, True, seed=1)
    x, lengths = torch.randn(3, 7, 3), torch.tensor([7, 2, 4])
    with torch.no_grad():
        y_ref, (h_ref, c_ref) = ref_lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        y_ref, _ = pad_packed_sequence(y_ref, batch_first=True, total_length=7)
        y, (h, c) = peep(x, lengths=lengths)
        y_p, (h_p, c_p) = peep(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        y_p, _ = pad_packed_sequence(y_p, batch_first=True, total_length=7)
    for got in ((y, h, c), (y_p, h_p, c_p)):
        for a, b in zip(got, (y_ref, h_ref, c_ref)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)   # float32 both, see above
    assert torch.all(y[1, 2:] == 0) and torch.all(y[2, 4:] == 0)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_peepholes_and_lengths_match_reference(bidirectional):
    torch.manual_seed(2)
    mod = PeepholeLSTM(3, 4, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 1, 3])
    h0, c0 = torch.randn(D, 3, 4), torch.randn(D, 3, 4)
    with torch.no_grad():
        y, (h, c) = mod(x, (h0, c0), lengths=lengths)
    conv = [ref.torch_lstm_to_onnx(*[getattr(mod, f"{n}_l0{'_reverse' if d else ''}").detach().numpy()
                                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")],
                                   peepholes=[getattr(mod, f"{n}_l0{'_reverse' if d else ''}").detach().numpy()
                                              for n in ("weight_ci", "weight_cf", "weight_co")])
            for d in range(D)]
    W, R, B, P = (np.stack(a) for a in zip(*conv))
    Y, Y_h, Y_c = ref.lstm(x.numpy(), W, R, B, lengths.numpy(), h0.numpy(), c0.numpy(), P,
                           direction="bidirectional" if bidirectional else "forward")
    # float32 module vs float64 oracle over 5 steps: errors ~1e-7, bound 1e-6
    np.testing.assert_allclose(y.numpy(), Y.transpose(0, 2, 1, 3).reshape(5, 3, D * 4), atol=1e-6, rtol=0)
    np.testing.assert_allclose(h.numpy(), Y_h, atol=1e-6, rtol=0)
    np.testing.assert_allclose(c.numpy(), Y_c, atol=1e-6, rtol=0)


def test_parameter_names_and_shapes():
    mod = PeepholeLSTM(3, 4, num_layers=2, bidirectional=True)
    shapes = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
    lstm_shapes = {k: tuple(v.shape) for k, v in nn.LSTM(3, 4, num_layers=2, bidirectional=True).state_dict().items()}
    assert {k: v for k, v in shapes.items() if not k.startswith(("weight_ci", "weight_cf", "weight_co"))} == lstm_shapes
    for layer in (0, 1):
        for sfx in ("", "_reverse"):
            for p in ("weight_ci", "weight_cf", "weight_co"):
                assert shapes[f"{p}_l{layer}{sfx}"] == (4,)
    assert len(shapes) == len(lstm_shapes) + 12


def test_unbatched_input_and_no_bias():
    torch.manual_seed(3)
    mod = PeepholeLSTM(2, 3, bias=False)
    assert not any(n.startswith("bias") for n, _ in mod.named_parameters())
    x = torch.randn(4, 2)
    y, (h, c) = mod(x)
    y_b, (h_b, c_b) = mod(x.unsqueeze(1))
    assert y.shape == (4, 3) and h.shape == (1, 3)
    torch.testing.assert_close(y, y_b[:, 0], rtol=0, atol=0)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(4)
    mod = PeepholeLSTM(2, 8, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 2)
    mod.train()
    a, _ = mod(x)
    b, _ = mod(x)
    mod.eval()
    c, _ = mod(x)
    d, _ = mod(x)
    assert not torch.equal(a, b)
    torch.testing.assert_close(c, d, rtol=0, atol=0)


@pytest.mark.parametrize("call,err,match", [
    (lambda m: m(torch.zeros(2, 3, 4, 1)), InputError, r"input \| wrong rank"),
    (lambda m: m(torch.zeros(5, 2, 4)), InputError, "wrong feature size; expected 3, got 4"),
    (lambda m: m(torch.zeros(5, 2, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))), InputError,
     r"h_0 \| wrong shape; expected \[1, 2, 4\], got \[1, 3, 4\]"),
    (lambda m: m(torch.zeros(5, 2, 3), lengths=torch.tensor([5, 0])), InputError,
     r"length out of range; expected 1..5, got \[5, 0\]"),
    (lambda m: m(torch.zeros(5, 2, 3), lengths=torch.tensor([5])), InputError, r"lengths \| wrong shape"),
], ids=["rank", "features", "state-shape", "zero-length", "lengths-shape"])
def test_bad_inputs(call, err, match):
    with pytest.raises(err, match=match):
        call(PeepholeLSTM(3, 4))


def test_bad_constructor_arguments():
    with pytest.raises(UsageError, match=re.escape("hidden_size | must be a positive integer; expected >= 1, got 0")):
        PeepholeLSTM(3, 0)
    with pytest.raises(UsageError, match=re.escape("dropout | out of range")):
        PeepholeLSTM(3, 4, dropout=1.5)
