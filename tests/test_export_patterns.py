"""``edgelstm export`` on what users write (models in tests/user_models/export_patterns.py, shaped
like public ones): tuple state arguments, packed sequences, cells and hand-written recurrences as
step modules, dynamic image widths, decoder loops, tied checkpoints, time-major state. Each is
exported through the CLI and compared here with the unmodified module at sizes other than the
example's (the export's own checks ran too)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgelstm.cli import main  # noqa: E402
from edgelstm.errors import CheckpointError, ModelDefinitionError, UnsupportedError, UsageError  # noqa: E402
from edgelstm.exporters import read_manifest  # noqa: E402
from edgelstm.exporters.checks import tolerance  # noqa: E402
from edgelstm.exporters.spec import (InputSpec, TupleArg, leaves, parse_argument, parse_output_name,  # noqa: E402
                                     parse_sizes, structure)
from clitools import cpu_session, run_cli  # noqa: E402

torch.set_num_threads(1)
FILE = Path(__file__).parent / "user_models" / "export_patterns.py"
_spec = importlib.util.spec_from_file_location("export_patterns_reference", FILE)
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)
RNG = np.random.default_rng(7)


_cli = run_cli


def _export(tmp_path, capsys, factory, *args) -> Path:
    out = tmp_path / f"{factory}.onnx"
    code, _, err = _cli(["export", "--model", f"{FILE}:{factory}", *args, "-o", str(out)], capsys)
    assert code == 0, err
    return out


_sess = cpu_session


def _close(got, ref):
    # fp32 rule of docs/DESIGN.md (reordered fp32 sums; error relative to the output's scale)
    assert got.shape == ref.shape and float(np.max(np.abs(got - ref))) <= tolerance(ref)


def _ops(path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _mixed_lengths(batch, time, *, descending=False):
    lengths = RNG.integers(1, time + 1, size=batch)
    lengths[0] = time
    return np.sort(lengths)[::-1].copy() if descending else lengths


# ------------------------------------------------------------------------------ 1. tuple arguments
def test_word_lm_tuple_hidden_argument_is_two_state_inputs(tmp_path, capsys):
    out = _export(tmp_path, capsys, "word_lm", "--input", "input:int64[time,batch]",
                  "--input", "hidden=(h:float32[2,batch,16],c:float32[2,batch,16])")
    m = read_manifest(out)
    assert [t.name for t in m.inputs] == ["input", "h", "c"]
    assert [t.name for t in m.outputs] == ["y", "h_out", "c_out"]
    assert [(s.input, s.output, s.shape) for s in m.states] == [("h", "h_out", [2, "batch", 16]),
                                                               ("c", "c_out", [2, "batch", 16])]
    assert _ops(out).count("LSTM") == 2
    model = P.word_lm()
    tokens = RNG.integers(0, 50, size=(9, 5))
    h, c = (RNG.standard_normal((2, 5, 16)).astype(np.float32) for _ in range(2))
    sess = _sess(out)
    got = sess.run(None, {"input": tokens, "h": h, "c": c})
    with torch.no_grad():
        ref, (rh, rc) = model(_t(tokens), (_t(h), _t(c)))
    for g, r in zip(got, (ref, rh, rc)):
        _close(g, r.numpy())
    # state fed back: two chunks == the whole sequence
    y1, h1, c1 = sess.run(None, {"input": tokens[:4], "h": h, "c": c})
    y2, h2, c2 = sess.run(None, {"input": tokens[4:], "h": h1, "c": c1})
    _close(np.concatenate([y1, y2]), got[0])
    _close(h2, got[1])


@pytest.mark.parametrize("text,expected", [
    ("hidden=(h:float32[2,batch,200],c:float32[2,batch,200])", ("h", "c")),
    ("state=((h0:float32[batch,4],c0:float32[batch,4]),h1:float32[batch,4])", (("h0", "c0"), "h1")),
    ("state=(inner=(a:f32[batch],b:i64[batch]),c:float32[3])", (("a", "b"), "c")),
], ids=["pair", "nested", "named_nested"])
def test_tuple_argument_syntax(text, expected):
    arg = parse_argument(text)
    assert isinstance(arg, TupleArg) and arg.name == text.split("=")[0]
    assert structure(arg) == expected
    assert all(isinstance(s, InputSpec) for s in leaves([arg]))
    assert parse_argument(arg.text()) == arg


@pytest.mark.parametrize("text,match", [
    ("hidden=((h:float32[2,batch,4])", "unbalanced parentheses"),
    ("hidden=(h:float32[2,batch,4]", "malformed tuple argument; expected NAME=\\(a"),
    ("hidden=(h:float32[2,batch,4],)", "empty part in a tuple argument"),
    ("hidden=h:float32[4]", "malformed tuple argument"),
    ("hid-den=(h:float32[4])", "malformed tuple argument name"),
    ("hidden=(h:float32[2,batch,4],c:float7[4])", "unknown dtype"),
])
def test_tuple_argument_syntax_errors(text, match):
    with pytest.raises(UsageError, match=match):
        parse_argument(text)


def test_output_names_and_sizes_syntax():
    assert parse_output_name("logits") == ["logits"]
    assert parse_output_name("hidden=(h_out,(c_out,d))") == ["h_out", "c_out", "d"]
    assert parse_sizes(["width=16", "batch=3"], "--min-size") == {"width": 16, "batch": 3}
    with pytest.raises(UsageError, match=r"--min-size 'width' \| malformed value; expected NAME=N"):
        parse_sizes(["width"], "--min-size")
    with pytest.raises(UsageError, match="axis given twice"):
        parse_sizes(["width=3", "width=4"], "--example-size")


# ------------------------------------------------------------------------------ 2. packed sequences
@pytest.mark.parametrize("factory,descending", [("packed_classifier", False), ("packed_mean_pool", True)],
                         ids=["enforce_sorted_false_final_state", "enforce_sorted_true_padded_output"])
def test_packed_sequence_is_sequence_lens_from_the_lengths_input(tmp_path, capsys, factory, descending):
    out = _export(tmp_path, capsys, factory, "--input", "text:int64[batch,time]", "--input", "lengths:int64[batch]",
                  "--lengths-input", "lengths")
    import onnx

    lstm = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "LSTM")
    assert lstm.input[4], "sequence_lens is wired"
    model = getattr(P, factory)()
    text = RNG.integers(1, 30, size=(5, 9))
    lengths = _mixed_lengths(5, 9, descending=descending)
    text[np.arange(9)[None, :] >= lengths[:, None]] = 0  # padded batch
    got = _sess(out).run(None, {"text": text, "lengths": lengths})[0]
    with torch.no_grad():
        ref = model(_t(text), _t(lengths)).numpy()
    _close(got, ref)


def test_lengths_downsampled_inside_the_model_are_followed(tmp_path, capsys):
    out = _export(tmp_path, capsys, "downsampled", "--input", "feats:float32[batch,time,4]",
                  "--input", "feat_lengths:int64[batch]", "--lengths-input", "feat_lengths")
    feats = RNG.standard_normal((4, 13, 4)).astype(np.float32)
    lengths = _mixed_lengths(4, 13)
    got = _sess(out).run(None, {"feats": feats, "feat_lengths": lengths})[0]
    with torch.no_grad():
        ref = P.downsampled()(_t(feats), _t(lengths)).numpy()
    _close(got, ref)


def test_raw_lengths_to_a_downsampled_rnn_are_refused(tmp_path, capsys):
    out = tmp_path / "d.onnx"
    code, _, err = _cli(["export", "--model", f"{FILE}:downsampled_unpacked", "--input", "feats:float32[batch,time,4]",
                         "--input", "feat_lengths:int64[batch]", "--lengths-input", "feat_lengths", "-o", str(out)],
                        capsys)
    assert code == UnsupportedError.exit_code and len(err.strip().splitlines()) == 1
    assert re.search(r"gru \(GRU\) \| the lengths input counts 6 steps but this module sees 3: the model changes the "
                     r"time axis before it.*pack the sequence inside forward with the lengths transformed", err), err
    assert not out.exists()


# ------------------------------------------------------------------------------ 3. step modules
def test_lstm_cell_attention_step_is_one_fused_lstm_with_state(tmp_path, capsys):
    out = _export(tmp_path, capsys, "attention_decoder_step", "--input", "token:int64[batch]",
                  "--input", "state=(h:float32[batch,16],c:float32[batch,16])", "--input", "memory:float32[batch,src,16]")
    assert _ops(out).count("LSTM") == 1
    m = read_manifest(out)
    assert [t.name for t in m.outputs] == ["y0", "h_out", "c_out", "y1"]
    assert [(s.input, s.output) for s in m.states] == [("h", "h_out"), ("c", "c_out")]
    assert m.family == "lstm" and m.hidden_size == 16
    model = P.attention_decoder_step()
    memory = RNG.standard_normal((3, 7, 16)).astype(np.float32)
    h = c = np.zeros((3, 16), np.float32)
    th, tc = _t(h), _t(c)
    token = np.array([1, 2, 3])
    sess = _sess(out)
    for _ in range(3):  # greedy steps, the state fed back on both sides
        logits, h, c, alpha = sess.run(None, {"token": token, "h": h, "c": c, "memory": memory})
        with torch.no_grad():
            rl, (th, tc), ra = model(_t(token), (th, tc), _t(memory))
        for g, r in zip((logits, h, c, alpha), (rl, th, tc, ra)):
            _close(g, r.numpy())
        token = logits.argmax(1)


def test_hand_written_layernorm_lstm_step_exports_as_plain_operators(tmp_path, capsys):
    out = _export(tmp_path, capsys, "layernorm_lstm_step", "--input", "token:int64[batch]",
                  "--input", "state=(h:float32[batch,12],c:float32[batch,12])")
    ops = _ops(out)
    assert not {"LSTM", "GRU", "RNN"} & set(ops) and "LayerNormalization" in ops
    m = read_manifest(out)
    assert [(s.input, s.output) for s in m.states] == [("h", "h_out"), ("c", "c_out")]
    assert m.family == "custom" and m.hidden_size == 12
    model = P.layernorm_lstm_step()
    h = c = RNG.standard_normal((4, 12)).astype(np.float32)
    th, tc = _t(h), _t(c)
    sess = _sess(out)
    for step in range(3):
        token = RNG.integers(0, 20, size=4)
        y, h, c = sess.run(None, {"token": token, "h": h, "c": c})
        with torch.no_grad():
            ry, (th, tc) = model(_t(token), (th, tc))
        _close(y, ry.numpy())
        _close(c, tc.numpy())


def test_gru_cell_step_with_declared_state_quantizes_like_a_gru(tmp_path, capsys):
    out = _export(tmp_path, capsys, "gru_cell_step", "--input", "x:float32[batch,6]", "--input", "h:float32[batch,10]",
                  "--output-name", "h_out", "--state", "h=h_out")
    assert _ops(out).count("GRU") == 1
    m = read_manifest(out)
    assert [(s.input, s.output) for s in m.states] == [("h", "h_out")]
    x, h = RNG.standard_normal((5, 6)).astype(np.float32), RNG.standard_normal((5, 10)).astype(np.float32)
    with torch.no_grad():
        ref = P.gru_cell_step()(_t(x), _t(h)).numpy()
    _close(_sess(out).run(None, {"x": x, "h": h})[0], ref)
    q = tmp_path / "q.onnx"
    code, _, err = _cli(["quantize", str(out), "-o", str(q), "--mode", "int8-dynamic", "--force-int8"], capsys)
    assert code == 0, err
    got = _sess(q).run(None, {"x": x, "h": h})[0]
    # int8 weights: error of the order of the weight scale, far below the outputs' range of ~1
    assert float(np.max(np.abs(got - ref))) < 0.05


def test_state_declaration_errors(tmp_path, capsys):
    code, _, err = _cli(["export", "--model", f"{FILE}:gru_cell_step", "--input", "x:float32[batch,6]",
                         "--input", "h:float32[batch,10]", "--output-name", "h_out", "--state", "x=h_out",
                         "-o", str(tmp_path / "s.onnx")], capsys)
    assert code == UsageError.exit_code
    assert "--state x=h_out | the output fed back has another shape than the input; expected [2, 6], got [2, 10]" in err


def test_python_loop_over_a_cell_is_refused_with_the_step_rewrite(tmp_path, capsys):
    out = tmp_path / "loop.onnx"
    code, _, err = _cli(["export", "--model", f"{FILE}:cell_loop", "--input", "x:float32[batch,time,4]", "-o",
                         str(out)], capsys)
    assert code == UnsupportedError.exit_code and len(err.strip().splitlines()) == 1
    assert "cell (a cell) | called a different number of times at different sizes (6 call(s) at" in err
    assert "a Python loop over a dynamic axis" in err and "export one step instead" in err
    assert "--input 'state=(h:float32[batch,H],c:float32[batch,H])'" in err
    assert not out.exists()


def test_no_recurrence_and_no_state_is_refused_with_the_rewrite(tmp_path):
    from edgelstm.exporters import export

    with pytest.raises(ModelDefinitionError, match=r"model has no recurrent layer and no state declared; expected "
                                                   r"an nn.LSTM.*hand-written recurrence step"):
        export(torch.nn.Linear(3, 2), None, tmp_path / "l.onnx", inputs=["x:float32[batch,3]"])


# ------------------------------------------------------------------------------ 4. sizes
def test_crnn_dynamic_width_needs_min_size(tmp_path, capsys):
    image = "image:float32[batch,1,32,width]"
    code, _, err = _cli(["export", "--model", f"{FILE}:crnn", "--input", image, "-o", str(tmp_path / "no.onnx")],
                        capsys)
    assert code == ModelDefinitionError.exit_code and "'width': 1" not in err
    assert "float32[1, 1, 32, 1]" in err and "--min-size NAME=N" in err
    report = tmp_path / "r.json"
    out = _export(tmp_path, capsys, "crnn", "--input", image, "--min-size", "width=16", "--example-size", "width=24",
                  "--json", str(report))
    import json

    cases = json.loads(report.read_text())["parity"]
    assert cases[0]["sizes"]["width"] == 24 and min(c["sizes"]["width"] for c in cases) == 16
    assert read_manifest(out).inputs[0].shape == ["batch", 1, 32, "width"]
    x = RNG.standard_normal((3, 1, 32, 40)).astype(np.float32)
    with torch.no_grad():
        ref = P.crnn()(_t(x)).numpy()
    _close(_sess(out).run(None, {"image": x})[0], ref)


@pytest.mark.parametrize("args,match", [
    (["--min-size", "height=4"], r"--min-size height=4 \| not a named axis of the inputs"),
    (["--min-size", "width=16", "--example-size", "width=8"], r"--example-size \| below the minimum size"),
])
def test_size_option_errors(tmp_path, capsys, args, match):
    code, _, err = _cli(["export", "--model", f"{FILE}:crnn", "--input", "image:float32[batch,1,32,width]", *args,
                         "-o", str(tmp_path / "e.onnx")], capsys)
    assert code == UsageError.exit_code and re.search(match, err), err


# ------------------------------------------------------------------------------ 5. decoder loops
def test_greedy_decoder_loop_references_each_weight_once(tmp_path, capsys):
    out = _export(tmp_path, capsys, "greedy_decoder", "--input", "encoder_hidden:float32[batch,128]",
                  "--output-name", "tokens", "--output-name", "logits")
    model = P.greedy_decoder()
    unique = sum(p.numel() * 4 for p in model.parameters())
    assert _ops(out).count("GRU") == model.MAX_LEN
    # the bound: the file within 10 % of the unique fp32 weights (graph structure is the rest)
    assert out.stat().st_size <= 1.10 * unique, (out.stat().st_size, unique)
    h = RNG.standard_normal((4, 128)).astype(np.float32)
    tokens, logits = _sess(out).run(None, {"encoder_hidden": h})
    with torch.no_grad():
        rt, rl = model(_t(h))
    assert np.array_equal(tokens, rt.numpy())
    _close(logits, rl.numpy())


# ------------------------------------------------------------------------------ 6. tied checkpoints
def _save(kind: str, model, path: Path) -> None:
    from safetensors.torch import save_file, save_model

    if kind == "save_model":
        save_model(model, str(path))
    elif kind == "save_file":  # save_file refuses shared tensors: the tied name left out
        save_file({k: v for k, v in model.state_dict().items() if k != "decoder.weight"}, str(path))
    else:
        torch.save(model.state_dict(), str(path))


@pytest.mark.parametrize("kind,suffix", [("save_model", ".safetensors"), ("save_file", ".safetensors"),
                                         ("torch_save", ".pt")])
def test_tied_checkpoint_restores_tied_names(tmp_path, capsys, kind, suffix):
    torch.manual_seed(11)
    trained = P.WordLM().eval()
    ckpt = tmp_path / f"w{suffix}"
    _save(kind, trained, ckpt)
    out = _export(tmp_path, capsys, "word_lm", "--checkpoint", str(ckpt), "--input", "input:int64[time,batch]",
                  "--input", "hidden=(h:float32[2,batch,16],c:float32[2,batch,16])")
    tokens = RNG.integers(0, 50, size=(5, 3))
    zeros = np.zeros((2, 3, 16), np.float32)
    with torch.no_grad():
        ref = trained(_t(tokens), (_t(zeros), _t(zeros)))[0].numpy()
    _close(_sess(out).run(None, {"input": tokens, "h": zeros, "c": zeros})[0], ref)


def test_tied_names_with_different_values_are_refused(tmp_path):
    from safetensors.torch import save_file

    from edgelstm.checkpoint import load_weights

    sd = {k: v.clone() for k, v in P.word_lm().state_dict().items()}
    sd["decoder.weight"] += 1.0
    save_file(sd, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match=r"tied tensors hold different values; expected \['encoder.weight', "
                                              r"'decoder.weight'\] equal"):
        load_weights(P.WordLM(), tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------ 7. state in any layout
def test_time_major_model_exposes_state(tmp_path, capsys):
    out = _export(tmp_path, capsys, "time_major_tagger", "--input", "x:float32[time,batch,5]", "--expose-state")
    m = read_manifest(out)
    assert [(s.input, s.output) for s in m.states] == [("h_in", "h_out"), ("c_in", "c_out")]
    x = RNG.standard_normal((10, 3, 5)).astype(np.float32)
    zeros = np.zeros((1, 3, 7), np.float32)
    sess = _sess(out)
    y1, h, c = sess.run(None, {"x": x[:6], "h_in": zeros, "c_in": zeros})
    y2, _, _ = sess.run(None, {"x": x[6:], "h_in": h, "c_in": c})
    with torch.no_grad():
        ref = P.time_major_tagger()(_t(x)).numpy()
    _close(np.concatenate([y1, y2]), ref)


def test_named_output_tuple_pairs_with_the_tuple_argument(tmp_path, capsys):
    out = _export(tmp_path, capsys, "word_lm", "--input", "tokens:int64[time,batch]",
                  "--input", "hidden=(h:float32[2,batch,16],c:float32[2,batch,16])",
                  "--output-name", "logp", "--output-name", "hidden=(h_next,c_next)")
    m = read_manifest(out)
    assert [t.name for t in m.outputs] == ["logp", "h_next", "c_next"]
    assert [(s.input, s.output) for s in m.states] == [("h", "h_next"), ("c", "c_next")]
    assert m.streamable is False  # time-major tokens: `edgelstm run` streams [batch, time, ...] only


def test_padded_output_ends_at_the_longest_sequence_like_pytorch(tmp_path, capsys):
    """pad_packed_sequence without total_length pads to max(lengths), which may be under the input's time."""
    out = _export(tmp_path, capsys, "packed_tagger", "--input", "text:int64[batch,time]",
                  "--input", "lengths:int64[batch]", "--lengths-input", "lengths")
    text = RNG.integers(1, 30, size=(3, 9))
    lengths = np.array([5, 2, 4])
    got = _sess(out).run(None, {"text": text, "lengths": lengths})[0]
    with torch.no_grad():
        ref = P.packed_tagger()(_t(text), _t(lengths)).numpy()
    assert ref.shape == (3, 5, 3)
    _close(got, ref)


@pytest.mark.parametrize("cell,state,op", [
    (lambda: torch.nn.LSTMCell(3, 4), "state=(h:float32[batch,4],c:float32[batch,4])", "LSTM"),
    (lambda: torch.nn.RNNCell(3, 4, nonlinearity="relu"), "h:float32[batch,4]", "RNN"),
], ids=["lstm_cell", "rnn_cell_relu"])
def test_bare_cell_is_one_fused_node(tmp_path, cell, state, op):
    from edgelstm.exporters import export

    torch.manual_seed(0)
    module = cell().eval()
    path = tmp_path / "cell.onnx"
    states = [] if state.startswith("state=") else [("h", "h_out")]
    names = None if state.startswith("state=") else ["h_out"]
    export(module, None, path, inputs=["x:float32[batch,3]", state], states=states, output_names=names)
    assert _ops(path).count(op) == 1
    m = read_manifest(path)
    assert [s.output for s in m.states] == (["h_out", "c_out"] if op == "LSTM" else ["h_out"])
    x, h = RNG.standard_normal((5, 3)).astype(np.float32), RNG.standard_normal((5, 4)).astype(np.float32)
    feeds = {"x": x, "h": h} | ({"c": h} if op == "LSTM" else {})
    got = _sess(path).run(None, feeds)
    with torch.no_grad():
        ref = module(_t(x), (_t(h), _t(h))) if op == "LSTM" else (module(_t(x), _t(h)),)
    for g, r in zip(got, ref):
        _close(g, r.numpy())
