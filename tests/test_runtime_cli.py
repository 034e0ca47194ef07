"""``edgelstm run``: inputs, outputs, streaming, seq2seq and error exit codes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm import runtime
from edgelstm.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, Seq2SeqSpec, build_recurrent, save, save_seq2seq  # noqa: E402
from clitools import run_cli  # noqa: E402

LABELS = ["left", "right", "stop"]


_cli = run_cli


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save(build_recurrent(RecurrentSpec(layers=2, labels=LABELS)), tmp_path_factory.mktemp("cli") / "kws.onnx")


def test_run_npz_writes_labels_json_and_npz(model_path, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x, lengths=np.array([6, 3], np.int32))
    code, out, err = _cli(["run", str(model_path), "--input", str(tmp_path / "in.npz"), "--device", "cpu",
                           "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.npz")], capsys)
    assert code == 0, err
    want = runtime.load(model_path).run(x, lengths=[6, 3])
    assert f"sequence 0: {want.labels[0]}" in out and f"sequence 1: {want.labels[1]}" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["labels"] == want.labels and report["providers"] == ["CPUExecutionProvider"]
    np.testing.assert_array_equal(np.load(tmp_path / "o.npz")["logits"], want["logits"])


def test_run_csv_streaming_matches_whole_run(model_path, tmp_path, capsys):
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    lines = ["f0,f1,f2,f3"] + [",".join(f"{v:.9g}" for v in row) for row in x]
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    code, out, err = _cli(["run", str(model_path), "--input", str(tmp_path / "in.csv"), "--stream",
                           "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stream"]["steps"] == 5 and "median step" in out
    per_step = np.asarray(report["outputs"]["logits"])  # [batch, time, classes]
    whole = runtime.load(model_path).run(x[None])
    # streaming vs whole sequence: same fp32 maths, float32 rounding only
    np.testing.assert_allclose(per_step[:, -1], whole["logits"], atol=1e-5)
    assert report["labels"] == whole.labels


def test_run_seq2seq_text(tmp_path, capsys):
    save_seq2seq(Seq2SeqSpec(), tmp_path, stem="tr")
    code, out, err = _cli(["run", str(tmp_path / "tr.onnx"), "--text", "abc", "--max-len", "4"], capsys)
    assert code == 0, err
    want = runtime.load(tmp_path / "tr.onnx").generate("abc", max_len=4).text
    assert out.splitlines()[0] == f"abc\t{want}"


@pytest.mark.parametrize("extra, match", [
    (["--stream"], "--stream | does not apply to a seq2seq model"),
    (["--out", "o.npz"], "--out | does not apply to a seq2seq model"),
], ids=["stream", "out"])
def test_run_seq2seq_refuses_options_it_would_ignore(tmp_path, capsys, extra, match):
    save_seq2seq(Seq2SeqSpec(), tmp_path, stem="tr")
    code, _, err = _cli(["run", str(tmp_path / "tr.onnx"), "--text", "abc", *extra], capsys)
    assert code == 2 and match in err and "Traceback" not in err


def test_run_refuses_max_len_for_a_sequence_model(model_path, tmp_path, capsys):
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.zeros((1, 3, 4), np.float32))
    code, _, err = _cli(["run", str(model_path), "--input", str(npz), "--max-len", "5"], capsys)
    assert code == 2 and "--max-len | only applies to a seq2seq model" in err


@pytest.mark.parametrize("args, code, match", [
    (["MISSING.onnx", "--input", "IN.npz"], 8, r"MISSING.onnx \| model file not found"),
    (["MODEL", "--input", "BAD.csv"], 3, r"BAD.csv:3 \| column 2 is not a number"),
    (["MODEL", "--input", "WIDE.npz"], 9, r"x \| wrong feature size; expected 4, got 5"),
    (["MODEL", "--input", "IN.npz", "--device", "cuda", "--no-fallback"], 10, r"CUDAExecutionProvider is not available"),
    (["MODEL", "--input", "IN.npz", "--device", "tpu"], 2, r"device \| unknown device"),
    (["MODEL"], 2, r"--input \| missing input data"),
], ids=["missing-model", "bad-csv", "wrong-features", "no-fallback", "unknown-device", "no-input"])
def test_run_errors_map_to_exit_codes(model_path, tmp_path, capsys, args, code, match):
    import onnxruntime as ort

    if "cuda" in args and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    np.savez(tmp_path / "IN.npz", x=np.zeros((1, 3, 4), np.float32))
    np.savez(tmp_path / "WIDE.npz", x=np.zeros((1, 3, 5), np.float32))
    (tmp_path / "BAD.csv").write_text("a,b,c,d\n1,2,3,4\n1,oops,3,4\n")
    subst = {"MODEL": str(model_path)}
    argv = ["run"] + [subst.get(a, str(tmp_path / a) if "." in a and not a.startswith("-") else a) for a in args]
    got, out, err = _cli(argv, capsys)
    assert got == code, err
    import re
    assert re.search(match, err), err
