"""Shared fixtures. One thread for torch and BLAS: the test machine's cores are shared."""
from __future__ import annotations

import os
import warnings

# Before torch / numpy are imported by any test module: keep every test single-threaded.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest  # noqa: E402

RECURRENT_CASE_PREFIXES = ("test_lstm", "test_gru", "test_rnn", "test_simple_rnn")


@pytest.fixture(scope="session")
def onnx_rnn_cases() -> dict:
    """ONNX's official LSTM/GRU/RNN node test cases: name -> (node, attrs, inputs, outputs).

    ``inputs`` maps the node's input names (X, W, R, B, ...) to arrays; ``outputs`` maps its
    output names (Y, Y_h, Y_c) to the expected arrays. Collecting takes a few seconds, once.
    """
    onnx = pytest.importorskip("onnx")
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # other operators' case generators warn about overflow
        cases = collect_testcases()
    out = {}
    for c in cases:
        if not c.name.startswith(RECURRENT_CASE_PREFIXES):
            continue
        node = c.model.graph.node[0]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if isinstance(attrs.get("direction"), bytes):
            attrs["direction"] = attrs["direction"].decode()
        ins, outs = c.data_sets[0]
        inputs = {n: v for n, v in zip(node.input, ins) if n}
        outputs = {n: v for n, v in zip([n for n in node.output if n], outs)}
        out[c.name] = (node.op_type, attrs, inputs, outputs)
    return out


@pytest.fixture
def tiny_model():
    """Factory: ``tiny_model(name, seed=0)`` -> a seeded model from ``tiny.TINY``."""
    from tiny import make_tiny

    return make_tiny
