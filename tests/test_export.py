"""Export acceptance: every family x layers (1, 2) x directions (1, 2) x batch_first, checked at
batch sizes / time lengths other than the export example's: fused node types, outputs equal to
PyTorch, a padded sequence equal to the same sequence alone, streaming in chunks equal to the
whole sequence. Plus seq2seq (two graphs) and the manifest.
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgelstm.exporters.checks import tolerance  # noqa: E402
from edgelstm.exporters.core import read_manifest  # noqa: E402
from edgelstm.exporters.runs import FAMILY_EXPORTS, export_model  # noqa: E402
from edgelstm.models import FAMILIES, ModelConfig, build_model  # noqa: E402

torch.set_num_threads(1)

TASK = {"lstm": "label", "peephole": "regress", "gru": "classify", "attention": "classify"}
OP = {"lstm": "LSTM", "peephole": "LSTM", "gru": "GRU", "attention": "LSTM"}

MATRIX = [pytest.param(fam, layers, dirs, bf, id=f"{fam}-L{layers}-D{dirs}-{'bf' if bf else 'tm'}")
          for fam, layers, dirs, bf in itertools.product(("lstm", "peephole", "gru", "attention"), (1, 2), (1, 2),
                                                         (True, False))]


def _session(path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    # fp32 rule of docs/DESIGN.md: reordered fp32 sums, error relative to the output's scale
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert err <= tolerance(ref), f"max abs error {err:.3g} > {tolerance(ref):.3g}"


def _torch_run(model, x, lengths, state):
    with torch.no_grad():
        out, st = model(torch.from_numpy(x), torch.from_numpy(lengths), tuple(torch.from_numpy(s) for s in state))
    return [out.numpy()] + [s.numpy() for s in st]


def test_every_family_has_an_export_config():
    assert set(FAMILIES) == set(FAMILY_EXPORTS)


@pytest.mark.parametrize("family,layers,dirs,batch_first", MATRIX)
def test_family_matrix(tmp_path, family, layers, dirs, batch_first):
    torch.manual_seed(0)
    cfg = ModelConfig(family, input_size=3, hidden_size=4, num_layers=layers, bidirectional=dirs == 2,
                      batch_first=batch_first, task=TASK[family], num_outputs=3)
    model = build_model(cfg).eval()
    path = tmp_path / "m.onnx"
    report = export_model(model, path)

    # --- graph structure: one fused node per layer, state and lengths wired
    graph = onnx.load(str(path)).graph
    rec = [n for n in graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert [n.op_type for n in rec] == [OP[family]] * layers
    assert not {n.op_type for n in graph.node} & {"Loop", "Scan", "Identity"}
    transposed = {n.output[0] for n in graph.node if n.op_type == "Transpose"}
    assert not [n.name for n in graph.node if n.op_type == "Transpose" and n.input[0] in transposed]
    assert not {n.op_type for n in graph.node} & {"Constant"}  # folded into initializers
    for n in rec:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["direction"] == (b"bidirectional" if dirs == 2 else b"forward")
        assert n.input[4] == "lengths"          # sequence_lens straight from the graph input (int32)
        assert n.input[5]                        # initial_h wired
        if family == "gru":
            assert attrs["linear_before_reset"] == 1
        if family == "peephole":
            assert len(n.input) == 8 and n.input[7]
    assert report.node_count_after < report.node_count_before
    streamable = dirs == 1 and family != "attention"
    assert [c["label"] for c in report.parity] == ["example", "other", "single"] + ["streaming"] * streamable

    # --- other batch size / time length than the example (2 x 6), ragged lengths, random state
    sess = _session(path)
    rng = np.random.default_rng(1)
    B, T, S = 4, 9, layers * dirs
    x = rng.standard_normal((B, T, 3)).astype(np.float32)
    lengths = np.array([9, 3, 1, 7], np.int32)
    names = FAMILY_EXPORTS[family].state_names
    state = [0.5 * rng.standard_normal((S, B, 4)).astype(np.float32) for _ in names]
    feeds = {"x": x, "lengths": lengths, **{f"{n}_in": s for n, s in zip(names, state)}}
    got = sess.run(None, feeds)
    ref = _torch_run(model, x, lengths, state)
    for g, r in zip(got, ref):
        _close(g, r)

    # --- a sequence inside a padded batch == the same sequence alone
    k = 1
    alone = sess.run(None, {"x": x[k:k + 1, :lengths[k]], "lengths": lengths[k:k + 1],
                            **{f"{n}_in": s[:, k:k + 1] for n, s in zip(names, state)}})
    out_in_batch = got[0][k:k + 1]
    if out_in_batch.ndim == 3:
        out_in_batch = out_in_batch[:, :lengths[k]]
    _close(alone[0], out_in_batch)
    for g, a in zip(got[1:], alone[1:]):
        _close(a, g[:, k:k + 1])

    # --- streaming: chunks with carried state == the whole sequence
    manifest = read_manifest(path)
    assert manifest.streamable == streamable
    if manifest.streamable:
        full = np.full(B, T, np.int32)
        whole = sess.run(None, {**feeds, "lengths": full})
        carried = {f"{n}_in": s for n, s in zip(names, state)}
        outs = []
        for a, b in ((0, 4), (4, 5), (5, 9)):
            step = sess.run(None, {"x": x[:, a:b], "lengths": np.full(B, b - a, np.int32), **carried})
            outs.append(step[0])
            carried = {f"{n}_in": s for n, s in zip(names, step[1:])}
        streamed = outs[-1] if cfg.task == "classify" else np.concatenate(outs, axis=1)
        _close(streamed, whole[0])
        for n, s in zip(names, whole[1:]):
            _close(carried[f"{n}_in"], s)


def test_manifest_of_a_family_export(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig("lstm", input_size=3, hidden_size=5, num_layers=2, task="classify", num_outputs=4)
    path = tmp_path / "m.onnx"
    export_model(build_model(cfg), path, checkpoint_sha256="ab" * 32)
    m = read_manifest(path)
    assert (m.family, m.task, m.layers, m.hidden_size, m.directions, m.opset) == ("lstm", "classify", 2, 5, 1, 17)
    assert [t.name for t in m.inputs] == ["x", "lengths", "h_in", "c_in"]
    assert m.input("x").shape == ["batch", "time", 3] and m.input("lengths").dtype == "int32"
    assert [t.name for t in m.outputs] == ["logits", "h_out", "c_out"]
    assert m.output("logits").shape == ["batch", 4]
    assert [(s.input, s.output, s.shape) for s in m.states] == [("h_in", "h_out", [2, "batch", 5]),
                                                               ("c_in", "c_out", [2, "batch", 5])]
    assert m.checkpoint_sha256 == "ab" * 32
    assert {"torch", "onnx", "onnxruntime", "edgelstm"} <= set(m.producer)
    from edgelstm.runtime.integrity import seal_problem

    assert m.schema_version == 2 and "graph_sha256" not in m.extra
    assert seal_problem(path.read_bytes(), str(path)) is None  # sealed: graph + manifest
    # graph I/O carries the same symbolic shapes
    sess = _session(path)
    assert [(i.name, i.shape) for i in sess.get_outputs()] == [("logits", ["batch", 4]), ("h_out", [2, "batch", 5]),
                                                               ("c_out", [2, "batch", 5])]


@pytest.mark.parametrize("layers,score", [(1, "general"), (2, "bahdanau")], ids=["L1-general", "L2-bahdanau"])
def test_seq2seq_two_graphs_greedy_decoding(tmp_path, layers, score):
    torch.manual_seed(0)
    cfg = ModelConfig("attention", hidden_size=6, num_layers=layers, task="seq2seq", vocab_size=9, emb_size=4,
                      score=score, max_len=6)
    model = build_model(cfg).eval()
    report = export_model(model, tmp_path / "s2s.onnx")
    enc_path, dec_path = tmp_path / "s2s.encoder.onnx", tmp_path / "s2s.decoder_step.onnx"
    assert not (tmp_path / "s2s.onnx").exists() and enc_path.exists() and dec_path.exists()
    assert len(report.companions) == 1
    enc_m, dec_m = read_manifest(enc_path), read_manifest(dec_path)
    assert (enc_m.graph, dec_m.graph) == ("encoder", "decoder_step")
    assert enc_m.companions == {"decoder_step": dec_path.name} and dec_m.companions == {"encoder": enc_path.name}
    assert dec_m.special_tokens == {"pad": 0, "bos": 1, "eos": 2} and dec_m.max_len == 6
    for p in (enc_path, dec_path):
        ops = [n.op_type for n in onnx.load(str(p)).graph.node]
        assert ops.count("LSTM") == layers and "Loop" not in ops and "Scan" not in ops

    # greedy decoding with the two graphs == model.greedy, at a batch / source length unlike the example
    enc, dec = _session(enc_path), _session(dec_path)
    rng = np.random.default_rng(0)
    src = rng.integers(3, 9, size=(3, 7)).astype(np.int64)
    src_lengths = np.array([7, 4, 2], np.int32)
    src[np.arange(7)[None, :] >= src_lengths[:, None]] = 0
    memory, h, c = enc.run(None, {"src": src, "src_lengths": src_lengths})
    token = np.full(3, 1, np.int64)
    done = np.zeros(3, bool)
    tokens = []
    for _ in range(cfg.max_len):
        logits, h, c, attn = dec.run(None, {"token": token, "h_in": h, "c_in": c, "memory": memory,
                                            "src_lengths": src_lengths})
        assert attn.shape == (3, 7)
        token = np.where(done, 0, logits.argmax(-1))
        tokens.append(token)
        done |= token == 2
        if done.all():
            break
    expected = model.greedy(torch.from_numpy(src), torch.from_numpy(src_lengths)).numpy()
    np.testing.assert_array_equal(np.stack(tokens, 1), expected)
