"""A command whose extra is missing ends in one line naming the extra and exit code 6, before any
work; ``--help`` marks those commands; ``edgelstm env`` tells what is installed.

Each case runs the CLI in a subprocess whose meta-path finder raises ModuleNotFoundError for the
blocked packages, as an install without them would.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgelstm.extras import COMMAND_EXTRAS, OPTION_EXTRAS

RUNNER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(','))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from edgelstm.cli import main
main(sys.argv[2:])
"""
DEVICE = "torch,onnx,onnxscript,safetensors,matplotlib,tqdm"  # what a device install lacks


def cli(blocked: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, blocked, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _msg(what: str, extra: str, missing: str) -> str:
    return f'error: {what} needs edgelstm[{extra}]: pip install "edgelstm[{extra}]" (missing: {missing})'


# (argv, the one stderr line). Paths need not exist: the extra is checked before anything is read.
NEEDS = [
    (["models"], _msg("models", "train", "safetensors, torch")),
    (["train", "--family", "lstm", "--dataset", "digits", "--out", "r"], _msg("train", "train", "safetensors, torch")),
    (["demo", "--quick", "--out", "d"], _msg("demo", "export,train", "onnx, safetensors, torch")),
    (["export", "runs/x", "-o", "m.onnx"], _msg("export", "export", "onnx, safetensors, torch")),
    (["quantize", "m.onnx", "-o", "q.onnx", "--mode", "int8-dynamic"], _msg("quantize", "quantize", "onnx")),
    (["verify", "m.onnx"], _msg("verify", "verify", "onnx")),
    (["bench", "m.onnx", "--torch", "runs/x"], _msg("bench --torch", "export", "onnx, safetensors, torch")),
    (["bench", "m.onnx", "--plot", "p.png"], _msg("bench --plot", "plot", "matplotlib")),
    (["bench-report", "b.json", "--plot", "p.png"], _msg("bench-report --plot", "plot", "matplotlib")),
]


@pytest.mark.parametrize("argv,line", NEEDS, ids=[" ".join(a[:1] + [o for o in a if o in ("--torch", "--plot")])
                                                   for a, _ in NEEDS])
def test_missing_extra_is_one_line_and_exit_6(argv, line, tmp_path):
    r = cli(DEVICE, *argv, cwd=tmp_path)
    assert (r.returncode, r.stderr.splitlines(), r.stdout) == (6, [line], "")
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_every_command_and_option_extra_is_covered():
    """A new command or option with an extra must get a case above."""
    covered = {a[0] for a, _ in NEEDS}
    assert {c for c, extras in COMMAND_EXTRAS.items() if extras} <= covered
    options = {(a[0], o) for a, _ in NEEDS for o in a if o.startswith("--")}
    assert {k for k in OPTION_EXTRAS if k[0] != "verify"} <= options


@pytest.mark.parametrize("option", ["--reference", "--model"])
def test_verify_options_needing_torch_checked_first(option, tmp_path):
    r = cli("torch", "verify", "m.onnx", option, "x", cwd=tmp_path)
    assert (r.returncode, r.stderr.splitlines()) == (6, [_msg(f"verify {option}", "export", "torch")])


def test_help_marks_commands_needing_extras():
    r = cli(DEVICE, "--help")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("  ") and ln.split()}
    for name, extras in COMMAND_EXTRAS.items():
        mark = f"(needs edgelstm[{','.join(extras)}], MISSING)"
        assert (mark in lines[name]) == bool(extras), lines[name]
    # a command's own --help still works without its extra
    r = cli(DEVICE, "train", "--help")
    assert r.returncode == 0 and "--family" in r.stdout


def test_env_reports_missing_extras_and_what_commands_need():
    r = cli("torch,onnx", "env", "--json", "-")
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["schema"] == "edgelstm.env/1"
    assert env["extras"]["export"]["missing"] == ["torch", "onnx"] and env["extras"]["plot"]["installed"]
    assert env["commands"]["run"] == {"needs": [], "ready": True, "options": {}}
    assert env["commands"]["quantize"]["ready"] is False
    assert env["commands"]["bench"]["options"] == {"--torch": "export", "--plot": "plot"}
    assert "CPUExecutionProvider" in env["onnxruntime"]["providers"]
    assert {"sme", "avx2"} & set(env["cpu_features"])  # one of the two architectures' tables
    text = cli("torch,onnx", "env")
    assert text.returncode == 0 and "quantize      MISSING needs [quantize]" in text.stdout


def test_runtime_commands_work_without_extras(tmp_path):
    r = cli(DEVICE, "datasets", "digits", "--split", "test", "--limit", "3", "-o", tmp_path / "d.npz")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "d.npz").exists()
