"""The whole pipeline through the CLI, per family: train -> export -> quantize -> run -> verify.

Tiny models on bundled data (one epoch): this checks that the stages fit together (file formats,
manifest, graph digest, exit codes), not model quality (the demo reports quality).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgelstm.cli import cli
from edgelstm.errors import UsageError

# family, dataset, quantization modes the family's graph can take on CPU
CASES = [
    ("lstm", "digits", ["int8-dynamic", "fp16"]),
    ("peephole", "timing", ["int8-dynamic", "fp16"]),
    ("gru", "sine", ["int8-dynamic", "fp16"]),
    ("attention", "dates", ["int8-dynamic", "fp16"]),
]


def _ok(result):
    assert result.exit_code == 0, result.output + (repr(result.exception) if result.exception else "")
    return result


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.mark.parametrize("family,dataset,modes", CASES, ids=[c[0] for c in CASES])
def test_train_export_quantize_run_verify(tmp_path, runner, family, dataset, modes):
    run = tmp_path / "run"
    _ok(runner.invoke(cli, ["train", "--family", family, "--dataset", dataset, "--hidden", "8",
                            "--epochs", "1", "--quiet", "--threads", "1", "--out", str(run)]))
    assert (run / "model.safetensors").is_file() and (run / "config.json").is_file()

    onnx_path = tmp_path / "model.onnx"
    _ok(runner.invoke(cli, ["export", str(run), "-o", str(onnx_path)]))
    seq2seq = family == "attention"
    exported = [tmp_path / "model.encoder.onnx", tmp_path / "model.decoder_step.onnx"] if seq2seq else [onnx_path]
    assert all(p.is_file() for p in exported)

    import edgelstm.runtime as rt

    for mode in modes:
        q = tmp_path / f"model.{mode}.onnx"
        _ok(runner.invoke(cli, ["quantize", str(exported[0] if not seq2seq else onnx_path), "-o", str(q),
                                "--mode", mode, *(["--force-int8"] if mode != "fp16" else [])]))
    if seq2seq:
        m = rt.load(onnx_path)
        out = m.generate(["23 Nov 2026", "01 Jan 1999"], max_len=12)
        # An untrained model decodes garbage, but decodes: one bounded token list per source.
        assert len(out.tokens) == 2 and all(len(t) <= 12 for t in out.tokens) and len(out.texts) == 2
        q = rt.load(tmp_path / "model.int8-dynamic.onnx", threads=1)
        assert q.manifest.precision == "int8-dynamic"
        # each quantized graph names its quantized companion, not the fp32 one
        assert all(v.startswith("model.int8-dynamic.") for v in q.manifest.companions.values())
        assert len(q.generate(["23 Nov 2026"], max_len=12).tokens) == 1
        return

    model = rt.load(onnx_path, device="cpu")
    assert model.manifest.family == family and model.manifest.precision == "fp32"
    x = np.random.default_rng(0).standard_normal((3, 7, model.manifest.inputs[0].shape[-1])).astype(np.float32)
    whole = model.run(x)
    stream = model.stream(batch=3)
    for t in range(x.shape[1]):
        last = stream.step(x[:, t])
    out_name = model.manifest.outputs[0].name
    got = last.outputs[out_name] if whole.outputs[out_name].ndim == 2 else None
    if got is not None:
        # fp32 both ways; the same kernels in a different call pattern: float32 rounding only.
        np.testing.assert_allclose(got, whole.outputs[out_name], atol=1e-5)

    for mode in modes:
        qm = rt.load(tmp_path / f"model.{mode}.onnx", device="cpu", threads=1)
        assert qm.manifest.precision == mode
        assert qm.run(x).outputs[out_name].shape == whole.outputs[out_name].shape

    report = tmp_path / "verify.json"
    r = runner.invoke(cli, ["verify", str(onnx_path), "--reference", str(run), "--steps", "200",
                            "--against", str(tmp_path / "model.int8-dynamic.onnx"), "--json", str(report), "-q"])
    _ok(r)
    assert json.loads(report.read_text())["passed"] is True


def test_export_refuses_existing_output_without_overwrite(tmp_path, runner):
    run = tmp_path / "run"
    _ok(runner.invoke(cli, ["train", "--family", "gru", "--dataset", "sine", "--hidden", "4", "--epochs", "1",
                            "--quiet", "--out", str(run)]))
    out = tmp_path / "m.onnx"
    _ok(runner.invoke(cli, ["export", str(run), "-o", str(out)]))
    before = out.read_bytes()
    r = runner.invoke(cli, ["export", str(run), "-o", str(out)])
    assert isinstance(r.exception, UsageError) and "-o | output exists" in str(r.exception)
    assert out.read_bytes() == before  # the first export is untouched
    _ok(runner.invoke(cli, ["export", str(run), "-o", str(out), "--overwrite"]))


@pytest.mark.parametrize("hidden, int8_pays", [(8, False), (256, True)], ids=["small-keeps-fp32", "int8-pays"])
def test_demo_runs_every_stage_and_fills_the_table(tmp_path, monkeypatch, hidden, int8_pays):
    """The demo's later stages (export, quantize, metric through the runtime, verify, bench) fill
    their columns; the runtime's fp32 metric equals PyTorch's on the same test split. The int8
    columns are filled where int8 pays (an LSTM of 4*256*(8+256) >= 2^18 weights); a small model
    keeps fp32 and the row says so."""
    from edgelstm import demo

    monkeypatch.setattr(demo, "JOBS", [demo.DemoJob("lstm", "digits", "main", dict(hidden_size=hidden, epochs=1))])
    monkeypatch.setattr(demo, "QUICK", dict(demo.QUICK, max_train=64, hidden_size=hidden))
    ctx = demo.run_demo(tmp_path, quick=True, progress=False, echo=lambda s: None)
    row = ctx.rows[0]
    assert not [k for k in row if k.startswith("error:")], row
    int8_keys = ("int8", "int8_kb", "int8_step_us", "int8_sqnr_db")
    for key in ("onnx_fp32", "fp32_kb", "fp32_step_us", "torch_step_us") + (int8_keys if int8_pays else ()):
        assert key in row, key
    if not int8_pays:
        assert row["int8_decision"] == "fp32 kept: int8 does not pay at this size"
        assert not [k for k in int8_keys if k in row]
    assert row["verify"] == "pass" and Path(row["verify_report"]).is_file()
    # Same weights, same test split: fp32 ONNX agrees with PyTorch to float rounding, so an
    # accuracy over ~180 digits can only differ if a near-tie flips (at most one sample here).
    assert abs(row["onnx_fp32"] - row["test"]) <= 1 / 150
    assert (tmp_path / "report.md").read_text().count("| lstm | digits |") == 1


def test_overwrite_never_replaces_a_directory_that_is_not_a_run(tmp_path, runner):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "keep.py").write_text("x = 1\n")
    r = runner.invoke(cli, ["train", "--family", "gru", "--dataset", "sine", "--hidden", "4", "--epochs", "1",
                            "--quiet", "--overwrite", "--out", str(proj)])
    assert r.exit_code != 0
    assert "is a non-empty directory that is not a run directory" in str(r.exception)
    assert (proj / "src" / "keep.py").read_text() == "x = 1\n"
    # a real run directory is still replaced with --overwrite
    run = tmp_path / "run"
    for _ in range(2):
        _ok(runner.invoke(cli, ["train", "--family", "gru", "--dataset", "sine", "--hidden", "4", "--epochs", "1",
                                "--quiet", "--overwrite", "--out", str(run)]))


def test_seq2seq_quantize_writes_the_pair_or_nothing(tmp_path, runner):
    run = tmp_path / "run"
    _ok(runner.invoke(cli, ["train", "--family", "attention", "--dataset", "dates", "--hidden", "4", "--epochs", "1",
                            "--quiet", "--threads", "1", "--out", str(run)]))
    _ok(runner.invoke(cli, ["export", str(run), "-o", str(tmp_path / "m.onnx")]))
    # the run's source sequences calibrate the encoder; the decoder step gets random tokens/states
    _ok(runner.invoke(cli, ["quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "q.onnx"), "--mode",
                            "int8-dynamic", "--force-int8", "--calibration", str(run)]))
    assert (tmp_path / "q.encoder.onnx").is_file() and (tmp_path / "q.decoder_step.onnx").is_file()
    r = runner.invoke(cli, ["quantize", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "s.onnx"), "--mode",
                            "int8-static", "--calibration", str(run)])
    assert r.exit_code != 0 and "int8-static is not available for a seq2seq pair" in str(r.exception)
    assert not list(tmp_path.glob("s.*")) and not list(tmp_path.glob(".s.onnx.*"))


@pytest.mark.parametrize("x,match", [  # for a model with 3 features per step
    (np.zeros((4, 8, 5), np.float32), r"size of axis 2 does not match the graph input"),
    (np.full((4, 8, 3), np.nan, np.float32), r"calibration data holds NaN or Inf"),
    (np.zeros((4, 8), np.float32), r"array rank does not match the graph input; expected 3-D"),
], ids=["features", "nan", "rank"])
def test_bad_calibration_data_is_refused_before_quantizing(tmp_path, x, match):
    from tiny import make_tiny

    from edgelstm.errors import DataError
    from edgelstm.exporters import export_model
    from edgelstm.exporters.quantize import quantize

    m = tmp_path / "m.onnx"
    export_model(make_tiny("lstm-1x4"), m)
    np.savez(tmp_path / "c.npz", x=x)
    with pytest.raises(DataError, match=match):
        quantize(m, tmp_path / "q.onnx", "int8-static", calibration=tmp_path / "c.npz")
    assert not (tmp_path / "q.onnx").exists()
