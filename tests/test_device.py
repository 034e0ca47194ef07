"""The device install: the built wheel in a fresh virtual environment without torch and onnx.

One session fixture builds the wheel (``pip wheel --no-deps``, as ``make wheel`` does) and installs
it with numpy, onnxruntime and click into a new venv. The dependencies come from a wheel cache under
``.cache/device-wheels`` (ignored by git): filled once with ``pip download`` (the configured index,
then pip's cache), installed from with ``--no-index`` afterwards, so a rerun is offline and takes
seconds. Every command then runs from that venv's ``edgelstm`` script, outside the repository (so
the source tree cannot shadow the installed package), on a tiny model exported here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm import runtime
from edgelstm.checkpoint import RunConfig
from edgelstm.exporters import export_model

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_extras import NEEDS  # noqa: E402
from tiny import TINY, make_tiny  # noqa: E402

pytestmark = pytest.mark.device

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "device-wheels"
LABELS = ["up", "down", "left"]


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="session")
def device(tmp_path_factory) -> Path:
    """A venv holding the built wheel + numpy, onnxruntime, click (and their own dependencies) only."""
    d = tmp_path_factory.mktemp("device")
    built = _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(d / "dist"), str(ROOT))
    assert built.returncode == 0, built.stderr
    (wheel,) = (d / "dist").glob("edgelstm-*.whl")
    venv = d / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = ["--python", str(py), "install", "-q", "--no-compile", "--no-index", "--find-links", str(CACHE),
               "-c", str(ROOT / "constraints.txt"), str(wheel)]
    r = _pip(*install)
    if r.returncode != 0:  # first run on this checkout: fill the cache, then install offline
        dl = _pip("download", "-q", "-d", str(CACHE), "-c", str(ROOT / "constraints.txt"), str(wheel))
        assert dl.returncode == 0, dl.stderr[-2000:]
        r = _pip(*install)
    assert r.returncode == 0, r.stderr[-2000:]
    return venv


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny labelled LSTM classifier exported by this (full) venv, and data for it."""
    import torch

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("device_files")
    run = RunConfig.for_model(TINY["lstm-1x4"], labels=LABELS)
    export_model(make_tiny("lstm-1x4"), d / "clf.onnx", run=run)
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(np.float32)
    np.savez(d / "seqs.npz", x=x, lengths=np.full(4, 6, np.int64))
    (d / "frames.txt").write_text("".join(", ".join(f"{v:.9g}" for v in row) + "\n" for row in x[0]))
    return {"dir": d, "model": d / "clf.onnx", "seqs": d / "seqs.npz", "frames": d / "frames.txt", "x": x}


def on_device(venv: Path, cwd: Path, *args, module: str | None = None, stdin: str | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [str(venv / "bin" / "python"), "-m", module] if module else [str(venv / "bin" / "edgelstm")]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=env, input=stdin)


def test_device_venv_has_no_torch_or_onnx(device, files):
    r = subprocess.run([str(device / "bin" / "python"), "-c",
                        "import importlib.util as u, edgelstm.runtime, edgelstm.examples;"
                        "print([u.find_spec(m) is None for m in ('torch', 'onnx')], edgelstm.runtime.__file__)"],
                       capture_output=True, text=True, cwd=files["dir"], timeout=60)
    assert r.returncode == 0, r.stderr
    flags, path = r.stdout.split(" ", 1)
    assert flags == "[True," and str(device) in path


def test_help_and_extras_on_device(device, files):
    r = on_device(device, files["dir"], "--help")
    assert r.returncode == 0 and "(needs edgelstm[export], MISSING)" in r.stdout, r.stderr
    for argv, line in NEEDS:  # the device lacks all of torch, onnx, safetensors, matplotlib
        got = on_device(device, files["dir"], *argv)
        assert (got.returncode, got.stderr.splitlines(), got.stdout) == (6, [line], ""), argv


def test_env_on_device(device, files):
    r = on_device(device, files["dir"], "env", "--json", "-")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["schema"] == "edgelstm.env/1" and env["packages"]["torch"] is None
    assert not env["extras"]["export"]["installed"] and env["commands"]["run"]["ready"]


def test_run_stream_inspect_bench_on_device(device, files):
    want = runtime.load(files["model"]).run(files["x"])
    r = on_device(device, files["dir"], "run", files["model"], "--input", files["seqs"], "--json", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["schema"] == "edgelstm.run/1" and rep["labels"] == want.labels
    assert sorted(rep["state"]) == ["c_out", "h_out"]
    r = on_device(device, files["dir"], "run", files["model"], "--input", files["seqs"], "--stream")
    assert r.returncode == 0 and "streamed 6 steps x batch 4" in r.stdout, r.stderr
    r = on_device(device, files["dir"], "inspect", files["model"], "--json", "-")
    assert r.returncode == 0 and json.loads(r.stdout)["schema"] == "edgelstm.inspect/1", r.stderr
    r = on_device(device, files["dir"], "bench", files["model"], "--runs", "3", "--warmup", "1", "--no-floor",
                  "--json", "b.json")
    assert r.returncode == 0, r.stderr
    assert json.loads((files["dir"] / "b.json").read_text())["schema"] == "edgelstm.bench/1"


def test_example_apps_on_device(device, files):
    want = runtime.load(files["model"]).run(files["x"][:1])
    r = on_device(device, files["dir"], files["model"], "--input", files["frames"],
                  module="edgelstm.examples.stream_device")
    assert r.returncode == 0, r.stderr
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert len(rows) == 6 and rows[-1][1] == want.labels[0]
    r = on_device(device, files["dir"], files["model"], files["seqs"], module="edgelstm.examples.classify_sequences")
    assert r.returncode == 0, r.stderr
    assert [ln.split("\t")[1] for ln in r.stdout.splitlines()] == runtime.load(files["model"]).run(files["x"]).labels
