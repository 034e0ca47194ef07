"""int8 batch invariance: pooled SQNR tolerates per-tensor activation scales, but still catches a
quantized graph that ignores the lengths (padding read as data)."""
from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import make_tiny  # noqa: E402
from graphs import save  # noqa: E402

from edgelstm.exporters import export_model  # noqa: E402
from edgelstm.exporters.quantize import quantize  # noqa: E402
from edgelstm.verify import verify  # noqa: E402


def _int8(tmp_path, name):
    fp32, q = tmp_path / "m.onnx", tmp_path / "q.onnx"
    export_model(make_tiny(name), fp32)
    quantize(fp32, q, "int8-dynamic", evaluate_error=False, force_int8=True)  # tiny: int8 forced
    return fp32, q


def _drop_sequence_lens(path):
    m = onnx.load(str(path))
    hit = 0
    for n in m.graph.node:
        if n.op_type in ("DynamicQuantizeLSTM", "LSTM") and len(n.input) > 4 and n.input[4]:
            n.input[4] = ""
            hit += 1
    assert hit, "no recurrent node with sequence_lens to break"
    save(m, path)  # a broken graph, sealed as a buggy exporter would


@pytest.mark.parametrize("name", ["lstm-1x4", "peephole-1x4"])
def test_int8_batch_invariance_passes_and_catches_ignored_lengths(tmp_path, name):
    fp32, q = _int8(tmp_path, name)
    good = verify(fp32, against=[q], checks=("batch_invariance",), oracles=())
    assert good.passed, good.to_dict()["failures"]

    _drop_sequence_lens(q)
    bad = verify(fp32, against=[q], checks=("batch_invariance",), oracles=())
    fails = bad.to_dict()["failures"]
    assert not bad.passed and any("batch_invariance" in f and "pooled" in f for f in fails), fails


@pytest.mark.parametrize("sme", [True, False], ids=["sme", "no-sme"])
def test_int8_on_an_sme_cpu_carries_a_note(tmp_path, monkeypatch, sme):
    from edgelstm.runtime import providers

    monkeypatch.setattr(providers, "cpu_has_sme", lambda: sme)
    fp32, q = _int8(tmp_path, "lstm-1x4")
    r = verify(fp32, against=[q], checks=("outputs",), oracles=())
    assert any("this CPU has SME" in n for n in r.notes) == sme
    assert ("note: this CPU has SME" in r.table()) == sme and r.to_dict()["notes"] == r.notes


def test_cpu_has_sme_is_false_off_arm():
    from edgelstm.runtime import providers

    if not providers.is_arm_machine():
        assert providers.cpu_has_sme() is False
