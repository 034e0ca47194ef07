"""The export side's typed options and hooks: keywords that name no option fail like Python's own
TypeError, and run_rnn is routed through a context-variable hook, not patched in sys.modules."""
from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgelstm.exporters.core import export  # noqa: E402
from edgelstm.exporters.plan import ExportOptions  # noqa: E402
from edgelstm.exporters.quantize import quantize  # noqa: E402
from edgelstm.models import sequence  # noqa: E402
from tiny import make_tiny  # noqa: E402


@pytest.mark.parametrize("call,match", [
    (lambda p: export(torch.nn.LSTM(3, 4), None, p, atol=1e-3), re.escape("unexpected keyword arguments ['atol']")),
    (lambda p: export(torch.nn.LSTM(3, 4), None, p, ExportOptions(), verify=False),
     re.escape("option keywords ['verify'] beside an ExportOptions")),
    (lambda p: quantize(p, p.with_suffix(".q.onnx"), "int8-dynamic", sampels=8),
     re.escape("unexpected keyword arguments ['sampels']")),
], ids=["export-unknown", "export-both", "quantize-unknown"])
def test_unknown_option_keywords_are_refused(tmp_path, call, match):
    with pytest.raises(TypeError, match=match):
        call(tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["gru-1x4", "lstm-2x6-bi"])
def test_run_rnn_consults_the_hook_and_falls_through(name):
    model = make_tiny(name).eval()
    x = torch.randn(2, 5, 3)
    lengths = torch.tensor([5, 3])
    with torch.no_grad():
        plain = sequence.run_rnn(model.rnn, x, lengths, None)[0]
        marker = (torch.zeros(1), None)
        with sequence.rnn_hook(lambda rnn, *_: marker if rnn is model.rnn else None):
            taken = sequence.run_rnn(model.rnn, x, lengths, None)
        with sequence.rnn_hook(lambda *_: None):  # the hook declines: run_rnn's own path
            declined = sequence.run_rnn(model.rnn, x, lengths, None)[0]
    assert taken is marker
    np.testing.assert_array_equal(declined.numpy(), plain.numpy())  # the same kernels: bit-identical
    assert sequence._RNN_HOOK.get() is None  # reset on leaving the block


def test_family_export_leaves_run_rnn_in_place(tmp_path):
    from edgelstm.exporters.runs import export_model
    from edgelstm.models import attention

    before = (sequence.run_rnn, attention.run_rnn)
    report = export_model(make_tiny("gru-1x6-forecast").eval(), tmp_path / "m.onnx")
    assert report.parity and (sequence.run_rnn, attention.run_rnn) == before
