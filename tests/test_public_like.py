"""Every graph a user exports, through every command (issue 10).

Models shaped like public ones (``tests/user_models/public_like.py``): a time-major word LM with
token ids and its hidden state as a forward argument, a bidirectional classifier with ``ids`` and
``lengths``, a CRNN on images ``[batch, 1, H, W]``, a channels-first forecaster
``[batch, vars, time]``, a speaker encoder whose input is ``x``. Each goes ``export`` ->
``quantize --mode int8-dynamic`` (no calibration) -> ``verify --model`` (exit 0) -> ``run`` (CLI,
an ``.npz`` keyed by input name) -> streaming where the export says it streams.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from edgelstm import runtime  # noqa: E402
from edgelstm.cli import main  # noqa: E402
from edgelstm.errors import InputError, QuantizationAccuracyError  # noqa: E402
from edgelstm.exporters import quantize as q  # noqa: E402
from edgelstm.exporters.quant_eval import MIN_SQNR_DB  # noqa: E402
from clitools import run_cli  # noqa: E402

MODELS = Path(__file__).parent / "user_models" / "public_like.py"
VOCAB = 13

# name: (factory, export options, {input: array maker(rng)}, expected interface of the inputs
#        {name: (role, batch axis, time axis, token range)}, streamable)
CASES = {
    "word-lm": ("build_lm", ["--input", "tokens:int64[time,batch]", "--input", "h_in:float32[2,batch,8]",
                             "--output-name", "logits", "--output-name", "h_out"],
                {"tokens": lambda r: r.integers(0, VOCAB, (5, 2))},
                {"tokens": ("tokens", 1, 0, (0, VOCAB)), "h_in": ("state_in", 1, None, None)}, True),
    "bi-classifier": ("build_classifier", ["--input", "ids:int64[batch,time]", "--input", "lengths:int64[batch]",
                                           "--lengths-input", "lengths"],
                      {"ids": lambda r: r.integers(0, VOCAB, (3, 6)), "lengths": lambda r: np.array([6, 2, 4])},
                      {"ids": ("tokens", 0, 1, (0, VOCAB)), "lengths": ("lengths", 0, None, None)}, False),
    "crnn": ("build_crnn", ["--input", "image:float32[batch,1,8,width]"],
             {"image": lambda r: r.standard_normal((2, 1, 8, 7)).astype(np.float32)},
             {"image": ("data", 0, 3, None)}, False),
    "forecaster": ("build_forecaster", ["--input", "series:float32[batch,3,time]"],
                   {"series": lambda r: r.standard_normal((2, 3, 9)).astype(np.float32)},
                   {"series": ("data", 0, 2, None)}, False),
    "speaker": ("build_speaker", ["--input", "x:float32[batch,time,5]", "--expose-state"],
                {"x": lambda r: r.standard_normal((2, 9, 5)).astype(np.float32)},
                {"x": ("data", 0, 1, None), "h_in": ("state_in", 1, None, None)}, True),
}
# fp32 graph vs itself fed step by step (or chunk by chunk): the same kernels on the same values,
# summed in another order at most; 1e-5 is a few float32 ulps of outputs of order 1
STREAM_ATOL = 1e-5


_cli = run_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every case exported and quantized once (CLI), with its named input .npz."""
    d = tmp_path_factory.mktemp("public-like")
    rng = np.random.default_rng(0)
    out = {}
    for name, (factory, opts, makers, _, _) in CASES.items():
        src, qnt, data = d / f"{name}.onnx", d / f"{name}.int8.onnx", d / f"{name}.npz"
        for argv in (["export", "--model", f"{MODELS}:{factory}", "-o", str(src), *opts],
                     ["quantize", str(src), "-o", str(qnt), "--mode", "int8-dynamic", "--force-int8",
                      "--json", str(d / f"{name}.quant.json")]):
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert e.value.code == 0, (name, argv[0])
        np.savez(data, **{k: f(rng) for k, f in makers.items()})
        out[name] = (src, qnt, data)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_export_describes_the_interface(exported, name):
    src, _, _ = exported[name]
    model = runtime.load(src)
    want = CASES[name][3]
    got = {t.name: (t.role, t.batch_axis, t.time_axis, t.token_range) for t in model.interface.inputs}
    assert {k: got[k] for k in want} == want
    assert model.streamable is CASES[name][4]
    assert model.manifest.interface["binding"]["call"] == "forward"


@pytest.mark.parametrize("name", list(CASES))
def test_quantize_without_calibration_measures_the_error(exported, name):
    src, qnt, _ = exported[name]
    report = json.loads((qnt.parent / f"{name}.quant.json").read_text())
    assert report["samples"] == 64 and report["data_source"].startswith("random")
    # every output measured, none far off (the gate would have refused the file)
    assert report["errors"] and all(e["snr_db"] >= MIN_SQNR_DB for e in report["errors"])
    assert runtime.load(qnt).manifest.precision == "int8-dynamic"


@pytest.mark.parametrize("name", list(CASES))
def test_verify_model_calls_the_module_as_export_did(exported, name, capsys):
    src, qnt, data = exported[name]
    code, out, err = _cli(["verify", str(src), "--model", f"{MODELS}:{CASES[name][0]}", "--against", str(qnt),
                           "--data", str(data), "--steps", "6", "--oracles", "numpy", "--json", "-"], capsys)
    assert code == 0, err
    res = json.loads(out)
    torch_vs_fp32 = [c for c in res["checks"] if c["check"] == "outputs" and c["candidate"] == f"ort:cpu[{src.name}]"]
    assert torch_vs_fp32 and all(c["passed"] for c in torch_vs_fp32)
    assert res["reference"].startswith("torch[")
    done = {c["check"] for c in res["checks"]}
    assert ("streaming" in done) is CASES[name][4]
    assert ("batch_invariance" in done) is (name == "bi-classifier")


@pytest.mark.parametrize("name", list(CASES))
def test_run_cli_takes_arrays_by_input_name(exported, name, capsys, tmp_path):
    src, qnt, data = exported[name]
    arrays = dict(np.load(data))
    code, out, err = _cli(["run", str(qnt), "--input", str(data), "--out", str(tmp_path / "o.npz")], capsys)
    assert code == 0, err
    model = runtime.load(qnt)
    want = model.run(inputs=arrays)
    got = np.load(tmp_path / "o.npz")
    for k, v in want.outputs.items():
        np.testing.assert_array_equal(got[k], v)  # the same runtime on the same arrays
    states = [s.input for s in model.states]
    if states:
        assert f"filled: {states[0]} (zeros)" in out


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[4]])
def test_stream_steps_frames_of_the_inputs_own_shape(exported, name):
    src, _, data = exported[name]
    model = runtime.load(src)
    info = model.interface.primary
    x = np.load(data)[info.name]
    whole = model.run(x)
    stream = model.stream(batch=x.shape[info.batch_axis])
    out_axis = {t.name: t.time_axis for t in model.interface.data_outputs}
    for t in range(x.shape[info.time_axis]):
        step = stream.step(np.take(x, t, axis=info.time_axis))  # one token id per sequence for the LM
        for k, v in step.outputs.items():
            ref = np.take(whole[k], t, axis=out_axis[k]) if out_axis[k] is not None else None
            if ref is not None:
                np.testing.assert_allclose(v, ref, atol=STREAM_ATOL, rtol=0)
    for k, v in stream.state.items():
        np.testing.assert_allclose(v, whole.state[k], atol=STREAM_ATOL, rtol=0)
    group = model.streams(x.shape[info.batch_axis])
    first = group.step(np.take(x, 0, axis=info.time_axis))
    for k, v in first.outputs.items():
        if out_axis[k] is not None:
            np.testing.assert_allclose(v, np.take(whole[k], 0, axis=out_axis[k]), atol=STREAM_ATOL, rtol=0)


def test_run_cli_streams_a_time_major_token_model(exported, capsys, tmp_path):
    src, _, data = exported["word-lm"]
    code, out, err = _cli(["run", str(src), "--input", str(data), "--stream", "--out", str(tmp_path / "s.npz")],
                          capsys)
    assert code == 0, err
    assert re.search(r"streamed 5 steps x batch 2", out)
    whole = runtime.load(src).run(np.load(data)["tokens"])
    np.testing.assert_allclose(np.load(tmp_path / "s.npz")["logits"], whole["logits"], atol=STREAM_ATOL, rtol=0)


@pytest.mark.parametrize("argv_tail, want_code, match", [
    (["tokens=big"], InputError.exit_code, r"tokens \| token id out of range; expected ids in 0\.\.12, got min 13"),
    (["tokens=float"], InputError.exit_code, r"tokens \| wrong dtype; expected integer token ids \(int64\), got float32"),
    (["frames=1"], 3, r"frames \| array does not name a graph input"),  # DataError: the file, not an input
], ids=["out-of-range", "float-ids", "unknown-array"])
def test_run_cli_refuses_bad_token_data_in_one_line(exported, capsys, tmp_path, argv_tail, want_code, match):
    src, _, _ = exported["word-lm"]
    key, kind = argv_tail[0].split("=")
    value = {"big": np.full((3, 2), VOCAB), "float": np.zeros((3, 2), np.float32), "1": np.zeros(2)}[kind]
    arrays = {"tokens": np.zeros((3, 2), np.int64)} | {key: value}
    np.savez(tmp_path / "bad.npz", **arrays)
    code, out, err = _cli(["run", str(src), "--input", str(tmp_path / "bad.npz")], capsys)
    assert code == want_code and re.search(match, err), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_quantize_refuses_a_far_off_model_unless_accepted(exported, tmp_path, monkeypatch):
    src, _, _ = exported["speaker"]
    from edgelstm.exporters import quant_eval

    monkeypatch.setattr(quant_eval, "MIN_SQNR_DB", 500.0)  # every int8 output is "far off" at this bar
    with pytest.raises(QuantizationAccuracyError, match=r"far off the float model.*nothing written"):
        q.quantize(src, tmp_path / "far.onnx", "int8-dynamic", force_int8=True)
    assert not (tmp_path / "far.onnx").exists()
    report = q.quantize(src, tmp_path / "far.onnx", "int8-dynamic", force_int8=True, accept_error=True)
    assert any("FAR OFF, accepted" in n for n in report.notes) and (tmp_path / "far.onnx").exists()


def test_quantize_calibration_follows_each_inputs_batch_axis(exported, tmp_path):
    src, _, _ = exported["word-lm"]
    rng = np.random.default_rng(1)
    # time-major tokens [time, batch] and the state [layers, batch, hidden]: 5 sequences each
    np.savez(tmp_path / "cal.npz", tokens=rng.integers(0, VOCAB, (4, 5)),
             h_in=rng.standard_normal((2, 5, 8)).astype(np.float32))
    report = q.quantize(src, tmp_path / "cal.onnx", "int8-dynamic", force_int8=True, calibration=tmp_path / "cal.npz")
    assert report.samples == 5 and report.data_source == "cal.npz"


# ------------------------------------------------------------------------------ one home per fact
LIBRARY = [Path(__file__).parent.parent / d for d in ("edgelstm", "runtime", "exporters")]
HOMES = {
    # the state pairing rule: NAME_in <-> NAME_out
    "state pairing": (re.compile(r"""endswith\(["']_(in|out)["']\)|\[:-[34]\]\s*\+\s*["']_(in|out)["']"""),
                      "runtime/interface.py"),
    # the seq2seq pair names X.encoder.onnx / X.decoder_step.onnx
    "pair naming": (re.compile(r"""f["']\{[a-z_]+\}\.(encoder|decoder_step)\.onnx|endswith\(\(["']\.encoder\.onnx"""),
                    "runtime/interface.py"),
    # reading or writing the manifest entry of metadata_props
    "manifest reading": (re.compile(r"""\.get\(MANIFEST_KEY\)|key == MANIFEST_KEY|\[MANIFEST_KEY\]"""),
                         "runtime/integrity.py"),
}


SAMPLES = {  # copies as they were spelled before (issue 15's review)
    "state pairing": 'if s.name.endswith("_in") and s.name[:-3] + "_out" in outs:',
    "pair naming": 'enc = p.with_name(f"{stem}.encoder.onnx")',
    "manifest reading": "text = meta.get(MANIFEST_KEY)",
}


@pytest.mark.parametrize("fact", list(HOMES))
def test_each_contract_fact_has_one_definition(fact):
    pattern, home = HOMES[fact]
    found = sorted({str(p.relative_to(LIBRARY[0].parent)) for root in LIBRARY for p in root.rglob("*.py")
                    if pattern.search(p.read_text(encoding="utf-8"))})
    assert set(found) <= {home}, f"{fact} is spelled outside {home}: {found}"
    assert pattern.search(SAMPLES[fact])  # the grep would catch the spelling it looks for


def test_commands_import_the_one_definition():
    from edgelstm.exporters import calibration
    from edgelstm.exporters import quantize as quant
    from edgelstm.runtime import integrity, interface, model
    from edgelstm.verify import backends

    assert model.pair_states is interface.pair_states
    assert quant._set_manifest is integrity.set_manifest
    assert quant.Interface is interface.Interface and backends.Interface is interface.Interface
    assert calibration.Interface is interface.Interface


# ------------------------------------------------------------------------------ several data inputs
def _two_inputs(path: Path) -> Path:
    """A foreign graph (no manifest) with two data inputs: ``out = a + b``."""
    from onnx import TensorProto, helper

    from tests.graphs import OPSET, save

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["out"])], "two",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in "ab"],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return save(model, path)


@pytest.mark.parametrize("arrays, code, match", [
    ({"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)}, 0, r"out: shape \[2, 3\], mean 2"),
    ({"a": np.ones((2, 3), np.float32)}, InputError.exit_code, r"b \| missing input; expected \['a', 'b'\]"),
    ({"data": np.ones((2, 3), np.float32)}, 3, r"several data inputs: name each array after its input"),
], ids=["both", "one-missing", "unnamed"])
def test_run_cli_feeds_several_inputs_by_name(tmp_path, capsys, arrays, code, match):
    model = _two_inputs(tmp_path / "two.onnx")
    np.savez(tmp_path / "in.npz", **arrays)
    got, out, err = _cli(["run", str(model), "--input", str(tmp_path / "in.npz")], capsys)
    assert got == code and re.search(match, out + err), (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1
