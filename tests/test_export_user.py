"""The Python API on users' own modules (nn.LSTM / nn.GRU / nn.RNN / PeepholeLSTM), the refusals,
the failure path (nothing written), and the graph-cleaning passes on hand-built graphs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from edgelstm.errors import ExportError, ModelDefinitionError, UnsupportedError, UsageError  # noqa: E402
from edgelstm.exporters import export, read_manifest  # noqa: E402
from edgelstm.exporters import graph as G  # noqa: E402
from edgelstm.exporters.checks import tolerance  # noqa: E402
from edgelstm.exporters.spec import parse_input_spec  # noqa: E402
from edgelstm.models import PeepholeLSTM  # noqa: E402
from clitools import cpu_session  # noqa: E402

torch.set_num_threads(1)


_sess = cpu_session


def _close(got, ref):
    # fp32 rule of docs/DESIGN.md (reordered fp32 sums; error relative to the output's scale)
    assert float(np.max(np.abs(got - ref))) <= tolerance(ref)


class Wrap(nn.Module):
    def __init__(self, rnn, out):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(out, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y)


LAYERS = {
    "lstm": lambda bf: nn.LSTM(3, 4, num_layers=2, batch_first=bf),
    "gru-bi": lambda bf: nn.GRU(3, 4, batch_first=bf, bidirectional=True),
    "rnn-tanh-bi": lambda bf: nn.RNN(3, 4, num_layers=2, batch_first=bf, bidirectional=True),
    "rnn-relu-nobias": lambda bf: nn.RNN(3, 4, nonlinearity="relu", bias=False, batch_first=bf),
    "peephole-bi": lambda bf: PeepholeLSTM(3, 4, batch_first=bf, bidirectional=True),
}


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_user_module_any_batch_and_time(tmp_path, kind, batch_first):
    torch.manual_seed(0)
    rnn = LAYERS[kind](batch_first)
    model = Wrap(rnn, 4 * (2 if rnn.bidirectional else 1)).eval()
    spec = "x:float32[batch,time,3]" if batch_first else "x:float32[time,batch,3]"
    path = tmp_path / "u.onnx"
    report = export(model, None, path, inputs=[spec])
    assert report.path == str(path) and report.size_bytes == path.stat().st_size
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count({"lstm": "LSTM", "gru-bi": "GRU", "peephole-bi": "LSTM"}.get(kind, "RNN")) == rnn.num_layers
    x = np.random.default_rng(0).standard_normal((13, 5, 3) if not batch_first else (5, 13, 3)).astype(np.float32)
    got = _sess(path).run(None, {"x": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    _close(got, ref)
    assert read_manifest(path).family == {"lstm": "lstm", "gru-bi": "gru", "peephole-bi": "peephole"}.get(kind, "rnn")


class Tagger(nn.Module):
    """Takes lengths but leaves them to the exporter (the rnn sees the padded batch)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x, lengths):
        y, _ = self.rnn(x)
        return self.head(y)


def test_lengths_and_exposed_state_stream(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "t.onnx"
    report = export(Tagger().eval(), None, path, inputs=["x:float32[batch,time,3]", "lengths:int64[batch]"],
                    lengths_input="lengths", expose_state=True)
    m = read_manifest(path)
    assert [t.name for t in m.inputs] == ["x", "lengths", "h_in", "c_in"]
    assert [t.name for t in m.outputs] == ["y", "h_out", "c_out"] and m.streamable
    assert report.recurrent_nodes[0]["sequence_lens"] and report.recurrent_nodes[0]["initial_h"]
    sess = _sess(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 10, 3)).astype(np.float32)
    zeros = np.zeros((1, 2, 5), np.float32)
    whole = sess.run(None, {"x": x, "lengths": np.array([10, 10]), "h_in": zeros, "c_in": zeros})
    h, c, ys = zeros, zeros, []
    for a, b in ((0, 3), (3, 10)):
        y, h, c = sess.run(None, {"x": x[:, a:b], "lengths": np.array([b - a] * 2), "h_in": h, "c_in": c})
        ys.append(y)
    _close(np.concatenate(ys, 1), whole[0])
    _close(h, whole[1])
    # padded sequence == the same sequence alone
    padded = sess.run(None, {"x": x, "lengths": np.array([10, 4]), "h_in": zeros, "c_in": zeros})
    alone = sess.run(None, {"x": x[1:, :4], "lengths": np.array([4]), "h_in": zeros[:, :1], "c_in": zeros[:, :1]})
    _close(alone[0], padded[0][1:, :4])
    _close(alone[1], padded[1][:, 1:])


def test_bare_recurrent_module_and_example_tensors(tmp_path):
    torch.manual_seed(0)
    gru = nn.GRU(3, 4, num_layers=2).eval()
    path = tmp_path / "g.onnx"
    report = export(gru, [torch.randn(7, 2, 3)], path, inputs=["x:float32[time,batch,3]"],
                    output_names=["y", "h"])
    assert report.parity[0]["sizes"] == {"time": 7, "batch": 2}
    assert [o.name for o in _sess(path).get_outputs()] == ["y", "h"]


def test_two_recurrent_modules_expose_state_each(tmp_path):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LSTM(3, 4, batch_first=True)
            self.b = nn.GRU(4, 2, batch_first=True)

        def forward(self, x):
            return self.b(self.a(x)[0])[0]

    path = tmp_path / "two.onnx"
    export(Two().eval(), None, path, inputs=["x:float32[batch,time,3]"], expose_state=True)
    m = read_manifest(path)
    assert [t.name for t in m.inputs] == ["x", "h_in_0", "c_in_0", "h_in_1"]
    assert m.family == "custom" and m.layers == 2


class _CustomLSTM(nn.LSTM):
    def forward(self, x, hx=None):
        y, state = super().forward(x, hx)
        return y * 2, state


@pytest.mark.parametrize("make,error,match", [
    (lambda: Wrap(nn.LSTM(3, 4, proj_size=2, batch_first=True), 2), UnsupportedError, "proj_size"),
    (lambda: nn.Sequential(nn.Linear(3, 2)), ModelDefinitionError, "no recurrent layer"),
    (lambda: Wrap(_CustomLSTM(3, 4, batch_first=True), 4), UnsupportedError, "with its own forward"),
], ids=["proj_size", "no_recurrent", "subclass_forward"])
def test_refusals_write_nothing(tmp_path, make, error, match):
    path = tmp_path / "r.onnx"
    with pytest.raises(error, match=match):
        export(make().eval(), None, path, inputs=["x:float32[batch,time,3]"])
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "p.onnx"
    model = Wrap(nn.GRU(3, 4, batch_first=True), 4).eval()
    with pytest.raises(ExportError, match="ONNX outputs differ from PyTorch"):
        export(model, None, path, inputs=["x:float32[batch,time,3]"], atol_scale=1e-15)
    assert list(tmp_path.iterdir()) == []


def test_packed_sequence_without_lengths_input_is_refused(tmp_path):
    class Packs(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(3, 4, batch_first=True)

        def forward(self, x, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            return self.rnn(packed)[1][0]

    # without --lengths-input the checks would feed random integers as lengths (tests/test_export_patterns.py
    # exports the same pattern with it)
    with pytest.raises(UnsupportedError, match=r"pack_padded_sequence in forward \| the export does not know which "
                                               r"input holds the lengths.*--lengths-input NAME"):
        export(Packs().eval(), None, tmp_path / "p.onnx", inputs=["x:float32[batch,time,3]", "lengths:int64[batch]"])
    assert list(tmp_path.iterdir()) == []


def test_forward_that_raises_is_a_model_error(tmp_path):
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4)

        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(ModelDefinitionError, match="forward raised.*boom"):
        export(Bad(), None, tmp_path / "b.onnx", inputs=["x:float32[time,batch,3]"])


@pytest.mark.parametrize("text,match", [
    ("x:float32", "malformed input specification"),
    ("x:float7[batch]", "unknown dtype"),
    ("x:float32[batch,,3]", "malformed dim"),
    ("x:float32[batch,0]", "positive"),
], ids=["no_dims", "bad_dtype", "empty_dim", "zero_dim"])
def test_malformed_input_spec(text, match):
    with pytest.raises(UsageError, match=match):
        parse_input_spec(text)


def test_input_spec_parses():
    s = parse_input_spec("tokens : int64 [batch, src_time]")
    assert (s.name, s.dtype, s.dims, s.dynamic_axes) == ("tokens", "int64", ("batch", "src_time"),
                                                         {0: "batch", 1: "src_time"})


# ------------------------------------------------------------------ graph-cleaning passes
def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_clean_fuses_transposes_and_drops_identity_and_dead_nodes():
    nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0, 2]),
             helper.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0, 2]),   # undoes t1
             helper.make_node("Identity", ["t2"], ["i"]),
             helper.make_node("Relu", ["i"], ["y"]),
             helper.make_node("Neg", ["x"], ["dead"])]
    m = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4])])
    G.clean(m)
    assert [n.op_type for n in m.graph.node] == ["Relu"] and m.graph.node[0].input[0] == "x"
    onnx.checker.check_model(m, full_check=True)


def test_clean_folds_constants_and_keeps_output_names():
    c = helper.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.array([2.0], np.float32)))
    nodes = [c, helper.make_node("Mul", ["c", "c"], ["c2"]), helper.make_node("Add", ["x", "c2"], ["a"]),
             helper.make_node("Identity", ["a"], ["y"])]
    m = _model(nodes, [_vi("x", [3])], [_vi("y", [3])])
    G.clean(m)
    assert [n.op_type for n in m.graph.node] == ["Add"] and m.graph.node[0].output[0] == "y"
    folded = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    assert list(folded.values())[0].tolist() == [4.0]
    x = np.arange(3, dtype=np.float32)
    np.testing.assert_array_equal(ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0], x + 4)


def test_output_name_count_must_match(tmp_path):
    with pytest.raises(UsageError, match="count differs from the model's outputs"):
        export(Wrap(nn.GRU(3, 4, batch_first=True), 4).eval(), None, tmp_path / "o.onnx",
               inputs=["x:float32[batch,time,3]"], output_names=["a", "b"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("opset", [14, 17, 20], ids=lambda o: f"opset{o}")
def test_opsets(tmp_path, opset):
    path = tmp_path / "o.onnx"
    report = export(Wrap(nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True), 8).eval(), None, path,
                    inputs=["x:float32[batch,time,3]"], opset=opset)
    assert report.opset == opset == read_manifest(path).opset
    assert {o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")} == {opset}


def test_opset_out_of_range(tmp_path):
    with pytest.raises(UsageError, match="opset out of range"):
        export(Wrap(nn.GRU(3, 4, batch_first=True), 4).eval(), None, tmp_path / "o.onnx",
               inputs=["x:float32[batch,time,3]"], opset=9)
