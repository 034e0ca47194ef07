"""One ``--json`` convention: every command's ``--json -`` writes exactly one JSON document on stdout
carrying its schema id, and docs/SCHEMAS.md documents each id; a closed stdout ends quietly.

The commands run in order on a tiny user data set (train, export, quantize, verify, run...), each
using what the previous one wrote, in-process through the CLI entry point.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm.cli import COMMANDS, main

DOCS = Path(__file__).resolve().parent.parent / "docs" / "SCHEMAS.md"


def json_of(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as e:
        main([*args, "--json", "-"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    return json.loads(out.out)  # stdout is the document alone: the human lines went to stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("json")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5, 3)).astype(np.float32)
    np.savez(d / "train.npz", x=x, y=(x[:, :, 0].sum(1) > 0).astype(np.int64))
    return d


# (command line, schema id); paths are relative to the work directory, in run order
STEPS = [
    (["env"], "edgelstm.env/1"),
    (["models"], "edgelstm.models/1"),
    (["datasets"], "edgelstm.datasets/1"),
    (["datasets", "npz:{d}/train.npz", "--limit", "4", "-o", "{d}/data.npz"], "edgelstm.dataset/1"),
    (["train", "--family", "lstm", "--dataset", "npz:{d}/train.npz", "--hidden", "4", "--epochs", "1",
      "--threads", "1", "--quiet", "--out", "{d}/run"], "edgelstm.train/1"),
    (["export", "{d}/run", "-o", "{d}/m.onnx"], "edgelstm.export/1"),
    (["quantize", "{d}/m.onnx", "-o", "{d}/m.int8.onnx", "--mode", "int8-dynamic", "--samples", "8"],
     "edgelstm.quantize/1"),
    (["verify", "{d}/m.onnx", "--reference", "{d}/run", "--steps", "20", "--data-limit", "8",
      "--checks", "outputs,streaming", "--oracles", ""], "edgelstm.verify/1"),
    (["run", "{d}/m.onnx", "--input", "{d}/data.npz"], "edgelstm.run/1"),
    (["inspect", "{d}/m.int8.onnx"], "edgelstm.inspect/1"),
    (["bench", "{d}/m.onnx", "--runs", "2", "--warmup", "1", "--no-floor", "--quiet"], "edgelstm.bench/1"),
]


def test_every_command_writes_its_schema(work, capsys):
    docs = set(re.findall(r"^## (edgelstm\.[\w-]+/\d+)$", DOCS.read_text(encoding="utf-8"), re.M))
    seen = {}
    for args, schema in STEPS:
        doc = json_of([a.format(d=work) for a in args], capsys)
        assert doc["schema"] == schema and next(iter(doc)) == "schema", args
        assert schema in docs, f"{schema} is not documented in docs/SCHEMAS.md"
        seen[args[0]] = doc
        if args[0] == "bench":
            (work / "bench.json").write_text(json.dumps(doc))
    report = json_of(["bench-report", str(work / "bench.json")], capsys)
    assert report["schema"] == "edgelstm.bench-report/1" and len(report["rows"]) == len(seen["bench"]["results"])
    # demo (minutes; its --quick run is in test_cli_train) is the one command not run here
    assert set(COMMANDS) - set(seen) == {"bench-report", "demo"}
    assert {"edgelstm.bench-report/1", "edgelstm.demo/1"} <= docs
    # run lists the final state under the graph's state output names
    assert sorted(seen["run"]["state"]) == ["c_out", "h_out"] and "h_in" not in seen["run"]["outputs"]
    assert seen["datasets"]["written"]["arrays"]["x"]["shape"] == [4, 5, 3]


def test_closed_stdout_ends_quietly_and_files_are_still_written(tmp_path):
    from edgelstm.exporters import export_model

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import make_tiny

    export_model(make_tiny("lstm-1x4"), tmp_path / "m.onnx")
    # 3,000 sequences: the JSON (about 1 MB) outgrows the pipe buffer, so `head -1` closes the pipe mid-write
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((3000, 2, 3)).astype(np.float32))
    exe = str(Path(sys.executable).parent / "edgelstm")
    for json_arg in ("-", str(tmp_path / "r.json")):
        r = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f'"{exe}" run "{tmp_path}/m.onnx" --input "{tmp_path}/d.npz" --json "{json_arg}" | head -1'],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "rror" not in r.stderr, (json_arg, r.stderr[-2000:])
        assert len(r.stdout.splitlines()) == 1
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "edgelstm.run/1"
