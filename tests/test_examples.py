"""The example apps in edgelstm/examples/ run on a device install: torch and onnx are blocked in their process.

Each app runs as ``python -c BLOCK + runpy.run_module("edgelstm.examples.APP")`` (what
``python -m edgelstm.examples.APP`` does) on tiny models exported here, and its
output is checked against ``runtime.load(...).run`` on the whole sequence.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm import runtime
from edgelstm.checkpoint import RunConfig
from edgelstm.errors import InputError
from edgelstm.exporters import export_model

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TINY, make_tiny  # noqa: E402

LABELS = ["up", "down", "left"]

# Stepping frame by frame vs one whole-sequence run executes the same fp32 recurrence in a
# different call pattern: they agree to float32 rounding, O(T * eps32) over T steps; the app prints
# 9 significant digits, which round-trips float32 exactly.
STEP_TOL = 1e-5

# A meta-path finder that refuses torch/onnx, then the app module (or a script path) as __main__.
RUNNER = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript'):
            raise ImportError('blocked import: ' + name)
sys.meta_path.insert(0, Block())
app = sys.argv[1]
sys.argv = sys.argv[1:]
if app.endswith('.py'):
    runpy.run_path(app, run_name='__main__')
else:
    runpy.run_module(app, run_name='__main__', alter_sys=True)
"""


def run_app(app: str | Path, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``app``: an example's file name (run as ``python -m edgelstm.examples.NAME``) or a script path."""
    target = str(app) if isinstance(app, Path) else f"edgelstm.examples.{Path(app).stem}"
    return subprocess.run([sys.executable, "-c", RUNNER, target, *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("examples")
    clf = make_tiny("lstm-1x4")
    run = RunConfig.for_model(TINY["lstm-1x4"], labels=LABELS,
                              normalization={"mean": [0.1, -0.2, 0.3], "std": [1.5, 0.5, 2.0]})
    export_model(clf, d / "clf.onnx", run=run)
    export_model(make_tiny("gru-1x6-forecast"), d / "forecast.onnx")
    return {"clf": d / "clf.onnx", "forecast": d / "forecast.onnx"}


def frames(time=12, features=3, seed=3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((time, features)).astype(np.float32)


def as_lines(x: np.ndarray, sep: str = ", ") -> str:
    return "".join(sep.join(f"{v:.9g}" for v in row) + "\n" for row in x)


def parse(stdout: str) -> list[tuple[int, str, float]]:
    out = []
    for line in stdout.splitlines():
        n, pred, us = line.split("\t")
        out.append((int(n), pred, float(us)))
    return out


# ------------------------------------------------------------------------------ stream_device.py
def test_stream_labels_one_line_per_frame_and_final_equals_run(models):
    x = frames()
    # a comment and a blank line are skipped; space- and comma-separated lines both parse
    text = "# sensor log\n\n" + as_lines(x[:6], sep=" ") + as_lines(x[6:])
    r = run_app("stream_device.py", models["clf"], stdin=text)
    assert r.returncode == 0, r.stderr
    rows = parse(r.stdout)
    assert [n for n, _, _ in rows] == list(range(1, len(x) + 1))
    assert all(label in LABELS for _, label, _ in rows)
    assert all(us > 0 for _, _, us in rows)
    model = runtime.load(models["clf"], device="cpu")
    # the label after k frames is the whole-sequence label of the first k frames
    for k in (1, 5, len(x)):
        assert rows[k - 1][1] == model.run(x[None, :k]).labels[0]


def test_stream_values_without_labels_match_run(models, tmp_path):
    x = frames(time=9)
    path = tmp_path / "frames.csv"
    path.write_text(as_lines(x))
    r = run_app("stream_device.py", models["forecast"], "--input", path, "--threads", 1)
    assert r.returncode == 0, r.stderr
    rows = parse(r.stdout)
    assert len(rows) == len(x)
    got = np.array([[float(v) for v in pred.split(",")] for _, pred, _ in rows])
    want = runtime.load(models["forecast"], device="cpu").run(x[None])["y"][0]  # [time, outputs]
    np.testing.assert_allclose(got, want, rtol=STEP_TOL, atol=STEP_TOL)


@pytest.mark.parametrize("name", ["clf", "forecast"], ids=["labels", "values"])
def test_state_file_restart_continues_identically(models, tmp_path, name):
    x = frames()
    whole = run_app("stream_device.py", models[name], stdin=as_lines(x))
    assert whole.returncode == 0, whole.stderr
    state = tmp_path / "state.npz"
    first = run_app("stream_device.py", models[name], "--state-file", state, stdin=as_lines(x[:5]))
    assert first.returncode == 0, first.stderr
    assert state.exists()
    second = run_app("stream_device.py", models[name], "--state-file", state, stdin=as_lines(x[5:]))
    assert second.returncode == 0, second.stderr
    restarted = [p for _, p, _ in parse(first.stdout) + parse(second.stdout)]
    expected = [p for _, p, _ in parse(whole.stdout)]
    if name == "clf":
        assert restarted == expected
    else:  # the same fp32 steps in the same order: equal to float32 rounding
        np.testing.assert_allclose([[float(v) for v in p.split(",")] for p in restarted],
                                   [[float(v) for v in p.split(",")] for p in expected], rtol=STEP_TOL, atol=STEP_TOL)


def test_stream_every_nth_frame(models):
    r = run_app("stream_device.py", models["clf"], "--every", 4, stdin=as_lines(frames(time=10)))
    assert r.returncode == 0, r.stderr
    assert [n for n, _, _ in parse(r.stdout)] == [4, 8]


@pytest.mark.parametrize("bad,match", [
    ("0.1, abc, 0.3", r"stdin line 3 \| not a number; expected comma- or space-separated floats, got 'abc'"),
    ("0.1 0.2", r"stdin line 3 \| wrong number of values in the frame; expected 3, got 2"),
    ("nan 0.2 0.3", r"stdin line 3 \(frame\) \| .*NaN"),
], ids=["not-a-number", "wrong-count", "nan"])
def test_stream_bad_line_one_line_error(models, bad, match):
    x = frames(time=3)
    r = run_app("stream_device.py", models["clf"], stdin=as_lines(x[:2]) + bad + "\n" + as_lines(x[2:]))
    assert r.returncode == InputError.exit_code
    assert len(parse(r.stdout)) == 2  # the good frames before the bad line were answered
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert re.search(match, lines[0]), lines[0]


def test_stream_missing_input_file(models, tmp_path):
    r = run_app("stream_device.py", models["clf"], "--input", tmp_path / "nope.txt")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.txt'} | cannot open the frames file; "
                                             "expected a readable text file, got No such file or directory"]


# ------------------------------------------------------------------------------ classify_sequences.py
def ragged(n=5, time=8, features=3, seed=4):
    x = np.random.default_rng(seed).standard_normal((n, time, features)).astype(np.float32)
    lengths = np.array([time, 3, 6, 1, 5], dtype=np.int32)[:n]
    x[np.arange(time)[None, :] >= lengths[:, None]] = 0.0  # padding
    return x, lengths


def softmax_max(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).max(-1)


@pytest.mark.parametrize("fmt,batch", [("npz", 1), ("npz", 4), ("csv", 2)], ids=["npz-batch1", "npz-batch4", "csv"])
def test_classifier_labels_equal_run(models, tmp_path, fmt, batch):
    x, lengths = ragged()
    if fmt == "npz":
        data = tmp_path / "seqs.npz"
        np.savez(data, x=x, lengths=lengths)
    else:  # one row per sequence, only its valid steps
        data = tmp_path / "seqs.csv"
        data.write_text("".join(",".join(f"{v:.9g}" for v in x[i, :n].ravel()) + "\n" for i, n in enumerate(lengths)))
    r = run_app("classify_sequences.py", models["clf"], data, "--batch", batch)
    assert r.returncode == 0, r.stderr
    want = runtime.load(models["clf"], device="cpu").run(x, lengths=lengths)
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [int(i) for i, *_ in rows] == list(range(len(x)))
    assert [label for _, label, _, _ in rows] == want.labels
    # probabilities are printed to 4 decimals
    np.testing.assert_allclose([float(p) for _, _, p, _ in rows], softmax_max(want["logits"]), atol=5e-5)
    assert all(float(us) > 0 for *_, us in rows)
    assert f"{len(x)} sequences in" in r.stderr


def test_classifier_refuses_a_non_classifier(models, tmp_path):
    data = tmp_path / "seqs.npz"
    np.savez(data, x=ragged()[0])
    r = run_app("classify_sequences.py", models["forecast"], data)
    assert r.returncode == 6
    assert r.stderr.strip().splitlines() == [f"error: {models['forecast']} | not a sequence classifier; expected "
                                             "task classify with logits [batch, classes], got task forecast"]


def test_classifier_csv_row_not_multiple_of_features(models, tmp_path):
    data = tmp_path / "seqs.csv"
    data.write_text("1,2,3,4,5,6\n1,2,3,4\n")
    r = run_app("classify_sequences.py", models["clf"], data)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [f"error: {data} line 2 | value count is not a multiple of --features 3; "
                                             "expected T*3 numbers, got 4"]


def test_runner_blocks_torch_and_onnx(tmp_path):
    """The apps' passing runs above prove something only if the runner really refuses torch/onnx."""
    for mod in ("torch", "onnx"):
        script = tmp_path / f"imports_{mod}.py"
        script.write_text(f"import {mod}\n")
        r = run_app(script)  # a Path runs as a script
        assert r.returncode != 0
        assert f"ImportError: blocked import: {mod}" in r.stderr
