"""Unit tests of the ARM check's comparison and table logic (benchmarks/arm/compare.py).

No emulation here: `make test-arm` runs the real thing. These pin the verdict rules: what passes,
what fails, and that a row without comparisons never reads as a pass.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "arm"))
import compare  # noqa: E402

from edgelstm.errors import UnknownChoiceError  # noqa: E402

RNG = np.random.default_rng(0)
REF = RNG.uniform(-1, 1, (3, 23, 4))  # float64: the injected differences stay exact


@pytest.mark.parametrize("precision, noise, ok", [
    ("fp32", 1e-7, True),    # reordered SIMD sums: measured ~1e-7
    ("fp32", 1e-4, False),   # 10x over the fp32 bound
    ("int8", 1e-7, True),    # same integer kernels: measured ~1e-7
    ("int8", 1e-1, False),   # what qemu 7.2's `max` core gave (wrong SME kernels)
    ("fp16", 5e-3, True),
    ("fp16", 5e-2, False),
], ids=lambda v: str(v))
def test_arm_vs_x86_tolerance(precision, noise, ok):
    got = REF + noise * np.sign(RNG.standard_normal(REF.shape))
    stat = compare.compare_array("y", REF, got, compare.ARM_VS_X86[precision])
    assert stat.ok is ok
    assert stat.max_abs == pytest.approx(noise, rel=1e-2)


def test_int8_needs_sqnr_too():
    # a small-signal output (|y| <= 0.1) all off by 1.5 activation steps: within the absolute
    # bound (scaled by max(1, |ref|)), but the SQNR shows the outputs are wrong
    small = 0.1 * REF
    got = small + 1.5 * compare.INT8_STEP
    stat = compare.compare_array("y", small, got, compare.ARM_VS_X86["int8"])
    assert stat.max_abs <= 2 * compare.INT8_STEP
    assert stat.sqnr_db < 30 and not stat.ok


@pytest.mark.parametrize("ref, got, note", [
    (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), "shape"),
    (np.zeros(3, np.float32), np.array([0, np.nan, 0], np.float32), "NaN"),
    (np.array([1, 2, 3]), np.array([1, 2, 4]), "integer values differ"),
], ids=["shape", "nan", "tokens"])
def test_mismatches_fail_with_a_note(ref, got, note):
    stat = compare.compare_array("t", ref, got, compare.ARM_VS_X86["fp32"])
    assert not stat.ok and note in stat.note


def test_missing_output_fails():
    stats = compare.compare_outputs({"full/y": REF}, {}, compare.ARM_VS_X86["fp32"])
    assert [s.ok for s in stats] == [False] and "missing" in stats[0].note


def test_streaming_parity_pairs_full_and_stream():
    out = {"full/y": REF, "stream/y": REF.copy(), "whole/y": REF, "full/h_out": REF[:1], "stream/h_out": REF[:1]}
    assert compare.stream_pairs(out) == [("full/h_out", "stream/h_out"), ("full/y", "stream/y")]
    assert all(s.ok for s in compare.streaming_parity(out, compare.STREAM_PARITY["fp32"]))


def test_int8_streaming_judged_by_sqnr():
    noisy = REF + 0.02  # a chunk-dependent quantization scale: ~0.02 off, SQNR ~ 30 dB
    stats = compare.streaming_parity({"full/y": REF, "stream/y": noisy}, compare.STREAM_PARITY["int8"])
    assert stats[0].ok and 20 <= stats[0].sqnr_db < 40


@pytest.mark.parametrize("row, passed", [
    (compare.Row("lstm", "fp32"), False),  # nothing compared: never a pass
    (compare.Row("lstm", "fp32", arm_vs_x86=[compare.Stat("y", 0, 1, math.inf, True)]), False),  # no streaming
    (compare.Row("attention", "fp32", arm_vs_x86=[compare.Stat("y", 0, 1, math.inf, True)],
                 parity_applicable=False), True),
    (compare.Row("lstm", "fp32", arm_vs_x86=[compare.Stat("y", 0, 1, math.inf, True)],
                 parity=[compare.Stat("s", 0, 1, math.inf, True)], error="boom"), False),
], ids=["empty", "no-stream", "not-streamable", "error"])
def test_row_verdict(row, passed):
    assert row.passed is passed
    assert bool(row.failures()) is (not passed)


def test_table_has_one_line_per_row_and_says_fail():
    rows = [compare.Row("lstm", "fp32", arm_vs_x86=[compare.Stat("y", 1e-7, 1, 140.0, True)],
                        parity=[compare.Stat("s", 0.0, 1, math.inf, True)]),
            compare.Row("gru", "int8-dynamic", error="no ARM result")]
    lines = compare.format_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2].split()[:3] == ["lstm", "fp32", "1.0e-07"] and lines[2].rstrip().endswith("PASS")
    assert lines[3].rstrip().endswith("FAIL")
    assert rows[1].to_dict()["passed"] is False


@pytest.mark.parametrize("given, key", [("fp32", "fp32"), ("int8-dynamic", "int8"), ("int8-static", "int8"),
                                        ("fp16", "fp16")], ids=lambda v: str(v))
def test_precision_key(given, key):
    assert compare.precision_key(given) == key


def test_precision_key_unknown():
    with pytest.raises(UnknownChoiceError, match=re.escape("precision | unknown precision; expected fp32, fp16 or int8-*, got int4")):
        compare.precision_key("int4")


@pytest.mark.parametrize("require, code", [("", 0), ("1", 3)], ids=["skip", "required"])
def test_unavailable_machine_skips_loudly(monkeypatch, capsys, require, code):
    import armenv
    import driver

    def no_arm():
        raise armenv.ArmUnavailable("qemu-aarch64-static/debootstrap are missing and we are not root")

    monkeypatch.setattr(armenv, "check_host", no_arm)
    monkeypatch.setenv("EDGELSTM_ARM_REQUIRE", require)
    assert driver.main(["--source", "torch"]) == code
    out = capsys.readouterr().out
    assert "test-arm SKIPPED (NOT a pass)" in out and "not root" in out
    assert "PASS" not in out.replace("NOT a pass", "")
