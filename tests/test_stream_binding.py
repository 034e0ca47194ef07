"""Per-step inputs under device semantics, reproduced on a CPU; a stream used from two threads.

On a GPU provider onnxruntime copies an input to the device of the node that reads it *when the
input is bound* (``IOBinding.bind_cpu_input``, or ``bind_ortvalue_input`` of a value on another
device): refilling the bound host buffer afterwards changes nothing on the device. On the CPU
provider a binding keeps a pointer, so code that binds once and refills in place passes every
CPU test and is silently wrong on CUDA (issue 12: greedy tokens ``[3,3,3,3,0,0]`` on CUDA vs
``[3,3,6,6,6,6]`` on CPU). The ``copy_at_bind`` fixture makes both binding calls bind a private
copy of the value taken at bind time, so a per-step input read from a binding made before its
contents changed gives a wrong result here too (the pre-fix stream then differed from the whole
sequence by 1.5e-2 to 2.3e-1 on the streamable tiny models, and greedy decoding changed tokens).
Two device layouts are emulated (see ``_emulate_copy_at_bind``): every node on the GPU (host data
copied at bind, the state read where it lives) and mixed devices (every binding a copy).
"""
from __future__ import annotations

import re
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgelstm import runtime
from edgelstm.errors import StreamInUseError

sys.path.insert(0, str(Path(__file__).parent))

# A stream step and the whole-sequence run compute the same fp32 maths on the CPU provider in a
# different order (per-step vs time-batched input projections): O(T * eps32) ~ 1e-6 over these
# 9 steps of O(1) activations; 1e-5 leaves margin and is ~1000x below a stale-frame error.
STEP_TOL = 1e-5

STREAMABLE = ["lstm-1x4", "lstm-1x5-label", "peephole-1x4", "gru-1x4", "gru-1x6-forecast"]
# seq2seq: (tiny model, weight seed, source) where untrained greedy decoding changes its token
# along the way (most seeds of these tiny models repeat one token, which would hide a stale token)
SEQ2SEQ = {"attention-s2s-1x8": (0, [[3, 4, 5, 6], [7, 8, 0, 0]]),
           "attention-s2s-2x6-bahdanau": (2, [[8, 7, 6, 5, 4, 3]])}


def _private_copy(value: np.ndarray) -> ort.OrtValue:
    """An onnxruntime-owned copy: it lives as long as the binding holds it."""
    arr = np.ascontiguousarray(value)
    copy = ort.OrtValue.ortvalue_from_shape_and_type(list(arr.shape), arr.dtype, "cpu", 0)
    copy.update_inplace(arr)
    return copy


STATE_INPUTS = ("h_in", "c_in")


def _emulate_copy_at_bind(monkeypatch, mode: str) -> dict:
    """Make IOBinding copy bound inputs at bind time, as onnxruntime does for an input that lives
    on another device than the node reading it. ``mode``:

    * ``"gpu"``: a session whose nodes all run on the GPU: host data (the frame, the token, the
      lengths) is copied when bound; the state lives on the device where it is read, so a state
      binding is not a copy (``Model.mixed_devices`` is False, as on the CPU provider);
    * ``"mixed"``: some nodes on the CPU under a GPU provider: any input, state included, may be
      read across devices, so every binding is a copy (``Model.mixed_devices`` is True).
    """
    bind_ortvalue = ort.IOBinding.bind_ortvalue_input
    calls = {"cpu": 0, "ortvalue": 0}

    def bind_cpu_input(self, name, arr):
        calls["cpu"] += 1
        bind_ortvalue(self, name, _private_copy(arr))

    def bind_ortvalue_input(self, name, value):
        calls["ortvalue"] += 1
        copy = mode == "mixed" or name not in STATE_INPUTS
        bind_ortvalue(self, name, _private_copy(value.numpy()) if copy else value)

    monkeypatch.setattr(ort.IOBinding, "bind_cpu_input", bind_cpu_input)
    monkeypatch.setattr(ort.IOBinding, "bind_ortvalue_input", bind_ortvalue_input)
    monkeypatch.setattr(runtime.Model, "mixed_devices", property(lambda self: mode == "mixed"))
    return calls


@pytest.fixture(params=["gpu", "mixed"])
def copy_at_bind(request, monkeypatch):
    calls = _emulate_copy_at_bind(monkeypatch, request.param)
    calls["mode"] = request.param
    return calls


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("torch")
    from tiny import make_tiny

    from edgelstm.exporters import export_model

    d = tmp_path_factory.mktemp("binding")
    out = {}
    for name in STREAMABLE + list(SEQ2SEQ):
        export_model(make_tiny(name, seed=SEQ2SEQ.get(name, (0,))[0]), d / f"{name}.onnx")
        out[name] = d / f"{name}.onnx"
    return out


def _x(batch=2, time=9, features=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(np.float32)


def test_copy_at_bind_reproduces_the_device_behaviour(exported, monkeypatch):
    """The emulation itself: a bound host buffer changed afterwards is not what the run reads."""
    model = runtime.load(exported["gru-1x4"], device="cpu")
    sess = model.session
    x = np.zeros((1, 1, 3), np.float32)
    calls = _emulate_copy_at_bind(monkeypatch, "gpu")
    bnd = sess.io_binding()
    bnd.bind_cpu_input("x", x)
    bnd.bind_cpu_input("lengths", np.ones(1, np.int32))
    bnd.bind_cpu_input("h_in", np.zeros((1, 1, 4), np.float32))
    bnd.bind_output(model.outputs[0].name, "cpu")
    x[...] = 3.0  # after binding: a GPU run would not see it
    sess.run_with_iobinding(bnd)
    stale = bnd.get_outputs()[0].numpy()
    want = model.run(np.zeros((1, 1, 3), np.float32))[model.outputs[0].name]
    np.testing.assert_array_equal(stale, want)
    assert calls["cpu"] == 3


@pytest.mark.parametrize("name", STREAMABLE)
def test_stream_steps_match_whole_run_when_inputs_are_copied_at_bind(exported, copy_at_bind, name):
    model = runtime.load(exported[name], device="cpu", threads=1)
    x = _x()
    whole = model.run(x)
    stream = model.stream(batch=2)
    steps = [stream.step(x[:, t]) for t in range(x.shape[1])]
    out = next(o.name for o in model.outputs if o.name in whole.outputs)
    if whole[out].ndim == 3:  # per-step outputs [b, t, K]
        got = np.stack([s[out] for s in steps], axis=1)
    else:
        got = steps[-1][out]
    np.testing.assert_allclose(got, whole[out], atol=STEP_TOL, err_msg=out)
    for k, v in whole.state.items():
        np.testing.assert_allclose(stream.state[k], v, atol=STEP_TOL, err_msg=k)
    # every step bound its frame again (and, on mixed devices, its state)
    per_step = 1 + (len(model.states) if copy_at_bind["mode"] == "mixed" else 0)
    assert copy_at_bind["ortvalue"] >= (x.shape[1] - 1) * per_step


def test_mixed_devices_needs_the_state_bound_each_step(exported, monkeypatch):
    """The flag matters: with every binding a copy but the state bound once, the stream goes wrong
    (so the ``mixed`` cases above pass because the state is bound again, not by accident)."""
    model = runtime.load(exported["lstm-1x4"], device="cpu", threads=1)
    x = _x()
    whole = model.run(x)
    _emulate_copy_at_bind(monkeypatch, "mixed")
    monkeypatch.setattr(runtime.Model, "mixed_devices", property(lambda self: False))
    stream = model.stream(batch=2)
    last = [stream.step(x[:, t]) for t in range(x.shape[1])][-1]
    assert np.abs(last["logits"] - whole["logits"]).max() > 100 * STEP_TOL


def test_stream_feed_chunks_match_whole_run_when_inputs_are_copied_at_bind(exported, copy_at_bind):
    model = runtime.load(exported["lstm-1x4"], device="cpu", threads=1)
    x = _x()
    whole = model.run(x)
    stream = model.stream(batch=2)
    stream.step(x[:, 0])
    stream.feed(x[:, 1:4])
    stream.step(x[:, 4])
    last = stream.feed(x[:, 5:])
    np.testing.assert_allclose(last["logits"], whole["logits"], atol=STEP_TOL)
    np.testing.assert_allclose(last.state["c_in"], whole.state["c_in"], atol=STEP_TOL)


@pytest.mark.parametrize("mode", ["gpu", "mixed"])
@pytest.mark.parametrize("name", SEQ2SEQ)
def test_greedy_decoding_matches_when_inputs_are_copied_at_bind(exported, name, mode, monkeypatch):
    model = runtime.load(exported[name], device="cpu", threads=1)
    src = np.array(SEQ2SEQ[name][1], dtype=np.int64)
    want = model.generate(src, max_len=6, return_attention=True)
    assert any(len(t) > 1 and len(set(t)) > 1 for t in want.tokens), "a test needing a changing token"
    _emulate_copy_at_bind(monkeypatch, mode)
    got = model.generate(src, max_len=6, return_attention=True)
    # the same graph on the same provider and threads: token choices are identical, and the
    # attention weights agree to fp32 rounding (the path differs only in what it binds)
    assert got.tokens == want.tokens
    for a, b in zip(got.attention, want.attention):
        np.testing.assert_allclose(a, b, atol=STEP_TOL)


# ------------------------------------------------------------------------------ one thread per stream
def test_stream_used_from_two_threads_raises(exported, monkeypatch):
    model = runtime.load(exported["gru-1x4"], device="cpu", threads=1)
    stream = model.stream(batch=1)
    frame = np.ones((1, 3), np.float32)
    stream.step(frame)  # the first step sets up the step bindings
    inside, release = threading.Event(), threading.Event()
    real_run = ort.InferenceSession.run_with_iobinding

    def slow_run(self, binding, run_options=None):
        inside.set()
        assert release.wait(10)
        return real_run(self, binding, run_options)

    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", slow_run)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(stream.step(frame)))
    worker.start()
    try:
        assert inside.wait(10)
        msg = re.escape("stream used from two threads at once: a call on it is still running in another "
                        "thread; expected one thread per stream (model.stream() makes another), got a "
                        "concurrent call")
        for call in (lambda: stream.step(frame), lambda: stream.feed(frame[:, None]), stream.reset,
                     lambda: setattr(stream, "state", stream.state)):
            with pytest.raises(StreamInUseError, match=msg):
                call()
    finally:
        release.set()
        worker.join(10)
    assert stream.steps == 2 and len(errors) == 1  # the first thread's step completed
    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", real_run)
    stream.step(frame)  # the token was handed back: the stream works again
    assert stream.steps == 3


def test_stream_is_usable_after_a_failed_call(exported):
    """An input error inside a call hands the in-use token back."""
    from edgelstm.errors import InputError

    model = runtime.load(exported["gru-1x4"], device="cpu")
    stream = model.stream(batch=1)
    with pytest.raises(InputError):
        stream.feed(np.ones((1, 2, 3), np.float32), lengths=[5])
    stream.step(np.ones((1, 3), np.float32))
    assert stream.steps == 1
