"""``edgelstm export`` end to end: a run directory, a user module defined outside the package
(tests/user_models/), and every bad input -> one clear line, its exit code, nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgelstm.cli import main  # noqa: E402
from edgelstm.errors import CheckpointError, ModelDefinitionError, UnsupportedError, UsageError  # noqa: E402
from edgelstm.exporters import read_manifest  # noqa: E402
from clitools import run_cli  # noqa: E402

torch.set_num_threads(1)
USER = Path(__file__).parent / "user_models"
TAGGER = f"{USER / 'tagger.py'}:build"


_cli = run_cli


@pytest.fixture
def tagger_checkpoint(tmp_path):
    from safetensors.torch import save_file

    import importlib.util

    spec = importlib.util.spec_from_file_location("tagger_for_ckpt", USER / "tagger.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(123)
    model = mod.Tagger()
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


def test_user_module_through_cli(tmp_path, capsys, tagger_checkpoint):
    ckpt, model = tagger_checkpoint
    out = tmp_path / "tagger.onnx"
    report = tmp_path / "report.json"
    code, stdout, err = _cli(["export", "--model", TAGGER, "--checkpoint", str(ckpt),
                              "--input", "x:float32[batch,time,6]", "-o", str(out), "--json", str(report)], capsys)
    assert code == 0, err
    assert "GRU(bidirectional, hidden 5)" in stdout and "parity vs PyTorch" in stdout
    rep = json.loads(report.read_text())
    assert rep["nodes_after"]["GRU"] == 2 and rep["node_count_after"] < rep["node_count_before"]
    m = read_manifest(out)
    from edgelstm.checkpoint import sha256_file

    assert m.checkpoint_sha256 == sha256_file(ckpt) and m.family == "gru"
    # the checkpoint's weights (not the factory's) are in the graph
    x = np.random.default_rng(0).standard_normal((3, 17, 6)).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    # fp32 rule of docs/DESIGN.md
    assert np.max(np.abs(got - ref)) <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_package_module_factory_and_expose_state(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(USER.parent))
    out = tmp_path / "two.onnx"
    # time-major x: exported as is, not streamable (the streaming runtime cuts chunks on axis 1)
    code, _, err = _cli(["export", "--model", "user_models.tagger:build_two", "--input", "x:float32[time,batch,4]",
                         "-o", str(out)], capsys)
    assert code == 0, err
    m = read_manifest(out)
    assert m.family == "custom" and m.streamable is False and m.inputs[0].shape == ["time", "batch", 4]
    # ... and --expose-state on it exposes the state of both modules (not streamable by `edgelstm run`)
    code, _, err = _cli(["export", "--model", "user_models.tagger:build_two", "--input", "x:float32[time,batch,4]",
                         "--expose-state", "-o", str(tmp_path / "two-state.onnx")], capsys)
    assert code == 0, err
    m = read_manifest(tmp_path / "two-state.onnx")
    assert [s.input for s in m.states] == ["h_in_0", "c_in_0", "h_in_1"] and m.streamable is False


def test_run_directory_through_cli(tmp_path, capsys):
    from edgelstm.checkpoint import RunConfig, save_run
    from edgelstm.models import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig("gru", input_size=3, hidden_size=4, task="classify", num_outputs=2)
    run = tmp_path / "run"
    save_run(run, build_model(cfg), RunConfig.for_model(cfg, labels=["no", "yes"],
                                                        normalization={"mean": [0, 1, 2], "std": [1, 1, 2]}))
    out = tmp_path / "gru.onnx"
    code, stdout, err = _cli(["export", str(run), "-o", str(out)], capsys)
    assert code == 0, err
    m = read_manifest(out)
    assert m.labels == ["no", "yes"] and m.normalization.mean == [0, 1, 2] and m.checkpoint_sha256
    # a second export refuses to overwrite unless asked
    code, _, err = _cli(["export", str(run), "-o", str(out)], capsys)
    assert code == UsageError.exit_code and "output exists" in err
    code, _, err = _cli(["export", str(run), "-o", str(out), "--overwrite", "--no-verify"], capsys)
    assert code == 0, err


BAD = [
    pytest.param(["--model", f"{USER / 'broken_import.py'}:build"], ModelDefinitionError,
                 "does not import.*missing_dependency_on_purpose", id="module_does_not_import"),
    pytest.param(["--model", f"{USER / 'nope.py'}:build"], ModelDefinitionError, "no such Python file",
                 id="missing_model_file"),
    pytest.param(["--model", f"{USER / 'tagger.py'}:nope"], ModelDefinitionError, "no callable 'nope'",
                 id="missing_factory"),
    pytest.param(["--model", f"{USER / 'tagger.py'}:build_broken"], ModelDefinitionError,
                 "factory raised.*failed on purpose", id="factory_raises"),
    pytest.param(["--model", f"{USER / 'tagger.py'}:build_not_module"], ModelDefinitionError,
                 "did not return an nn.Module", id="factory_not_module"),
    pytest.param(["--model", f"{USER / 'tagger.py'}:build_linear"], ModelDefinitionError, "no recurrent layer",
                 id="no_recurrent_layer"),
    pytest.param(["--model", f"{USER / 'tagger.py'}:build_projected"], UnsupportedError, "proj_size",
                 id="lstm_proj_size"),
    pytest.param(["--model", TAGGER, "--checkpoint", "missing.safetensors"], CheckpointError,
                 "no such weights file", id="missing_checkpoint"),
    pytest.param(["--model", "tagger.py"], UsageError, "malformed model reference", id="no_factory_name"),
]


@pytest.mark.parametrize("args,error,match", BAD)
def test_bad_inputs_exit_code_and_nothing_written(tmp_path, capsys, args, error, match):
    out = tmp_path / "o" / "m.onnx"
    code, _, err = _cli(["export", *args, "--input", "x:float32[batch,time,6]", "-o", str(out)], capsys)
    assert code == error.exit_code
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    import re

    assert re.search(match, err), err
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


def test_checkpoint_that_does_not_fit_lists_tensors(tmp_path, capsys):
    from safetensors.torch import save_file

    bad = {"gru.weight_ih_l0": torch.zeros(15, 7), "extra.weight": torch.zeros(1)}
    path = tmp_path / "bad.safetensors"
    save_file(bad, str(path))
    out = tmp_path / "m.onnx"
    code, _, err = _cli(["export", "--model", TAGGER, "--checkpoint", str(path), "--input", "x:float32[batch,time,6]",
                         "-o", str(out)], capsys)
    assert code == CheckpointError.exit_code
    assert "missing" in err and "unexpected [extra.weight]" in err and "mis-shaped [gru.weight_ih_l0" in err
    assert not out.exists()


@pytest.mark.parametrize("args,match", [
    (["--input", "x:float32(batch)"], "malformed input specification"),
    ([], "required with --model"),
], ids=["malformed_input", "no_input"])
def test_usage_errors(tmp_path, capsys, args, match):
    code, _, err = _cli(["export", "--model", TAGGER, *args, "-o", str(tmp_path / "m.onnx")], capsys)
    assert code == UsageError.exit_code and match in err
    assert list(tmp_path.iterdir()) == []


def test_neither_run_dir_nor_model(tmp_path, capsys):
    code, _, err = _cli(["export", "-o", str(tmp_path / "m.onnx")], capsys)
    assert code == UsageError.exit_code and "nothing to export" in err


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from edgelstm.cli import main\n"
            "try:\n    main(['export', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--expose-state" in proc.stdout and proc.stdout.strip().endswith("False")
