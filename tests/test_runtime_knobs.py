"""``runtime.load``'s onnxruntime knobs: model bytes, session options and config entries,
onnxruntime-style ``providers=``, one thread rule, and the documented dtype policy."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgelstm import runtime
from edgelstm.cli import main
from edgelstm.errors import InputError, ModelFileError, UsageError

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402

CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return save(build_recurrent(RecurrentSpec(layers=1, labels=["a", "b", "c"])), tmp_path_factory.mktemp("k") / "m.onnx")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)


def test_model_bytes_load_like_the_file(path, x):
    from_bytes = runtime.load(path.read_bytes(), device="cpu")
    assert str(from_bytes.path) == "<model bytes>"
    np.testing.assert_array_equal(from_bytes.run(x)["logits"], runtime.load(path, device="cpu").run(x)["logits"])
    with pytest.raises(ModelFileError, match=re.escape("<model bytes> | model file is empty")):
        runtime.load(b"")


def test_session_config_and_own_session_options(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    model = runtime.load(path, session_options=so, session_config={"mlas.disable_kleidiai": "1"},
                         providers=[(CPU, {})])
    assert so.get_session_config_entry("mlas.disable_kleidiai") == "1"  # the caller's options were used
    assert model.providers == [CPU]
    np.testing.assert_array_equal(model.run(x)["logits"], runtime.load(path, device="cpu").run(x)["logits"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(session_options=ort.SessionOptions(), threads=2), "session_options | threads given twice"),
    (dict(session_options="fast"), "session_options | not an onnxruntime.SessionOptions"),
    (dict(providers=[CPU], device="cpu"), "providers | device and providers both given"),
    (dict(providers=[(CPU,)]), "providers | entries are provider names or (name, options) pairs"),
    (dict(providers=[]), "providers | empty provider list"),
    (dict(session_config={"mlas.disable_kleidiai": None}), "session_config | entries are name -> string (or number)"),
], ids=["options-and-threads", "options-type", "device-and-providers", "provider-entry", "no-providers",
        "config-value"])
def test_knob_misuse_is_a_usage_error(path, kwargs, match):
    with pytest.raises(UsageError, match=re.escape(match)):
        runtime.load(path, **kwargs)


def test_float_inputs_are_cast_with_one_warning_and_others_refused(path, x):
    model = runtime.load(path, device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [model.run(x.astype(np.float64))["logits"] for _ in range(2)]
    assert [str(w.message) for w in caught] == ["x: float64 input cast to the graph's float32"]
    np.testing.assert_array_equal(got[0], model.run(x)["logits"])
    with pytest.raises(InputError, match=re.escape("x | wrong dtype; expected floating point (float32), got int64")):
        model.run(x.astype(np.int64))


def test_cli_threads_zero_is_onnxruntimes_default(path, x, tmp_path, capsys):
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(SystemExit) as e:
        main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--threads", "0"])
    assert e.value.code == 0, capsys.readouterr().err
