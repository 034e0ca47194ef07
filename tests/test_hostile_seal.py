"""Hostile inputs, part 1: the seal. A model file edited after export (weights, normalization,
labels, state wiring, a removed seal or manifest, an old-scheme file, truncation) is refused
with exit 8 and one line by every command that reads a model; ``--trust-modified`` is the only
way past, it says what it skips, and ``quantize`` never re-seals such a file. Malformed manifest
fields (sealed, as a buggy exporter would write them) are refused by the schema, never a crash.

One tiny model is exported per module (``export_run`` of a seeded run directory).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from graphs import save  # noqa: E402
from tiny import TINY, make_tiny  # noqa: E402

from edgelstm.cli import main  # noqa: E402
from edgelstm.errors import ManifestError, ModelFileError  # noqa: E402
from edgelstm.manifest import MANIFEST_KEY  # noqa: E402
from edgelstm.runtime.integrity import SEAL_KEY, check_model_bytes, seal_problem  # noqa: E402

COMMANDS = {  # argv after the model path; every one reads the model first
    "run": lambda m, d: ["run", m, "--input", d],
    "inspect": lambda m, d: ["inspect", m, "--device", "cpu"],
    "bench": lambda m, d: ["bench", m, "--runs", "2", "--warmup", "0", "--no-floor", "--quiet"],
    "verify": lambda m, d: ["verify", m, "--steps", "0", "-q", "--oracles", "numpy"],
    "quantize": lambda m, d: ["quantize", m, "-o", str(Path(d).with_name("q.onnx")), "--mode", "int8-dynamic",
                              "--overwrite"],
}


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The real entry point in-process: any exception other than SystemExit (a traceback) fails."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from edgelstm.checkpoint import RunConfig, save_run
    from edgelstm.exporters.runs import export_run

    d = tmp_path_factory.mktemp("hostile-seal")
    name = "lstm-1x4"
    rc = RunConfig.for_model(TINY[name], normalization={"mean": [0.5, -1.0, 2.0], "std": [1.5, 0.5, 2.0]},
                             labels=["a", "b", "c"])
    save_run(d / "run", make_tiny(name, 0), rc, {})
    export_run(d / "run", d / "m.onnx")
    np.savez(d / "x.npz", x=np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32))
    return d


def _manifest(model: onnx.ModelProto) -> dict:
    return json.loads(next(p.value for p in model.metadata_props if p.key == MANIFEST_KEY))


def _set_text(model: onnx.ModelProto, key: str, text: str | None) -> None:
    for p in list(model.metadata_props):
        if p.key == key:
            model.metadata_props.remove(p)
    if text is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, text


def _edit_manifest(edit):
    def tamper(model: onnx.ModelProto) -> None:
        m = _manifest(model)
        edit(m)
        _set_text(model, MANIFEST_KEY, json.dumps(m, sort_keys=True))
    return tamper


def _flip_weight(model: onnx.ModelProto) -> None:
    w = next(t for t in model.graph.initializer if t.raw_data)
    raw = bytearray(w.raw_data)
    raw[len(raw) // 2] ^= 0x40
    w.raw_data = bytes(raw)


def _old_scheme(model: onnx.ModelProto) -> None:
    from edgelstm.runtime.integrity import graph_digest

    _set_text(model, SEAL_KEY, None)
    m = _manifest(model)
    m["schema_version"], m["extra"]["graph_sha256"] = 1, graph_digest(model.SerializeToString())
    _set_text(model, MANIFEST_KEY, json.dumps(m, sort_keys=True))


def _duplicate_manifest(model: onnx.ModelProto) -> None:
    entry = model.metadata_props.add()
    entry.key, entry.value = MANIFEST_KEY, json.dumps({**_manifest(model), "labels": ["c", "b", "a"]})


TAMPER = {  # name -> (edit of the exported ModelProto, the message's problem)
    "weight-byte": (_flip_weight, "seal mismatch"),
    "normalization-shifted": (_edit_manifest(lambda m: m["normalization"].update(mean=[9.5, 8.0, 11.0])),
                              "seal mismatch"),
    "labels-reversed": (_edit_manifest(lambda m: m.update(labels=m["labels"][::-1])), "seal mismatch"),
    "states-swapped": (_edit_manifest(lambda m: m.update(states=[{**m["states"][0], "output": "c_out"},
                                                                 {**m["states"][1], "output": "h_out"}])),
                       "seal mismatch"),
    "normalization-null": (_edit_manifest(lambda m: m.update(normalization=None)), "seal mismatch"),
    "seal-removed": (lambda model: _set_text(model, SEAL_KEY, None), "the manifest is not sealed"),
    "seal-and-weight": (lambda model: (_set_text(model, SEAL_KEY, None), _flip_weight(model)),
                        "the manifest is not sealed"),
    "manifest-removed": (lambda model: _set_text(model, MANIFEST_KEY, None), "its manifest is missing"),
    "old-scheme": (_old_scheme, "sealed by the old scheme"),
    "manifest-twice": (_duplicate_manifest, "appears more than once"),
}


@pytest.fixture(scope="module")
def tampered(exported):
    out = {}
    for name, (edit, _) in TAMPER.items():
        model = onnx.load(str(exported / "m.onnx"))
        edit(model)
        path = exported / f"t-{name}.onnx"
        onnx.save(model, str(path))
        out[name] = path
    return out


def test_export_is_sealed_and_validates(exported):
    data = (exported / "m.onnx").read_bytes()
    assert seal_problem(data, "m.onnx") is None
    m = check_model_bytes(data, "m.onnx")
    assert m.schema_version == 2 and m.labels == ["a", "b", "c"] and m.normalization.std == [1.5, 0.5, 2.0]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("tamper", sorted(TAMPER))
def test_every_reader_refuses_a_modified_file(capsys, exported, tampered, command, tamper):
    code, out, err = cli(capsys, *COMMANDS[command](str(tampered[tamper]), str(exported / "x.npz")))
    line = one_error_line(err)
    assert code == 8, (code, out, err)
    assert f"t-{tamper}.onnx | " in line and TAMPER[tamper][1] in line and "--trust-modified" in line, line
    assert not (exported / "q.onnx").exists()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, "before-manifest"])
@pytest.mark.parametrize("command", ["run", "inspect", "bench", "quantize"])
def test_truncated_files_are_refused(capsys, exported, cut, command):
    from edgelstm.runtime.integrity import METADATA_PROPS_FIELD, iter_fields

    data = (exported / "m.onnx").read_bytes()
    at = (min(f.start for f in iter_fields(data) if f.number == METADATA_PROPS_FIELD) if cut == "before-manifest"
          else int(len(data) * cut))
    path = exported / f"cut-{cut}.onnx"
    path.write_bytes(data[:at])
    code, _, err = cli(capsys, *COMMANDS[command](str(path), str(exported / "x.npz")))
    line = one_error_line(err)
    assert code == 8 and f"cut-{cut}.onnx | " in line
    assert ("manifest is missing" if cut == "before-manifest" else "truncated or corrupt") in line, line


def test_trust_modified_loads_with_a_warning_and_quantize_does_not_reseal(capsys, caplog, exported, tampered):
    code, out, err = cli(capsys, "run", tampered["normalization-shifted"], "--input", exported / "x.npz",
                         "--trust-modified")
    assert code == 0 and "sequence 0:" in out
    assert any("--trust-modified skips the seal check" in r.getMessage() for r in caplog.records)
    q = exported / "q-trusted.onnx"
    code, out, err = cli(capsys, "quantize", tampered["weight-byte"], "-o", q, "--mode", "int8-dynamic",
                         "--trust-modified", "--overwrite")
    assert code == 0 and "output is not sealed" in out, (out, err)
    code, _, err = cli(capsys, "run", q, "--input", exported / "x.npz")
    assert code == 8 and "the manifest is not sealed" in one_error_line(err)
    # a sealed input gives a sealed output
    code, _, err = cli(capsys, "quantize", exported / "m.onnx", "-o", q, "--mode", "int8-dynamic", "--overwrite")
    assert code == 0 and seal_problem(q.read_bytes(), "q") is None, err


def _sealed_with(exported: Path, name: str, text: str) -> Path:
    model = onnx.load(str(exported / "m.onnx"))
    _set_text(model, MANIFEST_KEY, text)
    return save(model, exported / f"bad-{name}.onnx")  # sealed: only the schema can refuse it


def _field(**kw):
    def make(m: dict) -> str:
        m.update(kw)
        return json.dumps(m)
    return make


MALFORMED = {  # sealed manifests a buggy exporter could write -> the schema's message
    "labels-int": (_field(labels=5), "field 'labels' is malformed; expected a list, got 5"),
    "labels-count": (_field(labels=["a", "b"]), "label count disagrees with the classes of 'logits'; expected 3, got 2"),
    "normalization-string": (_field(normalization="zscore"), "field 'normalization' is malformed; expected an object"),
    "normalization-nan": (_field(normalization={"mean": [0, float("nan"), 0], "std": [1, 1, 1]}),
                          "field 'normalization.mean' is malformed; expected a finite number, got nan"),
    "std-zero": (_field(normalization={"mean": [0, 0, 0], "std": [1, 0, 1]}), "normalization std must be > 0"),
    "normalization-length": (_field(normalization={"mean": [0, 0], "std": [1, 1]}),
                             "normalization length disagrees with the feature size of 'x'; expected 3, got 2"),
    "dtype-bogus": (lambda m: json.dumps({**m, "inputs": [{**m["inputs"][0], "dtype": "complex128"}] + m["inputs"][1:]}),
                    "field 'inputs[0].dtype' is malformed"),
    "companion-path": (_field(companions={"encoder": "../x.onnx"}),
                       "field 'companions.encoder' is malformed; expected a plain file name"),
    "layers-string": (_field(layers="2"), "field 'layers' is malformed; expected an integer >= 1, got '2'"),
    "extra-deep": (_field(extra={"a": json.loads("[" * 40 + "]" * 40)}), "field 'extra' is malformed; expected JSON nested"),
    "json-deep": (lambda m: "[" * 100_000 + "]" * 100_000, "manifest JSON is nested too deeply"),
    "not-json": (lambda m: "{not json", "manifest is not valid JSON"),
}


@pytest.mark.parametrize("command", ["run", "inspect", "bench", "quantize", "verify"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_fields_are_refused(capsys, exported, case, command):
    make, message = MALFORMED[case]
    path = _sealed_with(exported, case, make(_manifest(onnx.load(str(exported / "m.onnx")))))
    code, _, err = cli(capsys, *COMMANDS[command](str(path), str(exported / "x.npz")))
    line = one_error_line(err)
    assert code == 8 and f"bad-{case}.onnx manifest | " in line and message in line, line


def test_export_refuses_to_write_what_its_runtime_refuses(exported):
    """The check export runs on what it writes is the readers' check."""
    from edgelstm.exporters.build import check_written
    from edgelstm.errors import ExportError

    model = onnx.load(str(exported / "m.onnx"))
    _set_text(model, MANIFEST_KEY, _field(labels=["x"])(_manifest(model)))
    with pytest.raises(ExportError, match=r"fails the runtime's own integrity check; expected a sealed file"):
        check_written(model.SerializeToString(), "out.onnx")
    with pytest.raises(ManifestError, match=r"label count disagrees"):
        check_model_bytes(save(model, exported / "relabelled.onnx").read_bytes(), "relabelled.onnx")


def test_runtime_api_raises_typed_errors(exported, tampered):
    from edgelstm import runtime
    from edgelstm.errors import UsageError

    with pytest.raises(ModelFileError, match=r"seal mismatch"):
        runtime.load(tampered["labels-reversed"])
    with pytest.raises(UsageError, match=r"device \| wrong type; expected a device name or a list"):
        runtime.load(exported / "m.onnx", device=None)
    with pytest.raises(UsageError, match=r"device \| empty provider list"):
        runtime.load(exported / "m.onnx", device=[" ", ""])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A classifier that has learnt something (digits, a few epochs), exported."""
    from click.testing import CliRunner

    from edgelstm.cli import cli as click_cli

    d = tmp_path_factory.mktemp("hostile-verify")
    res = CliRunner().invoke(click_cli, ["train", "--family", "gru", "--dataset", "digits", "--hidden", "16",
                                         "--epochs", "6", "--quiet", "--threads", "1", "--out", str(d / "run")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(click_cli, ["export", str(d / "run"), "-o", str(d / "m.onnx")])
    assert res.exit_code == 0, res.output
    return d


def test_verify_fails_when_the_task_metric_through_the_file_drops(capsys, digits_run):
    """A shifted normalization (trusted past the seal) must never print PASSED: the PyTorch
    reference sees the run's own normalization, the file its manifest's."""
    model = onnx.load(str(digits_run / "m.onnx"))
    m = _manifest(model)
    m["normalization"]["mean"] = [v + 3 * s for v, s in zip(m["normalization"]["mean"], m["normalization"]["std"])]
    _set_text(model, MANIFEST_KEY, json.dumps(m))
    shifted = save(model, digits_run / "shifted.onnx", seal=False)
    args = ["verify", shifted, "--reference", digits_run / "run", "--steps", "0", "--oracles", "",
            "--checks", "outputs,task"]
    code, out, err = cli(capsys, *args, "--trust-modified")
    assert code == 1 and "PASSED" not in out, out
    task = [ln for ln in out.splitlines() if "FAIL" in ln and "task" in ln]
    assert task and "accuracy" in out, out
    code, out, _ = cli(capsys, "verify", digits_run / "m.onnx", *args[2:])
    assert code == 0 and "PASSED" in out, out
