"""How the tests call the CLI and open a graph in onnxruntime: one copy of each.

Import as ``from clitools import cpu_session, run_cli`` (pytest puts ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

import onnxruntime as ort
import pytest


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """``edgelstm ARGV`` in this process: ``(exit code, stdout, stderr)``. ``main`` always exits
    (it maps every error to its exit code and one line), so a missing exit is a failure."""
    from edgelstm.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def cpu_session(path) -> ort.InferenceSession:
    """A bare onnxruntime CPU session: one thread (reproducible sums), errors-only logging."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
