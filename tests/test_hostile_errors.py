"""Hostile inputs, part 3: one line and the documented exit code, never a traceback. The README's
exit-code table is the single source: a test walks ``edgelstm/errors.py`` against it. Malformed
data files, out-of-range options (checked before any work), malformed bench reports, a
mismatched seq2seq pair, a corrupt state snapshot.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, Seq2SeqSpec, build_recurrent, save, save_seq2seq  # noqa: E402

import edgelstm.errors as errors_mod  # noqa: E402
from edgelstm.cli import main  # noqa: E402
from edgelstm.errors import DataError, EdgeLSTMError  # noqa: E402

README = Path(__file__).resolve().parent.parent / "README.md"


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:  # any other exception would be a traceback
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ the table
def readme_table() -> dict[str, int]:
    """error class -> exit code, from the README's exit-code table."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Exit codes"):]
    section = section[:section.index("\n\n", section.index("| code |"))]
    table: dict[str, int] = {}
    for row in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", row)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                assert name not in table, f"{name} appears twice in the README table"
                table[name] = int(m.group(1))
    return table


def test_readme_exit_code_table_matches_the_error_classes():
    classes = {name: cls.exit_code for name, cls in vars(errors_mod).items()
               if isinstance(cls, type) and issubclass(cls, EdgeLSTMError) and cls is not EdgeLSTMError}
    assert readme_table() == classes


# ------------------------------------------------------------------------------ data given to run
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-errors")
    save(build_recurrent(RecurrentSpec(labels=["a", "b", "c"])), d / "m.onnx")
    np.savez(d / "x.npz", x=np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32))
    return d


def _huge_header(path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 4), }" + " " * 20_000 + "\n"
    npy = b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode() + bytes(32)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", npy)


def _claims_more_than_it_holds(path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 1000, 4), }".ljust(117) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64))


def _cut(fraction: float):
    def make(path: Path, good: bytes) -> None:
        path.write_bytes(good[:int(len(good) * fraction)])
    return make


def _flip(path: Path, good: bytes) -> None:
    raw = bytearray(good)
    for i in range(len(raw) // 3, len(raw) // 3 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


BAD_DATA = {  # file name -> (writer(path, good npz bytes), message)
    "cut30.npz": (_cut(0.3), "cannot read as .npz (a truncated or corrupt archive)"),
    "cut60.npz": (_cut(0.6), "cannot read as .npz (a truncated or corrupt archive)"),
    "cut95.npz": (_cut(0.95), "cannot read as .npz (a truncated or corrupt archive)"),
    "flipped.npz": (_flip, "x"),
    "empty.npz": (lambda p, g: p.write_bytes(b""), "cannot read as .npz"),
    "pickled.npz": (lambda p, g: np.savez(p, x=np.array([{"a": 1}], dtype=object)),
                    "object (pickled) arrays are refused: nothing is unpickled"),
    "complex.npz": (lambda p, g: np.savez(p, x=np.ones((1, 3, 4), np.complex64)),
                    "unsupported array type; expected bool, integer or float numbers, got complex64"),
    "text.npz": (lambda p, g: np.savez(p, x=np.array([["a", "b"]])), "unsupported array type"),
    "huge-header.npz": (lambda p, g: _huge_header(p), "not a readable NumPy array"),
    "short-data.npz": (lambda p, g: _claims_more_than_it_holds(p), "array data is truncated"),
    "cut.npy": (lambda p, g: p.write_bytes(_npy_bytes()[:-40]), "array data is truncated"),
    "latin1.csv": (lambda p, g: p.write_bytes("0.5,1,2,\xe9\n".encode("latin-1")), "not UTF-8 text"),
    "letters.csv": (lambda p, g: p.write_text("1,2,3,4\n1,x,3,4\n"), "column 2 is not a number"),
}


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((1, 5, 4), np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_malformed_data_given_to_run(capsys, model, tmp_path, name):
    writer, message = BAD_DATA[name]
    path = tmp_path / name
    writer(path, (model / "x.npz").read_bytes())
    code, _, err = cli(capsys, "run", model / "m.onnx", "--input", path)
    line = one_line(err)
    assert code == 3 and str(path) in line and message in line, line


def test_bom_is_not_a_header(tmp_path):
    from edgelstm.cli.run import read_input
    from edgelstm.data.readers import read_csv

    rows = "\n".join(",".join(str(i + j) for j in range(4)) for i in range(8))
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    assert read_input(p)["x"].shape == (1, 8, 4)  # all 8 steps, none taken for a header
    p.write_bytes(b"\xef\xbb\xbf" + ("a,b,label\n" + "\n".join(f"{i},{i},{i % 2}" for i in range(40))).encode())
    assert "(column 'label')" in read_csv(p).description  # the header is found through the BOM


def test_training_data_refuses_huge_class_ids_and_bad_frame_rates(tmp_path):
    from edgelstm.data.readers import read_npz

    x = np.zeros((10, 3, 2), np.float32)
    np.savez(tmp_path / "ids.npz", x=x, y=np.full(10, 10**9))
    with pytest.raises(DataError, match=r"ids.npz: y \| class id too large; expected class ids < 100000, got 1000000000"):
        read_npz(tmp_path / "ids.npz")
    np.savez(tmp_path / "fr.npz", x=x, y=np.zeros(10, int), frame_rate_hz=np.array([1.0, 2.0]))
    with pytest.raises(DataError, match=r"frame_rate_hz \| not a frame rate"):
        read_npz(tmp_path / "fr.npz")


def test_stream_load_state_refuses_a_corrupt_snapshot(model, tmp_path):
    from edgelstm import runtime

    stream = runtime.load(model / "m.onnx").stream()
    good = stream.save_state(tmp_path / "s.npz")
    (tmp_path / "bad.npz").write_bytes(good.read_bytes()[:50])
    with pytest.raises(DataError, match=r"bad.npz \| cannot read as .npz \(a truncated or corrupt archive\)"):
        stream.load_state(tmp_path / "bad.npz")
    stream.load_state(good)


# ------------------------------------------------------------------------------ options, before any work
@pytest.mark.parametrize("args,message", [
    (["train", "--family", "lstm", "--dataset", "digits", "--seed", "-1"], "--seed | value out of range"),
    (["train", "--family", "lstm", "--dataset", "digits", "--seed", str(2**70)], "--seed | value out of range"),
    (["train", "--family", "lstm", "--dataset", "digits", "--hidden", str(10**9)], "--hidden | value out of range"),
    (["train", "--family", "lstm", "--dataset", "digits", "--batch-size", str(10**9)],
     "--batch-size | value out of range"),
    (["datasets", "sine", "--seed", "-1"], "--seed | value out of range"),
    (["verify", "{m}", "--seed", "-1"], "--seed | value out of range"),
    (["export", "{d}", "-o", "{d}/e.onnx", "--atol", "nan"], "--atol | value out of range"),
    (["bench", "{m}", "--duration", "inf"], "--duration | must be finite seconds"),
    (["bench", "{m}", "--batch", str(10**9)], "--batch | value too large"),
    (["bench", "{m}", "--batch", "4096", "--time", "100000", "--mode", "sequence"], "--batch/--time | batch x time too large"),
    (["bench", "{m}", "--threads", "100000"], "--threads | too many threads"),
    (["bench", "{m}", "--mode", ""], "--mode | no mode given"),
    (["run", "{m}", "--input", "{d}/x.npz", "--device", ",,"], "device | empty provider list"),
], ids=["seed-negative", "seed-2**70", "hidden-huge", "batch-size-huge", "datasets-seed", "verify-seed",
        "atol-nan", "duration-inf", "batch-huge", "batch-x-time", "threads-huge", "mode-empty", "device-commas"])
def test_out_of_range_options_exit_2_in_one_line(capsys, model, tmp_path, args, message):
    argv = [a.format(m=model / "m.onnx", d=model) for a in args]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and message in one_line(err), err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ bench-report
def _report(tmp_path: Path, edit) -> Path:
    base = {"schema": "edgelstm.bench/1", "environment": {"machine": "m"}, "settings": {},
            "results": [{"mode": "stream", "batch": 1, "time": 1, "name": "m", "backend": "onnxruntime",
                         "latency_s": {k: 1e-4 for k in ("n", "p50", "p90", "p99", "min", "max", "jitter")}}]}
    text = edit(base)
    p = tmp_path / "r.json"
    p.write_bytes(text if isinstance(text, bytes) else json.dumps(text).encode())
    return p


@pytest.mark.parametrize("edit,message", [
    (lambda d: b"\xff\xfe not utf-8", "benchmark file is not valid JSON"),
    (lambda d: b"[" * 100_000, "benchmark file is not valid JSON"),
    (lambda d: {**d, "results": {"a": 1}}, "malformed benchmark field 'results'; expected a list"),
    (lambda d: {**d, "environment": [1]}, "malformed benchmark field 'environment'; expected an object"),
    (lambda d: {**d, "results": [5]}, "malformed benchmark field results[0]; expected an object"),
    (lambda d: {**d, "results": [{**d["results"][0], "latency_s": None}]}, "results[0].latency_s; expected an object"),
    (lambda d: {**d, "results": [{**d["results"][0], "batch": "1"}]}, "results[0].batch; expected an integer"),
    (lambda d: {**d, "results": [{**d["results"][0], "latency_s": {"p50": "fast"}}]},
     "results[0].latency_s.n; expected a number"),
    (lambda d: {**d, "results": [{**d["results"][0], "x_floor": "2x"}]}, "results[0].x_floor; expected a number"),
], ids=["not-utf8", "deep", "results-dict", "environment-list", "result-int", "latency-null", "batch-string",
        "latency-string", "ratio-string"])
def test_malformed_bench_reports(capsys, tmp_path, edit, message):
    code, _, err = cli(capsys, "bench-report", _report(tmp_path, edit))
    assert code == 8 and message in one_line(err), err


def test_a_well_formed_bench_report_renders(capsys, tmp_path):
    code, out, err = cli(capsys, "bench-report", _report(tmp_path, lambda d: d))
    assert code == 0 and "| m | m | onnxruntime |" in out, err


# ------------------------------------------------------------------------------ seq2seq pair
def test_mismatched_seq2seq_pair_is_refused_at_load(capsys, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    save_seq2seq(Seq2SeqSpec(hidden=8), a, "s")
    save_seq2seq(Seq2SeqSpec(hidden=6), b, "s")
    shutil.copy(b / "s.decoder_step.onnx", a / "s.decoder_step.onnx")
    code, _, err = cli(capsys, "run", a / "s.onnx", "--text", "abc")
    line = one_line(err)
    assert code == 8 and "s.encoder.onnx + s.decoder_step.onnx | the encoder's 'memory' does not fit" in line, line


# ------------------------------------------------------------------------------ quantize, foreign files
def _foreign(path: Path, node, opset: int = 17, ir: int | None = None, domains=()) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                          [numpy_helper.from_array(np.ones((3, 3), np.float32), "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains])
    if ir:
        m.ir_version = ir
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("case,mode,code,message", [
    ("matmul-rank2", "fp16", 0, ""),
    ("matmul-rank2", "int8-dynamic", 0, ""),
    ("custom-op", "int8-dynamic", 8, "custom-op.onnx | onnxruntime cannot load this model"),
    ("opset7", "int8-static", 8, "opset7.onnx | onnxruntime cannot load this model"),
])
def test_quantize_foreign_files_in_one_line(capsys, tmp_path, case, mode, code, message):
    from onnx import helper

    node = {"matmul-rank2": helper.make_node("MatMul", ["x", "W"], ["y"]),
            "custom-op": helper.make_node("Custom", ["x"], ["y"], domain="my.domain"),
            "opset7": helper.make_node("Relu", ["x"], ["y"])}[case]
    src = _foreign(tmp_path / f"{case}.onnx", node, **({"opset": 7, "ir": 3} if case == "opset7" else {}),
                   **({"domains": ["my.domain"]} if case == "custom-op" else {}))
    np.savez(tmp_path / "cal.npz", x=np.ones((4, 3), np.float32))
    got, out, err = cli(capsys, "quantize", src, "-o", tmp_path / "q.onnx", "--mode", mode,
                        "--calibration", tmp_path / "cal.npz")
    assert got == code and "Traceback" not in err, (out, err)
    if code:
        assert message in one_line(err), err
        assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("argv, match", [
    (["datasets", "digits", "--split", "val"], "--split/--limit | only apply with -o"),
    (["datasets", "digits", "--limit", "3"], "--split/--limit | only apply with -o"),
], ids=["split-without-o", "limit-without-o"])
def test_options_that_would_be_ignored_are_refused(argv, match, capsys):
    from edgelstm.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and "Traceback" not in err
