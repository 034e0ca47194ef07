"""Logs say what happened once, and nothing that is known to be harmless."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgelstm.verify.backends import ReferenceBackend

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402


class _Spec:
    input_names, output_names, label, lengths, x = ["x"], ["y"], "sigmoid", None, None
    needs_layout = False  # [batch, ...] already: the checks feed it as the graph takes it


def test_reference_oracle_sigmoid_overflow_is_not_reported():
    """onnx's reference sigmoid computes both np.where branches; the discarded one overflows for
    |x| > 88 (float32) while the result is exact: that warning is filtered, the values stay right."""
    g = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    backend = ReferenceBackend(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), _Spec())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning left would fail here
        y = backend.run({"x": np.array([-200.0, 0.0, 200.0], np.float32)})["y"]
    np.testing.assert_array_equal(y, np.array([0.0, 0.5, 1.0], np.float32))


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_fallback_is_announced_once(tmp_path):
    model = save(build_recurrent(RecurrentSpec(layers=1)), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4), np.float32))
    exe = Path(sys.executable).parent / "edgelstm"
    r = subprocess.run([str(exe), "run", str(model), "--input", str(tmp_path / "x.npy"), "--device", "cuda"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("CUDAExecutionProvider is not available") == 1, r.stderr
