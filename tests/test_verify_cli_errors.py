"""`edgelstm verify`: 0 pass, 1 fail; anything that kept it from judging exits with its error
class's code from the README's table (2 usage, 8 model file...), in one line."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgelstm.cli import cli


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify-cli")
    r = CliRunner()
    for fam, ds in (("lstm", "digits"), ("gru", "sine")):
        res = r.invoke(cli, ["train", "--family", fam, "--dataset", ds, "--hidden", "4", "--epochs", "1", "--quiet",
                             "--threads", "1", "--out", str(d / fam)])
        assert res.exit_code == 0, res.output
    res = r.invoke(cli, ["export", str(d / "lstm"), "-o", str(d / "lstm.onnx")])
    assert res.exit_code == 0, res.output
    return d


def _main(*args):
    """The real entry point (exit codes and one-line messages), in a subprocess."""
    r = subprocess.run([sys.executable, "-m", "edgelstm", *args], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("args,match", [
    (["--reference", "{d}/gru"], r"does not fit this model; expected 8 features per step"),
    (["--device", "cpu,nosuch"], r"unknown device"),
    (["--json", "/dev/null/x.json"], r"error: /dev/null"),
], ids=["foreign-run", "unknown-device", "unwritable-json"])
def test_verify_usage_problems_exit_2_in_one_line(runs, args, match):
    code, out, err = _main("verify", str(runs / "lstm.onnx"), "--steps", "10", "-q",
                           *[a.format(d=runs) for a in args])
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert pytest.importorskip("re").search(match, err), err


def test_verify_missing_model_exits_8(runs):
    code, _, err = _main("verify", str(runs / "nope.onnx"), "-q")
    assert code == 8 and "model file not found" in err


def test_plot_without_drift_keeps_the_verdict(runs, tmp_path):
    png = tmp_path / "p.png"
    code, out, err = _main("verify", str(runs / "lstm.onnx"), "--steps", "0", "--plot", str(png), "-q")
    assert code == 0 and "PASSED" in out and "no PNG written" in err and not png.exists()


def test_seq2seq_pair_renamed_after_export_still_verifies(tmp_path):
    """The manifest names the companion file; a pair copied under another stem falls back to the
    naming convention, as edgelstm.runtime.load does."""
    import shutil

    r = CliRunner()
    res = r.invoke(cli, ["train", "--family", "attention", "--dataset", "dates", "--hidden", "4", "--epochs", "1",
                         "--quiet", "--threads", "1", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert r.invoke(cli, ["export", str(tmp_path / "run"), "-o", str(tmp_path / "m.onnx")]).exit_code == 0
    for role in ("encoder", "decoder_step"):
        shutil.copy(tmp_path / f"m.{role}.onnx", tmp_path / f"renamed.{role}.onnx")
        (tmp_path / f"m.{role}.onnx").unlink()
    code, out, err = _main("verify", str(tmp_path / "renamed.encoder.onnx"), "--oracles", "numpy", "--steps", "0", "-q")
    assert code == 0 and "PASSED" in out, (out, err)


def test_bench_refuses_a_device_list(runs):
    code, _, err = _main("bench", str(runs / "lstm.onnx"), "--device", "cpu,cuda", "--runs", "2", "--quiet")
    assert code == 2 and "bench times one device per run" in err and "Traceback" not in err
