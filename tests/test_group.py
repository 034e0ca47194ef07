"""StreamGroup: N streams stepped by one batched call equal N separate streams."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm import runtime
from edgelstm.errors import InputError, UnsupportedError, UsageError

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402

# A group row and a separate batch-1 stream run the same fp32 recurrence; onnxruntime's LSTM/GRU
# kernels use matrix-matrix products for the group and matrix-vector ones for a single stream, so
# the sums are ordered differently: float32 rounding, O(steps * eps32) over a few dozen steps.
GROUP_TOL = 1e-5

SPECS = {
    "lstm-2layer": RecurrentSpec(cell="lstm", layers=2, task="label"),
    "gru-1layer": RecurrentSpec(cell="gru", layers=1),
    "peephole-1layer": RecurrentSpec(cell="peephole", layers=1, labels=["a", "b", "c"]),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("group")
    return {k: runtime.load(save(build_recurrent(s), d / f"{k}.onnx"), device="cpu", threads=1)
            for k, s in SPECS.items()}


def _frames(steps, n, features=4, seed=0):
    return np.random.default_rng(seed).standard_normal((steps, n, features)).astype(np.float32)


def _assert_same(got, want):
    assert got.outputs.keys() == want.outputs.keys()
    for name in want.outputs:
        np.testing.assert_allclose(got.outputs[name], want.outputs[name], atol=GROUP_TOL, rtol=0, err_msg=name)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("n", [1, 5])
def test_group_equals_separate_streams(models, name, n):
    model = models[name]
    frames = _frames(12, n)
    group = model.streams(n)
    singles = [model.stream(1) for _ in range(n)]
    for t in range(frames.shape[0]):
        out = group.step(frames[t])
        for i, s in enumerate(singles):
            one = s.step(frames[t, i:i + 1])
            _assert_same(type(one)({k: v[i:i + 1] for k, v in out.outputs.items()}, None, None, None), one)
    for i, s in enumerate(singles):
        for k, v in group.state_of(i).items():
            np.testing.assert_allclose(v, s.state[k], atol=GROUP_TOL, rtol=0)
    assert group.steps == frames.shape[0] and len(group) == n


@pytest.mark.parametrize("name", list(SPECS))
def test_add_drop_reset_keep_each_stream_its_own_state(models, name):
    model = models[name]
    frames = _frames(20, 4, seed=3)
    group = model.streams(2)
    ref = {0: model.stream(1), 1: model.stream(1)}   # stream id -> a separate stream fed the same frames
    ids = [0, 1]                                      # group position -> stream id
    for t in range(frames.shape[0]):
        if t == 4:                                    # a third stream joins
            assert group.add() == 2
            ids.append(2)
            ref[2] = model.stream(1)
        if t == 8:                                    # the first stream leaves: the others move down
            group.drop(0)
            ids.pop(0)
        if t == 12:                                   # the (new) first stream starts a new utterance
            group.reset(0)
            ref[ids[0]].reset()
        if t == 15:                                   # a stream moves in with a saved state
            assert group.add(ref[1].state) == len(ids)
            ids.append(3)
            ref[3] = model.stream(1)
            ref[3].state = ref[1].state
        out = group.step(frames[t, :len(ids)])
        for pos, sid in enumerate(ids):
            one = ref[sid].step(frames[t, pos:pos + 1])
            for k in one.outputs:
                np.testing.assert_allclose(out.outputs[k][pos:pos + 1], one.outputs[k], atol=GROUP_TOL, rtol=0)
    assert len(group) == 3


def test_group_starts_empty_and_labels_decode(models):
    model = models["peephole-1layer"]
    group = model.streams()
    with pytest.raises(UsageError, match=re.escape("the group has no streams")):
        group.step(np.zeros((0, 4), np.float32))
    group.add(), group.add()
    out = group.step(_frames(1, 2)[0])
    assert out.outputs["logits"].shape == (2, 3) and len(out.labels) == 2 and set(out.labels) <= {"a", "b", "c"}


@pytest.mark.parametrize("bad, err, msg", [
    (np.zeros((3, 4), np.float32), InputError, "frames | one row per stream"),
    (np.zeros((2, 5), np.float32), InputError, "frames | wrong feature size"),
    (np.full((2, 4), np.nan, np.float32), InputError, "frames | input contains NaN or Inf"),
], ids=["rows", "features", "nan"])
def test_step_refuses_bad_frames(models, bad, err, msg):
    group = models["gru-1layer"].streams(2)
    with pytest.raises(err, match=re.escape(msg)):
        group.step(bad)
    assert group.steps == 0


@pytest.mark.parametrize("call, msg", [
    (lambda g: g.drop(2), "i | no such stream in the group"),
    (lambda g: g.reset(-3), "i | no such stream in the group"),
    (lambda g: g.state_of(True), "i | no such stream in the group"),
    (lambda g: g.add({"h_in": np.zeros((1, 2, 8), np.float32)}), "h_in | state batch does not match"),
], ids=["drop", "reset", "state_of-bool", "add-batch"])
def test_membership_errors(models, call, msg):
    group = models["gru-1layer"].streams(2)
    with pytest.raises((UsageError, InputError), match=re.escape(msg)):
        call(group)
    assert len(group) == 2


def test_group_needs_a_streamable_model(tmp_path):
    bi = runtime.load(save(build_recurrent(RecurrentSpec(directions=2)), tmp_path / "bi.onnx"), device="cpu")
    with pytest.raises(UnsupportedError, match=re.escape("this model cannot be streamed")):
        bi.streams(2)
    with pytest.raises(UsageError, match=re.escape("n | stream count must be an integer >= 0")):
        runtime.load(save(build_recurrent(RecurrentSpec()), tmp_path / "u.onnx"), device="cpu").streams(-1)


@pytest.mark.parametrize("mode", ["gpu", "mixed"])
def test_group_under_copy_at_bind_device_semantics(models, monkeypatch, mode):
    """As on a GPU provider, a bound input is copied when bound (tests/test_stream_binding.py):
    the group must still equal separate streams, which step under the same emulation."""
    from test_stream_binding import _emulate_copy_at_bind

    _emulate_copy_at_bind(monkeypatch, mode)
    model = models["lstm-2layer"]
    frames = _frames(9, 3, seed=7)
    group, singles = model.streams(3), [model.stream(1) for _ in range(3)]
    for t in range(frames.shape[0]):
        out = group.step(frames[t])
        for i, s in enumerate(singles):
            np.testing.assert_allclose(out.outputs["y"][i:i + 1], s.step(frames[t, i:i + 1]).outputs["y"],
                                       atol=GROUP_TOL, rtol=0)
