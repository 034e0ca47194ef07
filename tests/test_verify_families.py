"""The harness on real exports of every family: fp32, int8-dynamic and fp16 files from
``edgelstm quantize``, the run's own held-out data (accuracy / RMSE vs labels), seq2seq
encoder / decoder-step pairs (teacher-forced outputs, greedy exact match), and ``summarize``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
pytest.importorskip("edgelstm.exporters.runs")
torch.set_num_threads(1)

from onnx import numpy_helper  # noqa: E402

from edgelstm.errors import UsageError  # noqa: E402
from edgelstm.verify import summarize, verify  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TINY, make_tiny  # noqa: E402
from graphs import save  # noqa: E402

STEPS = 40  # drift horizon in tests; the CLI default is 10,000


def _export(model, path):
    from edgelstm.exporters.runs import export_model

    export_model(model, path)
    return path


def _quantize(src, dst, mode):
    from edgelstm.exporters.quantize import quantize

    # the quantizer's own error report draws random tokens from a default vocabulary of 16 for a
    # seq2seq model without a vocab (the tiny ones have 9): the harness measures the error instead.
    # Tiny models are far below the size where int8 pays: force it, these tests are about int8 files.
    quantize(src, dst, mode, evaluate_error=False, **({"force_int8": True} if mode != "fp16" else {}))
    return dst


def _run_dir(tmp_path, family, dataset, hidden=4, **extra):
    from edgelstm.checkpoint import RunConfig, save_run
    from edgelstm.data import load_dataset
    from edgelstm.models import ModelConfig, build_model

    b = load_dataset(dataset, 0)
    if b.task == "seq2seq":
        cfg = ModelConfig(family, hidden_size=hidden, task="seq2seq", vocab_size=len(b.vocab), emb_size=4,
                          max_len=b.max_len)
    else:
        cfg = ModelConfig(family, input_size=b.num_features, hidden_size=hidden, task=b.task,
                          num_outputs=b.num_outputs)
    torch.manual_seed(0)
    run = tmp_path / f"run-{family}-{dataset}"
    save_run(run, build_model(cfg).eval(), RunConfig.for_model(
        cfg, dataset=dataset, seed=0, vocab=b.vocab, labels=b.labels,
        normalization=b.normalization.to_dict() if b.normalization else None, **extra))
    return run


# ------------------------------------------------------------------------------------ quantized files, every family
def _all_ops(graph) -> set[str]:
    ops = set()
    for n in graph.node:
        ops.add(n.op_type)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                ops |= _all_ops(g)
    return ops


FAMILY_CASES = [
    pytest.param("lstm-1x4", "int8-dynamic", id="lstm-int8"),
    pytest.param("lstm-1x4", "fp16", id="lstm-fp16"),
    pytest.param("peephole-1x4", "int8-dynamic", id="peephole-int8"),
    pytest.param("peephole-1x4", "fp16", id="peephole-fp16"),
    pytest.param("gru-1x4", "int8-dynamic", id="gru-int8-scan"),
    pytest.param("gru-1x4", "fp16", id="gru-fp16"),
    pytest.param("attention-clf-1x6-bi", "int8-dynamic", id="attention-clf-int8"),
    pytest.param("attention-clf-1x6-bi", "fp16", id="attention-clf-fp16"),
    pytest.param("attention-s2s-1x8", "int8-dynamic", id="attention-s2s-int8"),
    pytest.param("attention-s2s-1x8", "fp16", id="attention-s2s-fp16"),
]


@pytest.mark.parametrize("name, mode", FAMILY_CASES)
def test_quantized_file_verifies_for_every_family(tmp_path, name, mode):
    model = make_tiny(name, 0).eval()
    fp32 = _export(model, tmp_path / "m.onnx")
    q = _quantize(fp32, tmp_path / f"m.{mode}.onnx", mode)
    seq2seq = TINY[name].task == "seq2seq"
    if name.startswith("gru") and mode == "int8-dynamic":  # the GRU int8 rewrite: int8 MatMuls, no float GRU
        ops = _all_ops(onnx.load(str(q)).graph)
        assert "GRU" not in ops and "MatMulInteger" in ops, ops
    # the quantized file alone against PyTorch, int8 pinned to one thread even when more are asked for
    r = verify(q, reference=model, steps=STEPS, oracles=[], threads=2)
    assert r, r.table()
    cand = next(iter(r.environment["threads"]))
    assert r.environment["threads"][cand] == (1 if mode.startswith("int8") else 2)
    outs = r.select("outputs", candidate=cand)
    assert outs
    if mode.startswith("int8"):
        # int8 is judged by SQNR (and the task), not by the max error
        assert all("snr_db >= 20" in c.rule and "max_abs" not in c.rule for c in outs)
        assert min(c.stats["snr_db"] for c in outs) >= 20
    else:
        assert all(c.rule.startswith("max_abs <=") and "fp16 profile" in c.rule for c in outs)
    task = r.select("task", candidate=cand)
    assert task and all(c.passed for c in task)
    if seq2seq:
        assert all("exact_match" in c.stats for c in task)
    s = summarize(r)
    assert s["passed"] and s["candidates"][cand]["precision"] == mode
    key = "min_snr_db" if mode.startswith("int8") else "worst_max_abs"
    assert s[key] is not None


def test_int8_and_fp16_against_the_fp32_file(tmp_path):
    model = make_tiny("gru-1x6-forecast", 0).eval()
    fp32 = _export(model, tmp_path / "m.onnx")
    i8 = _quantize(fp32, tmp_path / "m.int8.onnx", "int8-dynamic")
    f16 = _quantize(fp32, tmp_path / "m.fp16.onnx", "fp16")
    r = verify(fp32, reference=model, against=[i8, f16], steps=STEPS, oracles=["numpy"])
    assert r, r.table()
    assert r.config["candidate_precisions"] == {"ort:cpu[m.onnx]": "fp32", "numpy[m.onnx]": "fp32",
                                                "ort:cpu[m.int8.onnx]": "int8-dynamic", "ort:cpu[m.fp16.onnx]": "fp16"}
    drift = {c.candidate: c for c in r.select("drift")}
    assert set(drift) == {"ort:cpu[m.onnx]", "numpy[m.onnx]", "ort:cpu[m.int8.onnx]", "ort:cpu[m.fp16.onnx]"}


# ------------------------------------------------------------------------------------ the run's own data
@pytest.mark.parametrize("family, dataset", [("lstm", "digits"), ("peephole", "timing")],
                         ids=["lstm-digits-classify", "peephole-timing-label"])
def test_run_dir_test_split_gives_accuracy_per_backend(tmp_path, family, dataset):
    from edgelstm.data import load_dataset
    from edgelstm.exporters.runs import export_run

    run = _run_dir(tmp_path, family, dataset)
    fp32 = tmp_path / "m.onnx"
    export_run(run, fp32)
    i8 = _quantize(fp32, tmp_path / "m.int8.onnx", "int8-dynamic")
    r = verify(fp32, reference=str(run), against=[i8], steps=0, oracles=["numpy"], checks=["outputs", "task"],
               data_limit=64)
    assert r, r.table()
    n_test = len(load_dataset(dataset, 0).test)
    assert r.config["run_data"] == f"{dataset} test split (first 64 of {n_test})"
    labelled = [c for c in r.select("task") if c.case.startswith("run data:")]
    assert {c.candidate for c in labelled} == {"ort:cpu[m.onnx]", "numpy[m.onnx]", "ort:cpu[m.int8.onnx]"}
    for c in labelled:
        assert c.stats["labelled"] == (64 if dataset == "digits" else 64 * 48)
        assert 0.0 <= c.stats["accuracy"] <= 1.0 and "agreement" in c.stats
    # fp32 backends decide exactly as PyTorch does on real data
    fp = [c for c in labelled if "int8" not in c.candidate]
    assert all(c.stats["accuracy"] == c.stats["reference_accuracy"] for c in fp)
    # the inputs were normalized as the manifest says: identical to what the model trained on
    s = summarize(r)
    assert s["data"].startswith(f"run data: {dataset} test split")
    assert s["candidates"]["ort:cpu[m.int8.onnx]"]["accuracy"] is not None


def test_run_dir_forecast_reports_rmse_in_data_units(tmp_path):
    import json

    from edgelstm.exporters.runs import export_run

    from click.testing import CliRunner

    from edgelstm.cli import cli

    run = tmp_path / "run"  # a trained run: its metrics.json holds the test RMSE training measured
    res = CliRunner().invoke(cli, ["train", "--family", "gru", "--dataset", "sine", "--hidden", "4", "--epochs", "1",
                                   "--quiet", "--threads", "1", "--out", str(run)])
    assert res.exit_code == 0, res.output
    path = tmp_path / "m.onnx"
    export_run(run, path)
    r = verify(path, reference=str(run), steps=0, oracles=[], checks=["outputs", "task"], data_limit=None)
    task = r.select("task")
    assert r and len(task) == 1 and task[0].case.startswith("run data: sine test split")
    st = task[0].stats
    assert st["units"] == "data units"
    # the whole test split, scored like training scored it: the run's own test RMSE (float32
    # predictions, float64 sums: equal to 1e-5 relative)
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    assert st["reference_rmse"] == pytest.approx(metrics["test_rmse"], rel=1e-5)
    # fp32 vs fp32: the same prediction, the same RMSE up to float32 rounding
    assert st["rmse"] == pytest.approx(st["reference_rmse"], rel=1e-5)


def test_run_dir_without_dataset_skips_run_data(tmp_path):
    from edgelstm.checkpoint import RunConfig, save_run
    from edgelstm.exporters.runs import export_run

    run = tmp_path / "run"
    save_run(run, make_tiny("lstm-1x4", 0), RunConfig.for_model(TINY["lstm-1x4"]), {})
    path = tmp_path / "m.onnx"
    export_run(run, path)
    r = verify(path, reference=str(run), steps=0, oracles=[], checks=["outputs", "task"])
    assert r
    assert any(s["what"] == "run data" and "names no data set" in s["reason"] for s in r.skipped)


def test_cli_no_run_data(tmp_path):
    from click.testing import CliRunner
    from edgelstm.cli import cli
    from edgelstm.exporters.runs import export_run

    run = _run_dir(tmp_path, "gru", "timing")
    export_run(run, tmp_path / "m.onnx")
    base = ["verify", str(tmp_path / "m.onnx"), "--reference", str(run), "--oracles", "", "--steps", "0",
            "--checks", "outputs,task", "--data-limit", "8"]
    for flag, expect in (("--run-data", "run data: timing test split (first 8 of 120)"), ("--no-run-data", None)):
        res = CliRunner().invoke(cli, [*base, flag, "--json", str(tmp_path / "r.json")], standalone_mode=False)
        assert res.exception is None and res.return_value == 0, res.output
        cases = {c["case"] for c in json.loads((tmp_path / "r.json").read_text())["checks"] if c["check"] == "task"}
        assert (expect in cases) if expect else cases == {"inputs without labels"}


def test_gate_swap_changes_decisions_on_run_data(tmp_path):
    from edgelstm.exporters.runs import export_run

    run = _run_dir(tmp_path, "lstm", "digits", hidden=8)
    path = tmp_path / "m.onnx"
    export_run(run, path)
    m = onnx.load(str(path))
    node = next(n for n in m.graph.node if n.op_type == "LSTM")
    init = next(t for t in m.graph.initializer if t.name == node.input[2])  # R: recurrent weights
    R = numpy_helper.to_array(init).copy()
    H = R.shape[1] // 4
    R[:, :H], R[:, 3 * H:] = R[:, 3 * H:].copy(), R[:, :H].copy()  # input gate <-> cell gate
    init.CopyFrom(numpy_helper.from_array(R, init.name))
    save(m, path)  # a broken graph, sealed as a buggy exporter would
    r = verify(path, reference=str(run), steps=0, oracles=[], checks=["outputs", "task"])
    assert not r
    assert {c.output for c in r.failures if c.check == "outputs"} >= {"logits", "h_out", "c_out"}


# ------------------------------------------------------------------------------------ seq2seq pairs
def _s2s(tmp_path, name="attention-s2s-2x6-bahdanau"):
    model = make_tiny(name, 0).eval()
    _export(model, tmp_path / "s.onnx")
    return model, tmp_path / "s.encoder.onnx", tmp_path / "s.decoder_step.onnx"


def test_seq2seq_pair_verifies_from_stem_or_either_file(tmp_path):
    model, enc, dec = _s2s(tmp_path)
    results = [verify(p, reference=model, oracles=["numpy"], steps=0) for p in (tmp_path / "s.onnx", enc, dec)]
    for r in results:
        assert r, r.table()
        assert r.candidates == ["ort:cpu[s.onnx]", "numpy[s.onnx]"]
        assert r.config["files"] == {"s.onnx": [str(enc), str(dec)]}
    r = results[0]
    outs = {c.output for c in r.select("outputs", candidate="ort:cpu[s.onnx]")}
    assert outs == {"encoder.memory", "encoder.h_out", "encoder.c_out", "decoder_step.logits",
                    "decoder_step.h_out", "decoder_step.c_out", "decoder_step.attention"}
    # fp32 vs fp32 over a carried-state teacher-forced sequence: float32 rounding only
    assert max(c.stats["max_abs"] for c in r.select("outputs")) < 1e-5
    task = r.select("task", candidate="ort:cpu[s.onnx]")[0]
    assert task.stats["exact_match"] == 1.0 and task.stats["sequences"] == 4
    assert {s["what"] for s in r.skipped} >= {"streaming", "drift", "state_roundtrip"}
    assert r.select("batch_invariance") and all(r.select("batch_invariance"))


def test_seq2seq_greedy_matches_the_models_own_greedy(tmp_path):
    from edgelstm.verify.seq2seq import TorchPair, greedy

    model, _, _ = _s2s(tmp_path, "attention-s2s-1x8")
    src = torch.tensor([[3, 4, 5, 6, 7], [8, 3, 4, 0, 0]])
    lengths = torch.tensor([5, 3])
    want = model.greedy(src, lengths, max_len=6)
    seqs, logits = greedy(TorchPair(model, "torch"), src.numpy(), lengths.numpy().astype(np.int32), 6, 1, 2)
    for row, s in zip(want.tolist(), seqs):
        assert row[:len(s)] == s and all(t == 0 for t in row[len(s):])
    assert logits.shape == (2, want.shape[1], 9)


def _swap_decoder_state(path):  # the decoder feeds c back as h: states in the wrong order
    m = onnx.load(str(path))
    for n in m.graph.node:
        n.output[:] = [{"h_out": "c_out", "c_out": "h_out"}.get(o, o) for o in n.output]
    save(m, path)  # a broken graph, sealed as a buggy exporter would


def _drop_src_lengths(path):  # the encoder LSTM reads padding: sequence_lens not wired
    m = onnx.load(str(path))
    for n in m.graph.node:
        if n.op_type == "LSTM" and len(n.input) > 4:
            n.input[4] = ""
    save(m, path)  # a broken graph, sealed as a buggy exporter would


@pytest.mark.parametrize("what, file, mutate, expect", [
    ("decoder-state-order", "decoder_step", _swap_decoder_state, "decoder_step.h_out"),
    ("encoder-ignores-lengths", "encoder", _drop_src_lengths, "encoder.h_out"),
], ids=["decoder-state-order", "encoder-ignores-lengths"])
def test_broken_seq2seq_pair_fails_naming_the_output(tmp_path, what, file, mutate, expect):
    model, enc, dec = _s2s(tmp_path)
    mutate(enc if file == "encoder" else dec)
    r = verify(tmp_path / "s.onnx", reference=model, oracles=[], steps=0)
    assert not r
    assert expect in {c.output for c in r.failures if c.check == "outputs"}, r.table()
    if what == "encoder-ignores-lengths":
        assert not all(r.select("batch_invariance"))


def test_seq2seq_dates_run_reports_exact_match_vs_labels(tmp_path):
    from edgelstm.exporters.runs import export_run

    run = _run_dir(tmp_path, "attention", "dates", hidden=6)
    export_run(run, tmp_path / "d.onnx")
    i8 = _quantize(tmp_path / "d.onnx", tmp_path / "d.int8.onnx", "int8-dynamic")
    r = verify(tmp_path / "d.onnx", reference=str(run), against=[i8], oracles=[], steps=0, data_limit=32)
    assert r, r.table()
    labelled = [c for c in r.select("task") if c.case.startswith("run data: dates test split")]
    assert {c.candidate for c in labelled} == {"ort:cpu[d.onnx]", "ort:cpu[d.int8.onnx]"}
    fp = next(c for c in labelled if c.candidate == "ort:cpu[d.onnx]")
    assert fp.stats["label_exact_match"] == fp.stats["reference_label_exact_match"]
    assert fp.stats["sequences"] == 32 and fp.stats["exact_match"] == 1.0
    assert r.config["max_len"] >= 11  # ISO date (10) + eos


def test_seq2seq_errors(tmp_path):
    model, enc, dec = _s2s(tmp_path)
    dec.unlink()
    from edgelstm.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"s.decoder_step.onnx \| model file not found"):
        verify(enc, reference=model, steps=0)
    _s2s(tmp_path)
    with pytest.raises(UsageError, match=r"--atol \| no output named 'logits'"):
        verify(enc, reference=model, atol=["logits:1e-3"], steps=0)
    with pytest.raises(UsageError, match=r"--reference \| the PyTorch model is not a seq2seq model"):
        verify(enc, reference=make_tiny("lstm-1x4", 0), steps=0)
    with pytest.raises(UsageError, match=r"--data \| seq2seq verification takes the run's own data"):
        verify(enc, reference=model, data=tmp_path / "d.npz", steps=0)


def test_cli_seq2seq_broken_pair_exits_1(tmp_path):
    from click.testing import CliRunner
    from edgelstm.cli import cli
    from edgelstm.exporters.runs import export_run

    run = _run_dir(tmp_path, "attention", "dates", hidden=4)
    export_run(run, tmp_path / "d.onnx")
    args = ["verify", str(tmp_path / "d.onnx"), "--reference", str(run), "--oracles", "", "--steps", "0",
            "--json", str(tmp_path / "r.json")]
    res = CliRunner().invoke(cli, args, standalone_mode=False)
    assert res.exception is None and res.return_value == 0, res.output
    _swap_decoder_state(tmp_path / "d.decoder_step.onnx")
    res = CliRunner().invoke(cli, args, standalone_mode=False)
    assert res.exception is None and res.return_value == 1, res.output
    assert "FAIL outputs decoder_step.h_out" in res.output
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is False


# ------------------------------------------------------------------------------------ summarize
def test_summarize_passing_and_failing(tmp_path):
    model = make_tiny("lstm-1x4", 0).eval()
    fp32 = _export(model, tmp_path / "m.onnx")
    i8 = _quantize(fp32, tmp_path / "m.int8.onnx", "int8-dynamic")
    r = verify(fp32, reference=model, against=[i8], steps=STEPS, oracles=[])
    s = summarize(r)
    assert s["passed"] is True and s["failed"] == 0 and s["failures"] == []
    assert s["reference"] == "SequenceModel"
    assert set(s["candidates"]) == {"ort:cpu[m.onnx]", "ort:cpu[m.int8.onnx]"}
    c = s["candidates"]["ort:cpu[m.int8.onnx]"]
    assert c["precision"] == "int8-dynamic" and c["headline"].startswith("SQNR ")
    assert c["drift"]["steps"] == STEPS and c["drift"]["growing"] is False
    assert s["worst_max_abs"] < 1e-5 < s["streaming_max_abs"]  # fp32 exact; int8 streaming noisy
    assert s["min_snr_db"] >= 20 and s["min_agreement"] == 1.0
    assert summarize(json.loads(r.to_json())) == s  # the JSON report summarizes the same
    json.dumps(s)  # JSON-able

    m = onnx.load(str(fp32))
    node = next(n for n in m.graph.node if n.op_type == "LSTM")
    init = next(t for t in m.graph.initializer if t.name == node.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0.5, init.name))
    save(m, fp32)
    s = summarize(verify(fp32, reference=model, steps=0, oracles=[]))
    assert s["passed"] is False and s["failed"] >= 1
    assert s["failures"][0].startswith("outputs ") and "ort:cpu[m.onnx]" in s["failures"][0]
    assert "outputs logits" in s["candidates"]["ort:cpu[m.onnx]"]["failed"]
