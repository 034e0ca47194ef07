"""Input layout vs. streaming, and recurrent modules the forward never calls.

Exposed state is ``[layers*directions, batch, hidden]`` whatever the input layout, so
``--expose-state`` works on any data input with a named batch and a named time axis (the export
checks chunks cut along that axis). ``edgelstm run`` / ``Model.stream`` take ``x`` as
``[batch, time, ...]`` (docs/DESIGN.md), so only a batch-major graph is marked streamable; a
time-major one keeps its dims as given."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
from torch import nn  # noqa: E402

from edgelstm.cli import main  # noqa: E402
from edgelstm.errors import ModelDefinitionError, UnsupportedError  # noqa: E402
from edgelstm.exporters import export, read_manifest  # noqa: E402
from edgelstm.exporters.checks import tolerance  # noqa: E402

torch.set_num_threads(1)
TWO = f"{Path(__file__).parent / 'user_models' / 'tagger.py'}:build_two"


class TimeMajor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


class TransposeInside(TimeMajor):
    """Batch-major at the boundary, time-major recurrent module inside: the fix the error suggests."""

    def forward(self, x):
        return self.head(self.lstm(x.transpose(0, 1))[0]).transpose(0, 1)


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.GRU(4, 3, batch_first=True)
        self.spare = nn.LSTM(4, 5, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.used(x)[0]


@pytest.mark.parametrize("spec", ["x:float32[batch,7,4]", "x:float32[1,time,4]"], ids=["fixed_time", "fixed_batch"])
def test_expose_state_refuses_input_without_named_batch_and_time(tmp_path, spec):
    path = tmp_path / "tm.onnx"
    with pytest.raises(UnsupportedError, match=r"--expose-state needs a named batch axis and a named time axis in "
                                               r"the data input"):
        export(TimeMajor().eval(), None, path, inputs=[spec], expose_state=True)
    assert not path.exists()


class ChannelsFirst(TimeMajor):
    def forward(self, x):  # x [batch, features, time]
        return self.head(self.lstm(x.permute(2, 0, 1))[0])


@pytest.mark.parametrize("make,spec,x_shape,time_axis", [
    (TimeMajor, "x:float32[time,batch,4]", (9, 3, 4), 0),
    (ChannelsFirst, "x:float32[batch,4,time]", (3, 4, 9), 2),
], ids=["time_major", "channels_first"])
def test_expose_state_any_layout_streams_along_the_named_time_axis(tmp_path, make, spec, x_shape, time_axis):
    torch.manual_seed(0)
    model = make().eval()
    path = tmp_path / "s.onnx"
    report = export(model, None, path, inputs=[spec], expose_state=True)
    assert any(c["label"] == "streaming" for c in report.parity), report.parity
    m = read_manifest(path)
    # state exposed; not marked streamable: `edgelstm run` / Model.stream take x as [batch, time, ...]
    assert [s.input for s in m.states] == ["h_in", "c_in"] and m.streamable is False
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal(x_shape).astype(np.float32)
    zeros = np.zeros((1, 3, 6), np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    h, c, ys = zeros, zeros, []
    for a, b in ((0, 4), (4, 9)):
        y, h, c = sess.run(None, {"x": np.take(x, np.arange(a, b), axis=time_axis), "h_in": h, "c_in": c})
        ys.append(y)
    # fp32 rule of docs/DESIGN.md (reordered fp32 sums; error relative to the output's scale)
    got = np.concatenate(ys, 0)
    assert float(np.max(np.abs(got - ref))) <= tolerance(ref)


def test_time_major_without_state_is_not_streamable_and_keeps_dims(tmp_path):
    torch.manual_seed(0)
    model = TimeMajor().eval()
    path = tmp_path / "tm.onnx"
    export(model, None, path, inputs=["x:float32[time,batch,4]"])
    m = read_manifest(path)
    assert m.streamable is False and m.states == []
    assert m.inputs[0].shape == ["time", "batch", 4]
    x = np.random.default_rng(0).standard_normal((9, 3, 4)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    # fp32 rule of docs/DESIGN.md (reordered fp32 sums; error relative to the output's scale)
    assert float(np.max(np.abs(got - ref))) <= tolerance(ref)


def test_batch_major_boundary_over_time_major_lstm_streams(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "bm.onnx"
    report = export(TransposeInside().eval(), None, path, inputs=["x:float32[batch,time,4]"], expose_state=True)
    m = read_manifest(path)
    assert m.streamable and [s.input for s in m.states] == ["h_in", "c_in"]
    assert m.inputs[0].shape == ["batch", "time", 4]
    # the export's own check: two chunks with carried state == the whole sequence
    assert any(c["label"] == "streaming" for c in report.parity), report.parity


def test_unused_recurrent_module_warns_and_is_left_out(tmp_path, caplog):
    path = tmp_path / "u.onnx"
    with caplog.at_level(logging.WARNING, logger="edgelstm.exporters.build"):
        report = export(WithUnused().eval(), None, path, inputs=["x:float32[batch,time,4]"])
    assert "recurrent module(s) ['spare'] are never called by the forward" in caplog.text
    assert [n["op"] for n in report.recurrent_nodes] == ["GRU"]
    m = read_manifest(path)
    assert m.family == "gru" and m.layers == 1 and m.hidden_size == 3
    assert [r["path"] for r in m.extra["recurrent_modules"]] == ["used"]


def test_unused_recurrent_module_with_expose_state_is_refused(tmp_path):
    path = tmp_path / "u.onnx"
    with pytest.raises(ModelDefinitionError, match=r"recurrent module 'spare' is never called by the forward, so "
                                                   r"its state cannot be exposed"):
        export(WithUnused().eval(), None, path, inputs=["x:float32[batch,time,4]"], expose_state=True)
    assert not path.exists()


def test_lengths_input_refuses_time_major_input(tmp_path):
    class WithLengths(TimeMajor):
        def forward(self, x, lengths):
            return self.head(self.lstm(x)[0])

    path = tmp_path / "l.onnx"
    with pytest.raises(UnsupportedError, match=r"--lengths-input needs a batch-major input: the runtime takes x as "
                                               r"\[batch, time, \.\.\.\] and lengths as \[batch\]"):
        export(WithLengths().eval(), None, path, inputs=["x:float32[time,batch,4]", "lengths:int64[batch]"],
               lengths_input="lengths")
    assert not path.exists()
