"""The verification harness: statistics, tolerances, result objects, the NumPy oracle, and the
main promise: models broken the way real export bugs break them FAIL, with a message naming the
output or check that broke, while the intact model passes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from onnx import numpy_helper  # noqa: E402

from edgelstm.errors import InputError, ModelFileError, UnknownChoiceError, UsageError, VerificationError  # noqa: E402
from edgelstm.verify import (CheckResult, Tolerances, VerifyResult, error_stats, parse_overrides,  # noqa: E402
                             profile_for, snr_db, top1_agreement, trend, verify)

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402

STEPS = 60  # drift horizon in tests; the CLI default is 10,000


# ------------------------------------------------------------------------------------ helpers
def torch_twin(model: onnx.ModelProto, spec: RecurrentSpec):
    """The PyTorch SequenceModel holding the very weights of a tests/graphs.py ONNX model."""
    from edgelstm import reference
    from edgelstm.models import ModelConfig, build_model

    cfg = ModelConfig(spec.cell, input_size=spec.input_size, hidden_size=spec.hidden, num_layers=spec.layers,
                      task=spec.task, num_outputs=spec.classes)
    net = build_model(cfg)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    sd = {}
    for k in range(spec.layers):
        W, R, B = init[f"l{k}_W"][0], init[f"l{k}_R"][0], init[f"l{k}_B"][0]
        if spec.cell == "gru":
            parts = reference.onnx_gru_to_torch(W, R, B)
        else:
            parts = reference.onnx_lstm_to_torch(W, R, B, init[f"l{k}_P"][0] if spec.cell == "peephole" else None)
        sd.update({f"rnn.{n}_l{k}": torch.from_numpy(np.array(v, copy=True)) for n, v in parts.items()})
    sd["head.weight"] = torch.from_numpy(np.ascontiguousarray(init["head_W"].T))
    sd["head.bias"] = torch.from_numpy(init["head_b"].copy())
    net.load_state_dict(sd, strict=True)
    return net.eval()


def make(cell: str, task: str = "classify", layers: int = 2, seed: int = 0):
    spec = RecurrentSpec(cell=cell, layers=layers, input_size=3, hidden=5, classes=3, task=task, seed=seed)
    model = build_recurrent(spec)
    return model, torch_twin(model, spec)


def _init(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def _set(model, name, arr):
    _init(model, name).CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))


def mut_gate_swap(m):  # the PyTorch->ONNX gate reorder forgotten for two blocks
    W = numpy_helper.to_array(_init(m, "l0_W")).copy()
    H = W.shape[1] // (4 if any(n.op_type == "LSTM" for n in m.graph.node) else 3)
    W[:, :H], W[:, H:2 * H] = W[:, H:2 * H].copy(), W[:, :H].copy()
    _set(m, "l0_W", W)


def mut_bias_dropped(m):  # only one of the two PyTorch biases exported (Rb = 0)
    B = numpy_helper.to_array(_init(m, "l1_B")).copy()
    B[:, B.shape[1] // 2:] = 0
    _set(m, "l1_B", B)


def mut_peephole_order(m):  # P written as [p_i, p_f, p_o] instead of [p_i, p_o, p_f]
    P = numpy_helper.to_array(_init(m, "l0_P")).copy()
    H = P.shape[1] // 3
    _set(m, "l0_P", np.concatenate([P[:, :H], P[:, 2 * H:], P[:, H:2 * H]], axis=1))


def mut_linear_before_reset(m):  # GRU exported with the ONNX default instead of PyTorch's semantics
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "linear_before_reset":
                a.i = 0


def mut_state_order(m):  # h_out and c_out swapped: state fed back in the wrong order
    for n in m.graph.node:
        n.output[:] = [{"h_out": "c_out", "c_out": "h_out"}.get(o, o) for o in n.output]


def mut_layer_state_swap(m):  # layer 0 reads layer 1's slice of h_in and vice versa
    for n in m.graph.node:
        if n.op_type == "Slice" and n.input[0] == "h_in":
            k = n.input[1][:3]  # "l0_" / "l1_"
            other = "l1_" if k == "l0_" else "l0_"
            n.input[1], n.input[2] = other + "start", other + "end"


MUTATIONS = [
    ("gate-blocks-swapped", "lstm", mut_gate_swap),
    ("bias-dropped", "gru", mut_bias_dropped),
    ("peephole-order", "peephole", mut_peephole_order),
    ("linear-before-reset", "gru", mut_linear_before_reset),
    ("state-order", "lstm", mut_state_order),
    ("layer-state-swap", "lstm", mut_layer_state_swap),
]


# ------------------------------------------------------------------------------------ statistics
def test_error_stats_fields_and_values():
    ref = np.array([1.0, -2.0, 4.0], dtype=np.float32)
    got = np.array([1.0, -2.5, 4.0], dtype=np.float32)
    s = error_stats(ref, got)
    assert s.max_abs == pytest.approx(0.5)
    assert s.max_rel == pytest.approx(0.25)
    assert s.mean_abs == pytest.approx(0.5 / 3)
    assert s.snr_db == pytest.approx(10 * np.log10(21 / 0.25))
    assert s.worst_index == [1]
    assert 0.99 < s.cosine < 1.0


def test_error_stats_shape_mismatch_is_named():
    with pytest.raises(InputError, match=r"h_out \| candidate and reference shapes differ; expected \[2\], got \[3\]"):
        error_stats(np.zeros(2), np.zeros(3), name="h_out")


def test_error_stats_nan_candidate_is_worst():
    s = error_stats(np.ones(3), np.array([1.0, np.nan, 1.0]))
    assert s.max_abs == float("inf") and s.snr_db < 0


def test_snr_identical_is_capped():
    assert snr_db(np.ones(4), np.ones(4)) == 200.0


def test_top1_agreement_excuses_ties_only():
    ref = np.array([[1.0, 1.0 + 1e-7, 0.0], [2.0, 0.0, 0.0]])
    got = np.array([[1.0 + 2e-7, 1.0, 0.0], [0.0, 2.0, 0.0]])
    a = top1_agreement(ref, got, tie_tol=1e-5)
    assert (a["tie_flips"], a["flips"], a["agreement"], a["raw_agreement"]) == (1, 1, 0.5, 0.0)


def test_trend_detects_growth():
    t = np.arange(1, 1001)
    assert trend(t, 1e-6 * t)["growth"] > 4
    flat = trend(t, np.full(1000, 1e-6))
    assert flat["growth"] == pytest.approx(1.0) and abs(flat["slope_per_1k_steps"]) < 1e-12


# ------------------------------------------------------------------------------------ tolerances
@pytest.mark.parametrize("raw, expected", [
    (["1e-4"], {None: 1e-4}),
    (["h_out:1e-3", "2e-5"], {"h_out": 1e-3, None: 2e-5}),
], ids=["bare", "per-output"])
def test_parse_overrides(raw, expected):
    assert parse_overrides(raw, "--atol") == expected


@pytest.mark.parametrize("raw, match", [
    ("h_out:abc", r"--atol \| not a number"),
    (":1e-3", r"--atol \| empty output name"),
    ("-1", r"--atol \| value out of range"),
], ids=["nan", "empty-name", "negative"])
def test_parse_overrides_rejects(raw, match):
    with pytest.raises(UsageError, match=match):
        parse_overrides([raw], "--atol")


def test_fp32_rule_scales_with_reference_and_override_wins():
    tol = Tolerances(atol={"h_out": 1e-3})
    fp32 = profile_for("fp32")
    s = error_stats(np.array([100.0]), np.array([100.0005]))
    ok, rule, _ = Tolerances().judge("y", s, fp32)  # 1e-5 * 100 = 1e-3 allowed
    assert ok and "max_abs <= 0.001" in rule
    ok, _, why = tol.judge("h_out", error_stats(np.array([0.5]), np.array([0.502])), fp32)
    assert not ok and "max_abs 0.002 > 0.001" in why


def test_int8_profile_judges_snr_not_max_error():
    ref = np.sin(np.linspace(0, 6, 200))
    noisy = ref + 0.02 * np.cos(np.linspace(0, 50, 200))  # ~37 dB, max error 0.02
    ok, rule, _ = Tolerances().judge("y", error_stats(ref, noisy), profile_for("int8-dynamic"))
    assert ok and "snr_db >= 20" in rule
    ok, _, why = Tolerances().judge("y", error_stats(ref, ref * 0.5), profile_for("int8-dynamic"))
    assert not ok and "snr" in why


def test_unknown_override_output_is_an_error(tmp_path):
    path = save(build_recurrent(RecurrentSpec(cell="gru")), tmp_path / "m.onnx")
    with pytest.raises(UsageError, match=r"--atol \| no output named 'c_out'"):
        verify(path, atol=["c_out:1e-3"], steps=0)


def test_unknown_check_is_named(tmp_path):
    path = save(build_recurrent(RecurrentSpec(cell="gru")), tmp_path / "m.onnx")
    with pytest.raises(UnknownChoiceError, match=r"--checks \| unknown check.*got speed"):
        verify(path, checks=["speed"])


# ------------------------------------------------------------------------------------ results
def test_result_is_truthy_serialisable_and_collects_all_failures():
    r = VerifyResult(model="m.onnx", reference="torch")
    r.add(CheckResult("outputs", "ort:cpu[m.onnx]", "torch", "h_out", True, stats={"max_abs": 1e-7}))
    assert r and r.passed
    r.add(CheckResult("outputs", "ort:cpu[m.onnx]", "torch", "c_out", False, message="c_out: max_abs 1 > 1e-05",
                      stats={"max_abs": float("inf")}))
    r.add(CheckResult("streaming", "ort:cpu[m.onnx]", "whole", None, False, message="chunks of 4 differ"))
    assert not r and len(r.failures) == 2
    d = json.loads(r.to_json())
    assert d["passed"] is False and d["summary"] == {"checks": 3, "failed": 2, "skipped": 0}
    assert d["checks"][1]["stats"]["max_abs"] == "inf"
    assert "FAIL outputs c_out" in r.table()
    with pytest.raises(VerificationError, match=r"2 check\(s\) failed: outputs c_out .* streaming"):
        r.raise_for_failures()


# ------------------------------------------------------------------------------------ intact models pass
@pytest.mark.parametrize("cell, task", [("lstm", "classify"), ("peephole", "classify"), ("gru", "label")],
                         ids=["lstm-classify", "peephole-classify", "gru-label"])
def test_intact_model_passes_against_torch(tmp_path, cell, task):
    model, net = make(cell, task)
    path = save(model, tmp_path / f"{cell}.onnx")
    r = verify(path, reference=net, steps=STEPS, seed=1)
    assert r, r.table()
    assert r.reference == "SequenceModel"
    checks = {c.check for c in r.checks}
    assert checks == {"outputs", "task", "streaming", "drift", "batch_invariance", "state_roundtrip"}
    names = set(r.candidates)
    assert {f"ort:cpu[{cell}.onnx]", f"numpy[{cell}.onnx]", f"reference[{cell}.onnx]"} <= names
    # fp32 vs fp32: errors at float32 noise level, far inside 1e-5
    assert max(c.stats["max_abs"] for c in r.select("outputs")) < 1e-5


def test_without_reference_numpy_oracle_is_the_reference(tmp_path):
    path = save(build_recurrent(RecurrentSpec(cell="lstm", layers=2)), tmp_path / "m.onnx")
    r = verify(path, steps=STEPS, oracles=["numpy"])
    assert r and r.reference == "numpy[m.onnx]"
    assert any(s["what"] == "torch" for s in r.skipped)


# ------------------------------------------------------------------------------------ broken models fail
@pytest.mark.parametrize("what, cell, mutate", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_broken_model_fails_against_torch(tmp_path, what, cell, mutate):
    model, net = make(cell, "classify")
    mutate(model)
    path = save(model, tmp_path / "broken.onnx")
    r = verify(path, reference=net, steps=STEPS, oracles=[])
    assert not r
    outs = {c.output for c in r.failures if c.check == "outputs"}
    assert outs, r.table()  # the outputs check names the output(s) that broke
    for c in r.failures:
        assert c.message, c.where
    if what == "state-order":
        assert {"h_out", "c_out"} <= outs
        assert r.select("streaming") and not all(r.select("streaming"))


@pytest.mark.parametrize("what, mutate", [("state-order", mut_state_order), ("layer-state-swap", mut_layer_state_swap)],
                         ids=["state-order", "layer-state-swap"])
def test_wiring_bugs_fail_streaming_even_without_torch(tmp_path, what, mutate):
    model = build_recurrent(RecurrentSpec(cell="lstm", layers=2, hidden=5))
    mutate(model)
    path = save(model, tmp_path / "broken.onnx")
    r = verify(path, steps=0, oracles=["numpy"], checks=["streaming", "state_roundtrip"])
    assert not r
    failed = {c.check for c in r.failures}
    assert "streaming" in failed
    assert any("h_out" in c.message or "c_out" in c.message for c in r.failures)


# ------------------------------------------------------------------------------------ quantized, drift
def test_int8_against_file_judged_by_snr(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgelstm.exporters.quant_passes import REDUCE_RANGE

    model, net = make("lstm", "classify", layers=1)
    fp32 = save(model, tmp_path / "m.onnx")
    int8 = tmp_path / "m.int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, reduce_range=REDUCE_RANGE)
    save(onnx.load(str(int8)), int8)  # onnxruntime's quantizer keeps the fp32 seal: seal the new graph
    r = verify(fp32, reference=net, against=[int8], steps=STEPS, oracles=[],
               checks=["outputs", "task", "streaming", "drift"])
    assert r.config["precisions"] == {"m.onnx": "fp32", "m.int8.onnx": "int8-dynamic"}
    q = r.select("outputs", candidate="ort:cpu[m.int8.onnx]")
    assert q and all("snr_db >= 20" in c.rule for c in q)
    assert r, r.table()
    # the int8 file really differs (noise), the fp32 one does not
    assert max(c.stats["max_abs"] for c in q) > 1e-4


def test_growing_state_error_is_flagged(tmp_path):
    """An integrating LSTM (forget gate ~1): a 1e-5 error in the cell bias accumulates linearly."""
    spec = RecurrentSpec(cell="lstm", layers=1, hidden=4, input_size=3, seed=3)
    good = build_recurrent(spec)
    B = numpy_helper.to_array(_init(good, "l0_B")).copy()
    H = spec.hidden
    B[:, 2 * H:3 * H] = 30.0          # forget gate bias: f = 1
    B[:, 4 * H + 2 * H:4 * H + 3 * H] = 0.0
    _set(good, "l0_B", B)
    bad = onnx.ModelProto()
    bad.CopyFrom(good)
    B2 = B.copy()
    B2[:, 3 * H:4 * H] += 1e-3        # cell candidate bias: c drifts by ~1e-3 * g'(.) per step
    _set(bad, "l0_B", B2)
    p_good, p_bad = save(good, tmp_path / "good.onnx"), save(bad, tmp_path / "bad.onnx")
    r = verify(p_good, against=[p_bad], steps=400, oracles=["numpy"], checks=["drift"])
    bad_drift = r.select("drift", candidate="ort:cpu[bad.onnx]")[0]
    good_drift = r.select("drift", candidate="ort:cpu[good.onnx]")[0]
    assert good_drift.passed, good_drift.message
    assert not bad_drift.passed
    assert "c_out" in bad_drift.message and "keeps growing" in bad_drift.message
    assert bad_drift.stats["per_output"]["c_out"]["growth"] > 4
    assert len(bad_drift.curve["step"]) == len(bad_drift.curve["error"]["c_out"]) > 100


# ------------------------------------------------------------------------------------ data and CLI
def test_user_npz_with_labels_reports_accuracy(tmp_path):
    model, net = make("lstm", "classify", layers=1)
    path = save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 6, 3)).astype(np.float32)
    y = rng.integers(0, 3, 20)
    np.savez(tmp_path / "d.npz", x=x, y=y, lengths=np.full(20, 6, dtype=np.int32))
    r = verify(path, reference=net, data=tmp_path / "d.npz", steps=0, oracles=[], checks=["outputs", "task"])
    task = next(c for c in r.select("task") if c.case.startswith("data=d.npz"))
    assert r and task.stats["labelled"] == 20
    assert task.stats["accuracy"] == pytest.approx(task.stats["reference_accuracy"])


def test_npz_without_x_is_a_data_error(tmp_path):
    from edgelstm.errors import DataError

    path = save(build_recurrent(RecurrentSpec(cell="gru")), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", features=np.zeros((2, 3, 4), np.float32))
    with pytest.raises(DataError, match=r"d.npz \| no array for the model's data input; expected x, got \['features'\]"):
        verify(path, data=tmp_path / "d.npz", steps=0)


FACTORY = '''
import torch
from edgelstm.models import ModelConfig, build_model

def make():
    return build_model(ModelConfig("{cell}", input_size=3, hidden_size=5, num_layers=2, task="classify", num_outputs=3))
'''


@pytest.mark.parametrize("broken", [False, True], ids=["intact-exit-0", "broken-exit-1"])
def test_cli_exit_codes_json_and_plot(tmp_path, broken):
    from click.testing import CliRunner
    from safetensors.torch import save_file

    from edgelstm.cli import cli

    model, net = make("lstm", "classify")
    if broken:
        mut_gate_swap(model)
    path = save(model, tmp_path / "m.onnx")
    (tmp_path / "user_model.py").write_text(FACTORY.format(cell="lstm"))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    args = ["verify", str(path), "--model", f"{tmp_path / 'user_model.py'}:make", "--checkpoint",
            str(tmp_path / "w.safetensors"), "--steps", "40", "--oracles", "numpy",
            "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    res = CliRunner().invoke(cli, args, standalone_mode=False)
    assert res.exception is None, res.output
    assert res.return_value == (1 if broken else 0), res.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is (not broken)
    assert report["reference"].startswith("torch[")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    if broken:
        assert "FAIL outputs logits" in res.output
        assert any(f.startswith("outputs h_out") for f in report["failures"])
    else:
        assert "PASSED" in res.output


def test_cli_usage_error_exit_2(tmp_path):
    import subprocess

    path = save(build_recurrent(RecurrentSpec(cell="gru")), tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-m", "edgelstm", "verify", str(path), "--atol", "h_out:x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--atol | not a number" in proc.stderr


# ------------------------------------------------------------------------------------ through the real exporter
@pytest.mark.parametrize("name", ["lstm-1x4", "peephole-1x4", "gru-1x6-forecast"])
def test_exported_run_dir_passes_and_gate_swap_exits_1(tmp_path, name):
    """edgelstm train's run dir -> edgelstm.exporters export_run -> `edgelstm verify --reference RUN_DIR`."""
    runs = pytest.importorskip("edgelstm.exporters.runs")
    from click.testing import CliRunner
    from tiny import TINY, make_tiny

    from edgelstm.checkpoint import RunConfig, save_run
    from edgelstm.cli import cli

    run_dir = tmp_path / "run"
    save_run(run_dir, make_tiny(name, 0), RunConfig.for_model(TINY[name]), {})
    path = tmp_path / "m.onnx"
    runs.export_run(run_dir, path)
    args = ["verify", str(path), "--reference", str(run_dir), "--steps", "30", "--oracles", "numpy", "-q"]
    res = CliRunner().invoke(cli, args, standalone_mode=False)
    assert res.exception is None and res.return_value == 0, res.output

    model = onnx.load(str(path))  # swap two gate blocks of the first recurrent node's W
    node = next(n for n in model.graph.node if n.op_type in ("LSTM", "GRU"))
    W = numpy_helper.to_array(_init(model, node.input[1])).copy()
    H = W.shape[1] // (4 if node.op_type == "LSTM" else 3)
    W[:, :H], W[:, H:2 * H] = W[:, H:2 * H].copy(), W[:, :H].copy()
    _set(model, node.input[1], W)
    onnx.save(model, str(path))  # the export's seal no longer matches: refused unless trusted
    res = CliRunner().invoke(cli, args[:-1], standalone_mode=False)
    assert isinstance(res.exception, ModelFileError) and "seal mismatch" in str(res.exception)
    res = CliRunner().invoke(cli, args[:-1] + ["--trust-modified"], standalone_mode=False)
    assert res.exception is None and res.return_value == 1, res.output
    assert "FAIL outputs" in res.output
