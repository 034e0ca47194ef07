"""The torch-free runtime: loading, running, streaming, errors, providers, seq2seq."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgelstm import runtime
from edgelstm.errors import (EdgeLSTMError, InputError, ManifestError, ModelFileError, ProviderUnavailableError,
                             UnknownChoiceError, UnsupportedError)

sys.path.insert(0, str(Path(__file__).parent))
from graphs import (RecurrentSpec, Seq2SeqSpec, build_add, build_recurrent, save,  # noqa: E402
                    save_seq2seq)

# The runtime passes arrays to onnxruntime unchanged, so run() vs a bare session.run on the same
# feeds must agree exactly; stepping vs a whole-sequence run executes the same fp32 LSTM maths in
# a different call pattern, so they agree to float32 rounding: 1e-5 covers O(T * eps32) growth.
STEP_TOL = 1e-5

SPECS = {
    "lstm-1layer": RecurrentSpec(cell="lstm", layers=1),
    "lstm-2layer-labels": RecurrentSpec(cell="lstm", layers=2, labels=["a", "b", "c"]),
    "gru-2layer": RecurrentSpec(cell="gru", layers=2),
    "peephole-label-task": RecurrentSpec(cell="peephole", task="label", labels=["x", "y", "z"]),
}


def _x(batch=2, time=7, features=4, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(np.float32)


def _bare_run(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {k: save(build_recurrent(s), d / f"{k}.onnx") for k, s in SPECS.items()}


# ------------------------------------------------------------------------------ run
@pytest.mark.parametrize("name", list(SPECS), ids=list(SPECS))
def test_run_matches_bare_session_with_lengths_and_state(models, name):
    spec = SPECS[name]
    model = runtime.load(models[name], device="cpu")
    x, lengths = _x(), np.array([7, 4], dtype=np.int32)
    h0 = np.random.default_rng(2).standard_normal((spec.layers, 2, spec.hidden)).astype(np.float32)
    state = {"h_in": h0, **({"c_in": h0 * 0.5} if spec.cell != "gru" else {})}
    res = model.run(x, lengths=lengths, state=state)
    ref = _bare_run(models[name], {"x": x, "lengths": lengths, **state})
    out = "logits" if spec.task == "classify" else "y"
    np.testing.assert_array_equal(res[out], ref[out])
    np.testing.assert_array_equal(res.state["h_in"], ref["h_out"])
    assert set(res.outputs) == {out}  # state outputs are in .state, not .outputs
    if spec.labels and spec.task == "classify":
        assert res.labels == [spec.labels[i] for i in ref[out].argmax(-1)]
    if spec.labels and spec.task == "label":
        assert [len(seq) for seq in res.labels] == [7, 4]  # valid steps only


def test_run_state_roundtrip_equals_one_long_run(models):
    model = runtime.load(models["lstm-2layer-labels"], device="cpu")
    x = _x(time=10)
    whole = model.run(x)
    first = model.run(x[:, :6])
    second = model.run(x[:, 6:], state=first.state)
    np.testing.assert_allclose(second["logits"], whole["logits"], atol=STEP_TOL)


# ------------------------------------------------------------------------------ stream
@pytest.mark.parametrize("name", list(SPECS), ids=list(SPECS))
def test_stream_steps_and_chunks_match_whole_run(models, name):
    model = runtime.load(models[name], device="cpu")
    x = _x(time=9)
    whole = model.run(x)
    stream = model.stream(batch=2)
    steps = [stream.step(x[:, t]) for t in range(9)]
    if SPECS[name].task == "classify":
        np.testing.assert_allclose(steps[-1]["logits"], whole["logits"], atol=STEP_TOL)
    else:
        per_step = np.stack([s["y"] for s in steps], axis=1)  # step outputs lose the time axis
        np.testing.assert_allclose(per_step, whole["y"], atol=STEP_TOL)
    np.testing.assert_allclose(stream.state["h_in"], whole.state["h_in"], atol=STEP_TOL)
    assert stream.steps == 9
    stream.reset()
    stream.feed(x[:, :4])
    last = stream.feed(x[:, 4:])
    key = "logits" if SPECS[name].task == "classify" else "y"
    want = whole[key] if key == "logits" else whole[key][:, 4:]
    np.testing.assert_allclose(last[key], want, atol=STEP_TOL)


def test_stream_mixing_steps_feeds_and_restores_matches_whole_run(models):
    model = runtime.load(models["peephole-label-task"], device="cpu")
    x = _x(time=12)
    whole = model.run(x)["y"]
    s = model.stream(batch=2)
    parts = [s.step(x[:, 0])["y"][:, None], s.step(x[:, 1])["y"][:, None], s.feed(x[:, 2:5])["y"]]
    snap = s.state  # after 5 steps
    parts += [s.step(x[:, 5])["y"][:, None], s.feed(x[:, 6:8])["y"]]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole[:, :8], atol=STEP_TOL)
    s.reset()
    s.feed(x[:, :3])  # diverge, then restore the snapshot
    s.state = snap
    rest = [s.step(x[:, t])["y"][:, None] for t in range(5, 12)]
    np.testing.assert_allclose(np.concatenate(rest, axis=1), whole[:, 5:], atol=STEP_TOL)
    assert s.steps == 10  # since the reset: 3 fed + 7 stepped
    with pytest.raises(EdgeLSTMError, match=r"state \| a stream step result does not hold the state"):
        s.step(x[:, 0]).state


def test_stream_state_snapshot_restore_and_file_across_restart(models, tmp_path):
    path = models["lstm-2layer-labels"]
    x = _x(batch=1, time=8)
    model = runtime.load(path, device="cpu")
    s = model.stream()
    for t in range(5):
        s.step(x[:, t])
    snap = s.state
    s.save_state(tmp_path / "state.npz")
    later = [s.step(x[:, t])["logits"] for t in range(5, 8)]
    s.state = snap  # restore in memory
    again = [s.step(x[:, t])["logits"] for t in range(5, 8)]
    np.testing.assert_array_equal(np.stack(later), np.stack(again))
    fresh = runtime.load(path, device="cpu").stream()  # "app restart"
    fresh.load_state(tmp_path / "state.npz")
    restarted = [fresh.step(x[:, t])["logits"] for t in range(5, 8)]
    np.testing.assert_array_equal(np.stack(later), np.stack(restarted))


def test_streams_are_independent(models):
    model = runtime.load(models["gru-2layer"], device="cpu")
    x = _x(batch=1, time=5)
    a, b = model.stream(), model.stream()
    for t in range(5):
        a.step(x[:, t])
    b.step(x[:, 0])
    np.testing.assert_array_equal(b.state["h_in"], model.run(x[:, :1]).state["h_in"])


def test_many_threads_each_with_a_stream_match_sequential(models):
    model = runtime.load(models["lstm-2layer-labels"], device="cpu", threads=1)
    xs = [_x(batch=1, time=20, seed=s) for s in range(6)]

    def run_one(x):
        st = model.stream()
        return np.stack([st.step(x[:, t])["logits"] for t in range(x.shape[1])])

    sequential = [run_one(x) for x in xs]
    results: list = [None] * len(xs)

    def worker(i):
        results[i] = run_one(xs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, sequential):
        np.testing.assert_array_equal(got, want)  # same graph, same thread count: identical bits


def test_bidirectional_model_refuses_to_stream(tmp_path):
    path = save(build_recurrent(RecurrentSpec(cell="gru", directions=2)), tmp_path / "bi.onnx")
    model = runtime.load(path, device="cpu")
    assert model.run(_x())["logits"].shape == (2, 3)
    with pytest.raises(UnsupportedError, match="cannot be streamed: it is bidirectional"):
        model.stream()


def test_normalization_is_applied(tmp_path):
    mean, std = [0.5, -1.0, 2.0, 0.0], [2.0, 0.5, 1.0, 4.0]
    plain = save(build_recurrent(RecurrentSpec(seed=3)), tmp_path / "plain.onnx")
    normed = save(build_recurrent(RecurrentSpec(seed=3, normalization=(mean, std))), tmp_path / "norm.onnx")
    x = _x()
    want = runtime.load(plain).run((x - np.array(mean, np.float32)) / np.array(std, np.float32))
    got = runtime.load(normed)
    # x*(1/std) - mean/std vs (x-mean)/std: a few float32 roundings apart
    np.testing.assert_allclose(got.run(x)["logits"], want["logits"], atol=1e-5)
    st = got.stream(batch=2)
    for t in range(x.shape[1]):
        r = st.step(x[:, t])
    np.testing.assert_allclose(r["logits"], want["logits"], atol=1e-5)


# ------------------------------------------------------------------------------ input errors
@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 4), np.float32), r"x \| wrong rank; expected 3-D"),
    (np.zeros((2, 3, 5), np.float32), r"x \| wrong feature size; expected 4, got 5"),
    (np.zeros((2, 3, 4), np.int64), r"x \| wrong dtype; expected floating point \(float32\), got int64"),
    (np.full((1, 3, 4), np.nan, np.float32), r"x \| input contains NaN or Inf"),
], ids=["rank", "features", "dtype", "nan"])
def test_run_rejects_bad_x(models, bad, match):
    with pytest.raises(InputError, match=match):
        runtime.load(models["lstm-1layer"]).run(bad)


@pytest.mark.parametrize("call, match", [
    (lambda s: s.step(np.zeros((3, 4), np.float32)), r"frame \| batch does not match the stream's state; expected 2, got 3"),
    (lambda s: s.step(np.zeros((2, 5), np.float32)), r"frame \| wrong feature size; expected 4, got 5"),
    (lambda s: s.step(np.zeros((2, 1, 4), np.float32)), r"frame \| wrong rank; expected 2-D"),
    (lambda s: s.feed(np.zeros((2, 4), np.float32)), r"chunk \| wrong rank; expected 3-D"),
    (lambda s: s.step(np.array([[np.inf] * 4] * 2, np.float32)), r"frame \| input contains NaN or Inf"),
    (lambda s: setattr(s, "state", {"h_in": np.zeros((1, 3, 8)), "c_in": np.zeros((1, 3, 8))}),
     r"h_in \| state batch does not match; expected \[1, 2, 8\], got \[1, 3, 8\]"),
    (lambda s: setattr(s, "state", {"h_in": np.zeros((1, 2, 8))}), r"state \| incomplete state"),
], ids=["batch", "features", "rank", "chunk-rank", "inf", "state-batch", "state-incomplete"])
def test_stream_rejects_bad_input(models, call, match):
    stream = runtime.load(models["lstm-1layer"]).stream(batch=2)
    with pytest.raises(InputError, match=match):
        call(stream)


def test_nan_pass_lets_nan_through(models):
    model = runtime.load(models["lstm-1layer"], nan="pass")
    out = model.run(np.full((1, 2, 4), np.nan, np.float32))
    # onnxruntime's LSTM kernel turns NaN inputs into finite outputs (its clamped activations):
    # the NaN vanishes silently, which is why the default policy is "raise".
    assert out["logits"].shape == (1, 3) and np.isfinite(out["logits"]).all()


def test_lengths_out_of_range(models):
    with pytest.raises(InputError, match=r"lengths \| length out of range; expected 1..7, got min 4, max 9"):
        runtime.load(models["lstm-1layer"]).run(_x(), lengths=[9, 4])


# ------------------------------------------------------------------------------ file / manifest errors
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope.onnx \| model file not found"):
        runtime.load(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "text.onnx"
    p.write_text("this is not a model\n")
    with pytest.raises(ModelFileError, match=re.escape("text.onnx | model file is ") + "(not an ONNX model|truncated)"):
        runtime.load(p)


def test_truncated(models, tmp_path):
    data = Path(models["lstm-1layer"]).read_bytes()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ModelFileError, match=r"cut.onnx \| model file is truncated or corrupt"):
        runtime.load(p)


def test_tampered_weights_detected_by_seal(tmp_path):
    model = build_recurrent(RecurrentSpec())
    signed = save(model, tmp_path / "signed.onnx")
    runtime.load(signed)
    raw = bytearray(signed.read_bytes())
    w = model.graph.initializer[0].raw_data
    at = bytes(raw).index(w) + 3
    raw[at] ^= 0xFF  # flip one weight byte: still a valid protobuf
    (tmp_path / "tampered.onnx").write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match=r"tampered.onnx \| graph or manifest modified after export \(seal mismatch\)"):
        runtime.load(tmp_path / "tampered.onnx")
    assert runtime.load(tmp_path / "tampered.onnx", trust_modified=True).manifest is not None


@pytest.mark.parametrize("override, match", [
    ({"schema_version": 99}, r"unknown manifest schema version; expected one of \[1, 2\], got 99"),
    ({"hidden_size": 16}, r"state 'h_in' has the wrong hidden size; expected 16, got 8"),
    ({"layers": 3}, r"state 'h_in' has the wrong first dimension; expected layers\*directions = 3, got 1"),
    ({"inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", "time", 4]}], "states": []},
     r"manifest inputs disagree with the graph"),
    ({"labels": ["only", "two"]}, r"label count disagrees with the classes of 'logits'; expected 3, got 2"),
    ({"directions": 2, "streamable": True}, r"a bidirectional model cannot be streamable"),
], ids=["schema", "hidden", "layers", "inputs", "labels", "bidirectional-streamable"])
def test_manifest_disagreeing_with_graph(tmp_path, override, match):
    directions = override.get("directions", 1)
    spec = RecurrentSpec(directions=directions, manifest_overrides=override)
    p = save(build_recurrent(spec), tmp_path / "m.onnx")
    with pytest.raises(ManifestError, match=match):
        runtime.load(p)


# ------------------------------------------------------------------------------ without a manifest
def test_bare_recurrent_graph_infers_states(tmp_path):
    p = save(build_recurrent(RecurrentSpec(layers=2, manifest=False)), tmp_path / "bare.onnx")
    model = runtime.load(p, device="cpu")
    assert model.manifest is None
    assert [(s.input, s.output) for s in model.states] == [("h_in", "h_out"), ("c_in", "c_out")]
    x = _x()
    st = model.stream(batch=2)
    for t in range(x.shape[1]):
        r = st.step(x[:, t])
    np.testing.assert_allclose(r["logits"], model.run(x)["logits"], atol=STEP_TOL)


def test_arbitrary_graph_by_input_name(tmp_path):
    model = runtime.load(save(build_add(), tmp_path / "add.onnx"))
    assert model.states == [] and model.streamable is False
    np.testing.assert_array_equal(model.run(inputs={"a": np.zeros((2, 3))})["out"], np.ones((2, 3)))
    with pytest.raises(UnsupportedError, match="cannot be streamed"):
        model.stream()
    with pytest.raises(InputError, match=r"a \| wrong size of dimension 1; expected 3, got 2"):
        model.run(inputs={"a": np.zeros((2, 2))})


# ------------------------------------------------------------------------------ providers
def test_provider_plans_and_errors():
    avail = ["CPUExecutionProvider"]
    assert runtime.plan_providers("cpu", available=avail).providers == ["CPUExecutionProvider"]
    assert runtime.plan_providers("auto", available=avail).providers == ["CPUExecutionProvider"]
    gpu = runtime.plan_providers("tensorrt", available=["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                        "CPUExecutionProvider"])
    assert gpu.providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert gpu.options[0]["trt_engine_cache_enable"] is True and gpu.options[0]["trt_fp16_enable"] is True
    assert runtime.plan_providers("auto", available=["CUDAExecutionProvider", "CPUExecutionProvider"]).primary \
        == "CUDAExecutionProvider"
    with pytest.raises(ProviderUnavailableError,
                       match=r"device 'cuda' \| CUDAExecutionProvider is not available.*expected one of the "
                             r"available providers \['CPUExecutionProvider'\]"):
        runtime.plan_providers("cuda", fallback=False, available=avail)
    with pytest.raises(UnknownChoiceError, match=r"device \| unknown device.*got gpu9"):
        runtime.plan_providers("gpu9", available=avail)


def test_load_falls_back_with_a_warning_or_raises(models, caplog):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: nothing to fall back from")
    with pytest.warns(RuntimeWarning, match="CUDAExecutionProvider is not available"):
        model = runtime.load(models["lstm-1layer"], device="cuda")
    assert model.providers == ["CPUExecutionProvider"]
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider is not available"):
        runtime.load(models["lstm-1layer"], device="cuda", fallback=False)


def test_node_placement_lists_every_recurrent_node(models):
    model = runtime.load(models["lstm-2layer-labels"], device="cpu")
    lstm = [n for n in model.node_placement if n.op_type == "LSTM"]
    assert [n.name for n in lstm] == ["l0_lstm", "l1_lstm"]
    assert {n.provider for n in model.node_placement} == {"CPUExecutionProvider"}
    assert model.placement_summary["CPUExecutionProvider"]["LSTM"] == 2
    assert model.cpu_fallback_nodes == []


# ------------------------------------------------------------------------------ seq2seq
def _manual_greedy(enc_path, dec_path, ids, lens, max_len, eos=2, bos=1):
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(dec_path), providers=["CPUExecutionProvider"])
    memory, h, c = enc.run(["memory", "h_out", "c_out"], {"src": ids, "src_lengths": lens})
    token, out, done = np.full(len(ids), bos, np.int64), [[] for _ in ids], np.zeros(len(ids), bool)
    for _ in range(max_len):
        logits, h, c = dec.run(["logits", "h_out", "c_out"],
                               {"token": token, "h_in": h, "c_in": c, "memory": memory, "src_lengths": lens})
        token = logits.argmax(-1)
        for b, t in enumerate(token):
            if not done[b]:
                done[b] |= t == eos
                if not done[b]:
                    out[b].append(int(t))
        if done.all():
            break
    return out


@pytest.mark.parametrize("which", ["stem", "encoder", "decoder_step"])
def test_seq2seq_generate_matches_manual_loop(tmp_path, which):
    spec = Seq2SeqSpec(seed=4)
    enc, dec = save_seq2seq(spec, tmp_path, stem="tr")
    path = {"stem": tmp_path / "tr.onnx", "encoder": enc, "decoder_step": dec}[which]
    model = runtime.load(path, device="cpu")
    assert isinstance(model, runtime.Seq2SeqModel) and model.tokenizer == "char"
    gen = model.generate(["abc", "fe"], max_len=6, return_attention=True)
    ids = np.array([[3, 4, 5], [8, 7, 0]], np.int64)
    want = _manual_greedy(enc, dec, ids, np.array([3, 2], np.int32), 6)
    assert gen.tokens == want
    assert gen.texts == ["".join(spec.vocab[t] for t in seq if t > 2) for seq in want]
    assert gen.attention[1].shape == (len(want[1]), 2)  # attention over the 2 valid source tokens


def test_seq2seq_stops_at_eos_and_rejects_unknown_tokens(tmp_path):
    save_seq2seq(Seq2SeqSpec(eos_bias=100.0), tmp_path, stem="eos")
    model = runtime.load(tmp_path / "eos.onnx")
    assert model.generate("abc").tokens == [[]]
    with pytest.raises(InputError, match=r"src \| token 'z' is not in the vocab"):
        model.generate("abz")


# ------------------------------------------------------------------------------ torch-free
BLOCKER = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "onnxscript"):
            raise ImportError(f"blocked import of {name}")
        return None
sys.meta_path.insert(0, Block())
import numpy as np
from edgelstm import runtime
m = runtime.load(sys.argv[1], device="cpu")
s = m.stream(batch=1)
x = np.ones((1, 5, 4), np.float32)
for t in range(5):
    r = s.step(x[:, t])
whole = m.run(x)
assert np.allclose(r["logits"], whole["logits"], atol=1e-5), "stream/run mismatch"
g = runtime.load(sys.argv[2], device="cpu")
print(whole.labels[0], g.generate("abc").text is not None,
      sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "onnx")))
"""


def test_runtime_runs_with_torch_and_onnx_blocked(models, tmp_path):
    save_seq2seq(Seq2SeqSpec(), tmp_path, stem="s")
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", BLOCKER, str(models["lstm-2layer-labels"]), str(tmp_path / "s.onnx")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    label, generated, heavy = out.stdout.split(" ", 2)
    assert label in SPECS["lstm-2layer-labels"].labels and generated == "True" and heavy.strip() == "[]"
