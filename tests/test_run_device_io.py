"""``Model.run`` with device-resident inputs and outputs (OrtValue), and its one-pass NaN/Inf check.

Runs on the CPU provider: an ``OrtValue`` on the CPU goes through the same IO-binding path as
one on a GPU (``tests/test_gpu.py`` runs the CUDA one where a GPU is present)."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgelstm import runtime
from edgelstm.errors import InputError, UsageError
from edgelstm.runtime.inputs import all_finite

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("onnx")
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("devio")
    plain = save(build_recurrent(RecurrentSpec(cell="lstm", layers=2, input_size=4, hidden=8)), d / "lstm.onnx")
    normed = save(build_recurrent(RecurrentSpec(cell="gru", input_size=4, hidden=8,
                                                normalization=([0.5] * 4, [2.0] * 4))), d / "gru-norm.onnx")
    return {"plain": runtime.load(plain, device="cpu"), "normed": runtime.load(normed, device="cpu")}


def _x(batch=3, time=6, features=4, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(np.float32)


@pytest.mark.parametrize("as_value", [False, True], ids=["numpy-x", "ortvalue-x"])
@pytest.mark.parametrize("output_device", [None, "cpu"], ids=["numpy-out", "ortvalue-out"])
def test_ortvalue_inputs_and_outputs_match_numpy(models, as_value, output_device):
    model = models["plain"]
    x = _x()
    want = model.run(x, lengths=[6, 3, 1])
    feed = ort.OrtValue.ortvalue_from_numpy(x, "cpu", 0) if as_value else x
    got = model.run(feed, lengths=[6, 3, 1], output_device=output_device)
    for name, ref in want.outputs.items():
        value = got[name]
        if output_device is not None:
            assert isinstance(value, ort.OrtValue) and value.device_name() == "cpu"
            value = value.numpy()
        # the same graph, inputs and thread count: bit-identical
        np.testing.assert_array_equal(value, ref, err_msg=name)
    for k, v in want.state.items():
        np.testing.assert_array_equal(got.state[k], v, err_msg=k)
    assert "logits" in repr(got)


def test_ortvalue_x_by_name(models):
    model = models["plain"]
    x = _x()
    got = model.run(inputs={"x": ort.OrtValue.ortvalue_from_numpy(x)})
    np.testing.assert_array_equal(got["logits"], model.run(x)["logits"])


@pytest.mark.parametrize("key, value, error, match", [
    ("plain", ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 3, 5), np.float32)), InputError,
     "x | wrong feature size; expected 4, got 5"),
    ("plain", ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 3, 4), np.float64)), InputError,
     "x | wrong dtype; expected float32, got float64"),
    ("plain", ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 4), np.float32)), InputError,
     "x | wrong shape; expected [batch >= 1, time >= 1, features], got [2, 4]"),
    ("normed", ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 3, 4), np.float32)), UsageError,
     "x | this model normalizes its input on the host; a device-resident OrtValue would skip that; "
     "expected a numpy array (normalized by the runtime), got an OrtValue"),
], ids=["features", "dtype", "rank", "normalized-model"])
def test_ortvalue_x_is_checked(models, key, value, error, match):
    with pytest.raises(error, match=re.escape(match)):
        models[key].run(value)


@pytest.mark.parametrize("inputs, error, match", [
    ({"lengths": ort.OrtValue.ortvalue_from_numpy(np.array([6, 3, 1], np.int64))}, InputError,
     "lengths | wrong dtype; expected int32, got int64"),
    ({"lengths": ort.OrtValue.ortvalue_from_numpy(np.array([[6, 3, 1]], np.int32))}, InputError,
     "lengths | wrong shape; expected ['batch'], got [1, 3]"),
    ({"h_in": ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 3, 8), np.float32))}, UsageError,
     "h_in | a state is taken as a numpy array (state=...), not as an OrtValue; expected numpy, got an OrtValue"),
], ids=["lengths-dtype", "lengths-rank", "state"])
def test_other_ortvalue_inputs_are_checked(models, inputs, error, match):
    with pytest.raises(error, match=re.escape(match)):
        models["plain"].run(_x(), inputs=inputs)


def test_ortvalue_lengths_feed_the_graph(models):
    model = models["plain"]
    x = _x()
    got = model.run(inputs={"x": x, "lengths": ort.OrtValue.ortvalue_from_numpy(np.array([6, 3, 1], np.int32))})
    np.testing.assert_array_equal(got["logits"], model.run(x, lengths=[6, 3, 1])["logits"])


def test_output_device_must_be_one_the_session_can_reach(models):
    with pytest.raises(UsageError, match=re.escape("output_device | outputs cannot be placed on this device with "
                                                   "this session; expected ('cpu',), got cuda")):
        models["plain"].run(_x(), output_device="cuda")


def test_normalization_applies_once_and_leaves_the_input_alone(models):
    model = models["normed"]
    x = _x()
    before = x.copy()
    got = model.run(x)["logits"]
    np.testing.assert_array_equal(x, before)  # the caller's array is not modified
    raw = runtime.load(model.path, device="cpu")
    raw._norm = None  # the same graph without the runtime's normalization, fed (x - 0.5) / 2
    np.testing.assert_allclose(got, raw.run((x - 0.5) / 2.0)["logits"], atol=1e-6)


@pytest.mark.parametrize("values, finite", [
    ([1.0, 2.0, -3.0], True),
    ([1.0, np.nan, 2.0], False),
    ([1.0, np.inf, 2.0], False),
    ([np.inf, -np.inf], False),
    ([3e38, 3e38, 3e38], True),  # the float32 sum overflows: re-checked exactly, still finite
], ids=["finite", "nan", "inf", "inf-minus-inf", "overflowing-sum"])
def test_all_finite_one_pass(values, finite):
    arr = np.array(values, np.float32).reshape(1, -1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fast sum's overflow / invalid warnings are silenced
        assert all_finite(arr) is finite


def test_run_still_names_the_first_nan(models):
    x = _x()
    x[1, 2, 3] = np.nan
    with pytest.raises(InputError, match=re.escape("x | input contains NaN or Inf (pass nan='pass' to allow); "
                                                   "expected finite values, got 1 non-finite, first at index "
                                                   "(1, 2, 3)")):
        models["plain"].run(x)
