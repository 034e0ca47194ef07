"""``edgelstm inspect``: manifest, I/O and states, op histogram (subgraphs too), parameters, providers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelstm.cli import main
from edgelstm.cli.inspect import SCHEMA, format_report, inspect_model
from edgelstm.errors import ModelFileError, UnknownChoiceError
from edgelstm.runtime import providers as prov
from edgelstm.bench.floor import file_facts

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, build_add, build_recurrent, save  # noqa: E402
from tiny import TINY, make_tiny  # noqa: E402
from clitools import run_cli  # noqa: E402

# the same import blocker as test_scaffold.py: a device install has neither torch nor onnx
BLOCK_HEAVY = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript'):
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
"""

EXPORTED = ["lstm-1x4", "gru-2x8-bi", "peephole-1x4"]
RECURRENT_OP = {"lstm": "LSTM", "gru": "GRU", "peephole": "LSTM"}


_cli = run_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    from edgelstm.exporters import export_model
    from edgelstm.exporters.quantize import quantize

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("inspect")
    paths, torch_params = {}, {}
    for name in [*EXPORTED, "attention-s2s-1x8"]:
        model = make_tiny(name)
        torch_params[name] = sum(p.numel() for p in model.parameters())
        export_model(model, d / f"{name}.onnx")
        paths[name] = d / f"{name}.onnx"
    quantize(paths["lstm-1x4"], d / "lstm-int8.onnx", "int8-dynamic", force_int8=True)
    paths["lstm-int8"] = d / "lstm-int8.onnx"
    return paths, torch_params


def _if_graph(path: Path) -> Path:
    """A bare graph whose If node holds two branches, each with its own initializer and op."""
    def branch(op, name):
        init = numpy_helper.from_array(np.full(3, 2.0, np.float32), f"{name}_k")
        return helper.make_graph([helper.make_node(op, ["a", f"{name}_k"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, ["n", 3])], [init])
    g = helper.make_graph(
        [helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["cond"]),
         helper.make_node("If", ["cond"], ["out"], name="pick", then_branch=branch("Mul", "then"),
                          else_branch=branch("Sub", "else"))],
        "if", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return save(model, path)


# ------------------------------------------------------------------------------ exported models
@pytest.mark.parametrize("name", EXPORTED, ids=EXPORTED)
def test_exported_model_report(exported, name):
    paths, torch_params = exported
    r = inspect_model(paths[name], device="cpu")
    assert r["schema"] == SCHEMA and r["kind"] == "model" and len(r["graphs"]) == 1
    g = r["graphs"][0]
    cfg = TINY[name]
    assert g["manifest"]["family"] == cfg.family and g["manifest"]["precision"] == "fp32"
    assert g["digest"] == "ok"
    assert [t["name"] for t in g["inputs"]][:2] == ["x", "lengths"]
    assert g["inputs"][0]["dtype"] == "float32" and g["inputs"][0]["shape"][-1] == cfg.input_size
    dirs = 2 if cfg.bidirectional else 1
    want_states = ["h_in", "c_in"] if cfg.family != "gru" else ["h_in"]
    assert [s["input"] for s in g["states"]] == want_states
    assert all(s["shape"][0] == cfg.num_layers * dirs and s["shape"][-1] == cfg.hidden_size for s in g["states"])
    assert g["ops"][RECURRENT_OP[cfg.family]] == cfg.num_layers and g["subgraph_ops"] == {}
    assert g["file_bytes"] == paths[name].stat().st_size
    # the same count as the benchmark's reader; ONNX holds the torch weights (LSTM/GRU biases are
    # stored as one [W_b, R_b] tensor, the same element count) plus nothing else of float type
    assert g["parameters"] == file_facts(paths[name]).parameters == torch_params[name]


def test_quantized_model_shows_int8_ops_and_smaller_weights(exported):
    paths, _ = exported
    fp32 = inspect_model(paths["lstm-1x4"], device="cpu")["graphs"][0]
    q = inspect_model(paths["lstm-int8"], device="cpu")["graphs"][0]
    assert q["manifest"]["precision"] == "int8-dynamic" and q["digest"] == "ok"
    assert q["ops"]["com.microsoft:DynamicQuantizeLSTM"] == 1 and "LSTM" not in q["ops"]
    assert q["opsets"]["com.microsoft"] == 1
    assert q["weight_bytes"] < fp32["weight_bytes"]


def test_tampered_export_reports_digest_mismatch(exported, tmp_path):
    paths, _ = exported
    m = onnx.load(str(paths["lstm-1x4"]))
    w = m.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) + 1, w.name))
    edited = save(m, tmp_path / "edited.onnx", seal=False)  # keeps the export's seal, now wrong
    with pytest.raises(ModelFileError, match=r"edited.onnx \| graph or manifest modified after export \(seal mismatch\)"):
        inspect_model(edited, device="cpu")
    report = inspect_model(edited, device="cpu", trust_modified=True)
    assert report["graphs"][0]["digest"] == "mismatch"
    assert "SEAL MISMATCH" in format_report(report)


@pytest.mark.parametrize("which", ["stem", "encoder", "decoder_step"])
def test_seq2seq_pair_shows_both_graphs(exported, which):
    paths, torch_params = exported
    stem = paths["attention-s2s-1x8"]
    arg = stem if which == "stem" else stem.with_name(f"{stem.stem}.{which}.onnx")
    r = inspect_model(arg, device="cpu")
    assert r["kind"] == "seq2seq"
    assert [g["role"] for g in r["graphs"]] == ["encoder", "decoder_step"]
    assert [Path(g["path"]).name for g in r["graphs"]] == [f"{stem.stem}.encoder.onnx",
                                                          f"{stem.stem}.decoder_step.onnx"]
    assert "src" in [t["name"] for t in r["graphs"][0]["inputs"]]
    assert "attention" in [t["name"] for t in r["graphs"][1]["outputs"]]
    assert all(g["ops"]["LSTM"] == 1 for g in r["graphs"])
    assert r["file_bytes"] == sum(Path(g["path"]).stat().st_size for g in r["graphs"])
    # encoder + decoder step each hold their own copy of shared tensors, so at least torch's count
    assert r["parameters"] >= torch_params["attention-s2s-1x8"]


# ------------------------------------------------------------------------------ bare graphs
def test_graph_without_manifest(tmp_path):
    r = inspect_model(save(build_add(), tmp_path / "add.onnx"), device="cpu")
    g = r["graphs"][0]
    assert g["manifest"] is None and g["digest"] is None and g["role"] == "model"
    assert g["inputs"] == [{"name": "a", "dtype": "float32", "shape": ["n", 3]}]
    assert g["states"] == [] and g["ops"] == {"Add": 1} and g["parameters"] == 3
    assert "manifest    none" in format_report(r)


def test_bare_recurrent_graph_infers_states(tmp_path):
    path = save(build_recurrent(RecurrentSpec(cell="gru", layers=2, manifest=False)), tmp_path / "gru.onnx")
    g = inspect_model(path, device="cpu")["graphs"][0]
    assert g["manifest"] is None
    assert [(s["input"], s["output"]) for s in g["states"]] == [("h_in", "h_out")]
    assert g["ops"]["GRU"] == 2


def test_ops_inside_subgraphs_are_counted_separately(tmp_path):
    r = inspect_model(_if_graph(tmp_path / "if.onnx"), device="cpu")
    g = r["graphs"][0]
    assert g["ops"] == {"Greater": 1, "If": 1, "ReduceSum": 1} and g["nodes"] == 3
    assert g["subgraph_ops"] == {"Mul": 1, "Sub": 1}
    assert sorted((s["node"], s["attribute"], s["nodes"]) for s in g["subgraphs"]) == [("pick", "else_branch", 1),
                                                                                       ("pick", "then_branch", 1)]
    assert g["parameters"] == 1 + 3 + 3 and g["initializers"] == 3  # "zero" + each branch's constant
    assert "ops inside subgraphs (2: If.else_branch (pick), If.then_branch (pick))" in format_report(r)


# ------------------------------------------------------------------------------ providers
@pytest.mark.parametrize("avail, device, chosen, fell_back", [
    (["CPUExecutionProvider"], "auto", ["CPUExecutionProvider"], False),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], False),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "tensorrt",
     ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], False),
    (["CPUExecutionProvider"], "cuda", ["CPUExecutionProvider"], True),
], ids=["auto-cpu-only", "auto-with-cuda", "tensorrt", "cuda-missing-falls-back"])
def test_provider_plan_under_control(tmp_path, monkeypatch, avail, device, chosen, fell_back):
    monkeypatch.setattr(prov.ort, "get_available_providers", lambda: list(avail))
    r = inspect_model(save(build_add(), tmp_path / "add.onnx"), device=device)
    p = r["providers"]
    assert p["available"] == avail and p["chosen"] == chosen and p["fell_back"] is fell_back
    assert (p["note"] is not None) is fell_back
    if fell_back:
        assert "CUDAExecutionProvider is not available" in p["note"]
        assert "falls back" in format_report(r)


# ------------------------------------------------------------------------------ CLI, JSON, errors
def test_cli_text_and_json(exported, tmp_path, capsys):
    paths, _ = exported
    out_json = tmp_path / "r.json"
    code, out, err = _cli(["inspect", str(paths["gru-2x8-bi"]), "--device", "cpu", "--json", str(out_json)], capsys)
    assert code == 0, err
    for needle in ("family", "gru", "h_in <- h_out", "GRU", "parameters", "--device cpu: CPUExecutionProvider"):
        assert needle in out
    report = json.loads(out_json.read_text())
    assert set(report) == {"schema", "path", "kind", "graphs", "file_bytes", "parameters", "providers"}
    assert set(report["graphs"][0]) == {
        "path", "role", "file_bytes", "manifest", "digest", "inputs", "outputs", "states", "ir_version",
        "producer", "opsets", "nodes", "ops", "subgraph_ops", "subgraphs", "initializers", "parameters",
        "weight_bytes"}
    assert set(report["providers"]) == {"device", "available", "requested", "chosen", "primary", "fell_back", "note"}
    assert report == json.loads(json.dumps(inspect_model(paths["gru-2x8-bi"], device="cpu")))


def test_cli_json_to_stdout(tmp_path, capsys):
    code, out, err = _cli(["inspect", str(save(build_add(), tmp_path / "a.onnx")), "--json", "-"], capsys)
    assert code == 0, err
    assert json.loads(out)["graphs"][0]["ops"] == {"Add": 1}


def _not_onnx(tmp_path):
    (tmp_path / "x.onnx").write_text("hello, not a protobuf")
    return tmp_path / "x.onnx"


@pytest.mark.parametrize("make, pattern", [
    (lambda d: d / "missing.onnx", r"missing.onnx \| model file not found"),
    (_not_onnx, r"x.onnx \| model file is not an ONNX model; expected an ONNX ModelProto"),
    (lambda d: d, r"model path is a directory"),
], ids=["missing", "not-onnx", "directory"])
def test_bad_files_raise_model_file_error(tmp_path, capsys, make, pattern):
    path = make(tmp_path)
    with pytest.raises(ModelFileError, match=pattern):
        inspect_model(path)
    code, out, err = _cli(["inspect", str(path)], capsys)
    assert code == ModelFileError.exit_code == 8
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and out == ""


def test_unknown_device_is_a_usage_error(tmp_path, capsys):
    path = save(build_add(), tmp_path / "a.onnx")
    with pytest.raises(UnknownChoiceError, match=r"device \| unknown device.*got gpu9"):
        inspect_model(path, device="gpu9")
    code, _, err = _cli(["inspect", str(path), "--device", "gpu9"], capsys)
    assert code == 2 and "unknown device" in err


def test_works_without_torch_or_onnx(exported, tmp_path):
    paths, _ = exported
    out = tmp_path / "r.json"
    code = BLOCK_HEAVY + (f"from edgelstm.cli import main\n"
                          f"main(['inspect', {str(paths['attention-s2s-1x8'])!r}, '--json', {str(out)!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "blocked import" not in r.stderr
    report = json.loads(out.read_text())
    assert report["kind"] == "seq2seq" and [g["role"] for g in report["graphs"]] == ["encoder", "decoder_step"]
    assert "encoder" in r.stdout and "decoder_step" in r.stdout
