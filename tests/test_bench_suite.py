"""The benchmark suite (benchmarks/run.py) and the runtime-path timing it uses (bench_runtime).

Tiny models, a few timed calls: these tests check the suite's wiring (build -> export ->
quantize -> time through edgelstm.runtime), its JSON rows and README table, and the digits
accuracy measurement, never speed.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm.errors import ModelFileError, UsageError
from edgelstm.bench import cases, drivers, report
from graphs import RecurrentSpec, Seq2SeqSpec, build_recurrent, save, save_seq2seq

ROOT = Path(__file__).resolve().parent.parent
FAST = cases.Settings(warmup=1, runs=3, duration=None, threads=1, floor=True)


def _suite():
    spec = importlib.util.spec_from_file_location("edgelstm_bench_suite", ROOT / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def suite():
    return _suite()


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_rt")
    lstm = save(build_recurrent(RecurrentSpec(cell="lstm", layers=2, input_size=4, hidden=8, classes=3)),
                d / "lstm.onnx")
    enc, dec = save_seq2seq(Seq2SeqSpec(), d)
    return {"lstm": lstm, "enc": enc, "dec": dec}


# ------------------------------------------------------------------------------ bench_runtime
@pytest.mark.parametrize("mode,time,api", [("stream", 1, "Stream.step"), ("stream", 3, "Stream.feed"),
                                           ("sequence", 5, "Model.run")], ids=["step", "feed", "sequence"])
def test_bench_runtime_times_the_runtime_call(graphs, mode, time, api):
    rows = drivers.bench_runtime(graphs["lstm"], [cases.Case(mode, 2, time)], FAST, name="tiny")
    (r,) = rows
    assert r["api"] == f"edgelstm.runtime {api}" and r["graph"] == "model" and r["backend"] == "onnxruntime"
    assert (r["mode"], r["batch"], r["time"], r["runs"]) == (mode, 2, time, 3)
    assert r["latency_s"]["p50"] > 0 and r["floor"]["floor_s"] > 0 and r["x_floor"] > 0
    assert r["steps_per_s"] == pytest.approx(2 * time / r["latency_s"]["p50"])
    assert r["file_bytes"] == graphs["lstm"].stat().st_size and r["parameters"] > 0


@pytest.mark.parametrize("which,case,api,graph", [
    ("dec", cases.Case("stream", 2, 6), "Seq2SeqModel.decode_steps (per token, 16 per call)", "decoder_step"),
    ("enc", cases.Case("sequence", 2, 6), "encoder.run", "encoder"),
], ids=["decoder_step", "encoder"])
def test_bench_runtime_seq2seq_graphs(graphs, which, case, api, graph):
    (r,) = drivers.bench_runtime(graphs[which], [case], FAST)
    assert r["api"] == f"edgelstm.runtime {api}" and r["graph"] == graph
    # a decoder call is one token whatever the source length; an encoder call covers `time` steps
    assert r["steps_per_s"] == pytest.approx(2 * (1 if graph == "decoder_step" else 6) / r["latency_s"]["p50"])


def test_bench_runtime_rejects_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        drivers.bench_runtime(tmp_path / "nope.onnx", [cases.Case("stream", 1, 1)], FAST)


# ------------------------------------------------------------------------------ the suite
def test_suite_tiny_run_writes_rows_for_every_backend(suite, tmp_path):
    out = tmp_path / "r.json"
    rc = suite.main(["--families", "lstm,gru", "--hidden", "8", "--duration", "0.001", "--no-digits",
                     "--no-readme", "--out", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["schema"] == report.SCHEMA and rep["environment"]["torch"]
    kinds: dict = {}
    for r in rep["results"]:
        kinds.setdefault((r["config"]["family"], r["config"]["layers"], r["mode"], r["batch"], r["time"]),
                         set()).add(suite._kind(r))
    # 2 families x 2 layer counts x 3 cases, each on PyTorch eager, onnxruntime fp32 and int8
    assert len(kinds) == 12 and all(v == {"torch", "ort-fp32", "ort-int8"} for v in kinds.values())
    # PyTorch is timed in a child process without an onnxruntime session (one makes its LSTM ~2x faster)
    assert {r.get("process") for r in rep["results"] if r["backend"] == "pytorch-eager"} == {
        "own (no onnxruntime session)"}
    ort_rows = [r for r in rep["results"] if r["backend"] == "onnxruntime"]
    assert all(r["api"].startswith("edgelstm.runtime ") for r in ort_rows)
    int8 = [r for r in ort_rows if r["name"].endswith("ort-int8")]
    # at hidden 8 int8 pays for no node (exporters/int8_plan.py): the suite's "int8" file is what
    # `quantize` writes by default, the fp32 graph, so it can never be slower or larger than fp32
    assert {r["precision"] for r in int8} == {"fp32"} and all(r["file_size_vs_baseline"] > 0 for r in int8)
    assert rep["targets"] == {}  # the target case (lstm 2x256) was not run
    block = suite.readme_block(rep)
    assert block.startswith(suite.README_BEGIN) and block.endswith(suite.README_END)
    assert "| gru | 2 | 8 | model | stream b1 t1 |" in block


@pytest.mark.parametrize("args,match", [(["--families", "lstm,rnn"], "unknown family"),
                                        (["--hidden", "64,x"], "not a comma-separated list"),
                                        (["--digits-run", "/no/such/run"], "run directory not found")],
                         ids=["family", "hidden", "digits-run"])
def test_suite_rejects_bad_options(suite, capsys, args, match):
    assert suite.main([*args, "--no-readme"]) == 2
    assert match in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_digits_run(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from edgelstm.training import TrainConfig, train_run

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("digits") / "run"
    cfg = TrainConfig(family="lstm", hidden_size=16, num_layers=1, epochs=2, seed=0)
    train_run("digits", cfg, d, progress=False)
    return d


def test_digits_accuracy_measures_fp32_and_int8_through_the_runtime(suite, tiny_digits_run, tmp_path):
    from edgelstm.checkpoint import load_run
    from edgelstm.data import load_dataset
    from edgelstm.training import evaluate

    out = suite.digits_accuracy(tiny_digits_run, tmp_path, None)
    model, rc = load_run(tiny_digits_run)
    bundle = load_dataset("digits", seed=rc.seed)
    torch_acc = evaluate(model, bundle, bundle.test)["accuracy"] * 100
    # the fp32 graph reproduces PyTorch's predictions (fp32 vs fp32 within 1e-5: no argmax flips
    # on 179 sequences unless two logits tie that closely)
    assert out["fp32_test_accuracy_pct"] == pytest.approx(torch_acc, abs=1e-9)
    assert out["test_sequences"] == len(bundle.test.y) and out["all_sequences"] == 1797
    assert 0 <= out["int8_test_accuracy_pct"] <= 100 and out["int8_fp32_agreement_all_pct"] > 50
    assert out["met"] == (abs(out["int8_minus_fp32_points"]) <= 0.5)
    assert out["int8_file_bytes"] < out["fp32_file_bytes"]


def test_digits_accuracy_rejects_other_runs(suite, tmp_path):
    torch = pytest.importorskip("torch")
    from edgelstm.training import TrainConfig, train_run

    torch.set_num_threads(1)
    run = tmp_path / "gru_run"
    train_run("digits", TrainConfig(family="gru", hidden_size=4, epochs=1, max_train=32), run, progress=False)
    with pytest.raises(UsageError, match="not a digits LSTM classifier run"):
        suite.digits_accuracy(run, tmp_path, None)


def test_targets_pick_the_target_case(suite):
    def row(kind, p50, **kw):
        backend = "pytorch-eager" if kind == "pytorch" else "onnxruntime"
        return {"name": f"lstm L2 H256 {kind}", "backend": backend, "mode": "stream", "batch": 1, "time": 1,
                "latency_s": {"p50": p50}, "file_bytes": kw.get("file_bytes"), "floor": kw.get("floor"),
                "x_floor": kw.get("x_floor"), "config": {"family": "lstm", "hidden": 256, "layers": 2, "graph": "model"}}

    rows = [row("pytorch", 400e-6), row("ort-fp32", 80e-6, file_bytes=1000, floor={"floor_s": 50e-6}, x_floor=1.6),
            row("ort-int8", 32e-6, file_bytes=250)]
    tg = suite.targets(rows)
    assert tg["fp32_vs_torch"] == pytest.approx(5.0) and tg["int8_vs_torch"] == pytest.approx(12.5)
    assert tg["int8_file_fraction"] == pytest.approx(0.25) and tg["floor_us"] == pytest.approx(50.0)
    np.testing.assert_allclose([tg["torch_p50_us"], tg["fp32_p50_us"], tg["int8_p50_us"]], [400, 80, 32])
