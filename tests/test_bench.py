"""``edgelstm bench`` / ``bench-report`` and the benchmark package (edgelstm.bench).

Tiny graphs from tests/graphs.py, a handful of timed runs: these tests check options, the JSON
and CSV schema, the statistics and the floor's bookkeeping, never speed.
"""
from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgelstm.cli import cli
from edgelstm.errors import CheckpointError, InputError, ManifestError, ModelFileError, UnknownChoiceError, UsageError
from edgelstm.bench import cases, drivers, feeds, floor, measure as timing, report
from graphs import RecurrentSpec, Seq2SeqSpec, build_recurrent, save, save_seq2seq

RESULT_KEYS = {"name", "backend", "model", "precision", "family", "graph", "mode", "batch", "time", "threads",
               "device", "providers", "file_bytes", "parameters", "weight_bytes", "session_create_s",
               "first_inference_s", "first_call_s", "runs", "warmup", "latency_s", "steps_per_s",
               "sequences_per_s", "frame_rate_hz", "rtf", "rss_peak_mb", "rss_delta_mb", "floor", "x_floor",
               "baseline", "speedup_vs_baseline", "file_size_vs_baseline", "speedup_vs_torch"}
STAT_KEYS = {"n", "min", "p50", "p90", "p99", "max", "mean", "std", "jitter"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    lstm = save(build_recurrent(RecurrentSpec(cell="lstm", layers=2, input_size=4, hidden=8, classes=3,
                                              manifest_overrides={"frame_rate_hz": 100.0})), d / "lstm.onnx")
    gru = save(build_recurrent(RecurrentSpec(cell="gru", input_size=4, hidden=8, classes=3)), d / "gru.onnx")
    bidir = save(build_recurrent(RecurrentSpec(cell="lstm", directions=2, input_size=4, hidden=8)), d / "bidir.onnx")
    enc, dec = save_seq2seq(Seq2SeqSpec(), d)
    return {"lstm": lstm, "gru": gru, "bidir": bidir, "enc": enc, "dec": dec, "dir": d}


def _bench(args):
    res = CliRunner().invoke(cli, ["bench", "--quiet", "--warmup", "1", *map(str, args)])
    return res


# ------------------------------------------------------------------------------------- statistics
def test_latency_stats_percentiles():
    s = timing.LatencyStats.from_samples(np.arange(1, 101, dtype=float))
    assert (s.n, s.min, s.max) == (100, 1.0, 100.0)
    # numpy's linear interpolation between order statistics: p50 of 1..100 is 50.5
    assert s.p50 == pytest.approx(50.5) and s.p90 == pytest.approx(90.1) and s.p99 == pytest.approx(99.01)
    assert s.jitter == pytest.approx(s.p99 - s.p50)


@pytest.mark.parametrize("samples,match", [([], "need at least one timing sample"),
                                           ([1.0, float("nan")], "finite and non-negative")],
                         ids=["empty", "nan"])
def test_latency_stats_rejects(samples, match):
    with pytest.raises(UsageError, match=match):
        timing.LatencyStats.from_samples(samples)


def test_measure_counts_runs_and_warmup():
    calls = []
    out = timing.measure(lambda: calls.append(1), warmup=3, runs=7)
    assert len(out) == 7 and len(calls) == 10 and np.all(out >= 0)


def test_measure_duration_has_minimum_runs():
    out = timing.measure(lambda: None, warmup=0, runs=None, duration=1e-6, min_runs=5)
    assert len(out) >= 5


@pytest.mark.parametrize("kw,match", [(dict(warmup=-1), "--warmup"), (dict(runs=0), "--runs"),
                                      (dict(runs=None, duration=-1.0), "--duration")],
                         ids=["warmup", "runs", "duration"])
def test_measure_rejects_bad_counts(kw, match):
    with pytest.raises(UsageError, match=match):
        timing.measure(lambda: None, **kw)


@pytest.mark.parametrize("mode,batch,time,match", [("burst", 1, 1, "unknown benchmark mode"),
                                                   ("stream", 0, 1, "batch size must be at least 1"),
                                                   ("sequence", 1, 0, "time length must be at least 1")],
                         ids=["mode", "batch", "time"])
def test_case_rejects(mode, batch, time, match):
    with pytest.raises(UsageError, match=match):
        cases.Case(mode, batch, time)


# ------------------------------------------------------------------------------------- graph facts
def test_graph_facts_counts_parameters(models):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(models["lstm"]))
    expected = sum(numpy_helper.to_array(t).size for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    facts = floor.file_facts(models["lstm"])
    assert facts.parameters == expected
    assert facts.weight_bytes == 4 * expected
    assert [n.op for n in facts.nodes].count("LSTM") == 2


def test_graph_facts_rejects_non_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    with pytest.raises(ModelFileError, match="not a readable ONNX model"):
        floor.file_facts(bad)


@pytest.mark.parametrize("time,expected", [
    # one step: [x, h] @ [W; R] per layer (layer 1: 4+8 inputs, layer 2: 8+8), then the head once
    (1, [(1, 12, 32, 1), (1, 16, 32, 1), (1, 8, 3, 1)]),
    # a sequence: x @ W batched over time, then h @ R of all steps as one product (a lower bound), per layer
    (5, [(5, 4, 32, 1), (5, 8, 32, 1), (5, 8, 32, 1), (5, 8, 32, 1), (1, 8, 3, 1)]),
], ids=["step", "sequence"])
def test_floor_products_follow_the_recurrence(models, time, expected):
    prods = floor.floor_products(floor.file_facts(models["lstm"]), batch=1, time_steps=time, per_step_head=False)
    assert [(p.rows, p.k, p.n, p.repeat) for p in prods] == expected


# ------------------------------------------------------------------------------------- bench
def test_bench_json_schema(models, tmp_path):
    out, csv_out = tmp_path / "r.json", tmp_path / "r.csv"
    res = _bench([models["lstm"], models["gru"], "--threads", "1", "--batch", "1,2", "--mode", "stream,sequence",
                  "--time", "1,4", "--runs", "3", "--json", out, "--csv", csv_out])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["schema"] == report.SCHEMA
    env = rep["environment"]
    assert {"cpu", "cores", "onnxruntime", "providers", "threads", "machine"} <= set(env)
    assert env["threads"] == 1 and env["providers"] == ["CPUExecutionProvider"]
    results = rep["results"]
    assert len(results) == 2 * 2 * 2 * 2  # models x batches x modes x times
    for r in results:
        assert RESULT_KEYS <= set(r), RESULT_KEYS - set(r)
        assert STAT_KEYS <= set(r["latency_s"])
        lat = r["latency_s"]
        assert lat["n"] == 3 and lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
        assert r["steps_per_s"] == pytest.approx(r["batch"] * r["time"] / lat["p50"])
        assert (r["sequences_per_s"] is None) == (r["mode"] == "stream")
        assert r["floor"]["floor_s"] > 0 and r["x_floor"] == pytest.approx(lat["p50"] / r["floor"]["floor_s"])
        assert r["baseline"] == "lstm"
    lstm = next(r for r in results if r["name"] == "lstm")
    # frame_rate_hz from the manifest: rtf = processing time / signal time (time steps / 100 Hz)
    assert lstm["rtf"] == pytest.approx(lstm["latency_s"]["p50"] * 100.0 / lstm["time"])
    gru = next(r for r in results if r["name"] == "gru")
    assert gru["rtf"] is None and gru["family"] == "gru"
    assert gru["file_size_vs_baseline"] == pytest.approx(models["gru"].stat().st_size / models["lstm"].stat().st_size)
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text())))
    assert len(rows) == len(results) and list(rows[0]) == report.CSV_COLUMNS
    assert "| lstm | onnxruntime | fp32 | stream | 1 | 1 | 1 |" in res.output


def test_bench_duration_and_plot(models, tmp_path):
    png = tmp_path / "p.png"
    res = _bench([models["lstm"], "--duration", "0.01", "--no-floor", "--plot", png, "--json", tmp_path / "r.json"])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert r["floor"] is None and r["latency_s"]["n"] >= 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_seq2seq_graphs(models, tmp_path):
    out = tmp_path / "s.json"
    res = _bench([models["dec"], "--time", "6", "--runs", "3", "--json", out])
    assert res.exit_code == 0, res.output
    res = _bench([models["enc"], "--mode", "sequence", "--time", "6", "--runs", "3", "--json", tmp_path / "e.json"])
    assert res.exit_code == 0, res.output
    dec = json.loads(out.read_text())["results"][0]
    enc = json.loads((tmp_path / "e.json").read_text())["results"][0]
    assert dec["graph"] == "decoder_step" and dec["steps_per_s"] == pytest.approx(1 / dec["latency_s"]["p50"])
    assert enc["graph"] == "encoder" and enc["sequences_per_s"] == pytest.approx(1 / enc["latency_s"]["p50"])


def test_bench_threads_zero_is_onnxruntimes_default(models, tmp_path):
    """--threads 0 means onnxruntime's default on every command (bench included)."""
    out = tmp_path / "r.json"
    res = _bench([models["lstm"], "--threads", "0", "--runs", "3", "--no-floor", "--json", out])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["settings"]["threads"] is None


@pytest.mark.parametrize("args,code,match", [
    (["--batch", "0"], 2, r"--batch \| values must be positive integers"),
    (["--batch", "a,b"], 2, r"--batch \| not a comma-separated list of integers"),
    (["--mode", "burst"], 2, r"--mode \| unknown benchmark mode"),
    (["--runs", "3", "--duration", "1"], 2, r"give one of them, not both"),
    (["--device", "cuda"], 10, r"CUDAExecutionProvider is not available"),
    (["--threads", "-1"], 2, r"--threads \| must be >= 0 \(0 = onnxruntime's default\)"),
], ids=["batch-zero", "batch-text", "mode", "runs-and-duration", "device", "threads"])
def test_bench_error_lines(models, args, code, match, capsys):
    from edgelstm.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quiet", "--runs", "2", str(models["lstm"]), *args])
    assert exc.value.code == code
    assert re.search(match, capsys.readouterr().err)


def test_bench_stream_needs_state(models, tmp_path):
    with pytest.raises(UsageError, match=r"s2s.encoder.onnx --mode stream \| model has no state inputs to carry"):
        drivers.bench_onnx(models["enc"], [cases.Case("stream", 1, 1)], cases.Settings(runs=2, warmup=0))
    with pytest.raises(UsageError, match=r"manifest marks the model as not streamable"):
        drivers.bench_onnx(models["bidir"], [cases.Case("stream", 1, 1)], cases.Settings(runs=2, warmup=0))


def test_bench_missing_model(tmp_path):
    with pytest.raises(ModelFileError, match=r"model file not found"):
        drivers.bench_onnx(tmp_path / "nope.onnx", [cases.Case("stream", 1, 1)], cases.Settings(runs=2))


# ------------------------------------------------------------------------------------- bench-report
def test_bench_report_merges_machines(models, tmp_path):
    a = tmp_path / "a.json"
    assert _bench([models["gru"], "--runs", "2", "--no-floor", "--json", a]).exit_code == 0
    rep = json.loads(a.read_text())
    rep["environment"]["machine"] = "board-b"
    b = tmp_path / "b.json"
    b.write_text(json.dumps(rep))
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    res = CliRunner().invoke(cli, ["bench-report", str(a), str(b), "--out", str(md), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    text = md.read_text()
    assert "## Machines" in text and "| board-b |" in text
    assert text.count("| gru | onnxruntime | fp32 | stream |") == 2
    assert png.stat().st_size > 1000


def test_bench_report_labels_digest_key_and_noise(models, tmp_path):
    """Two runs of one model under different file names on one host: --label tells them apart,
    the graph digest lines the copies up, and a busy machine is flagged."""
    import shutil

    from edgelstm.bench.report import NOISY_P99_OVER_P50, noise_warnings

    copy = tmp_path / "renamed.onnx"
    shutil.copy(models["gru"], copy)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for model, out in ((models["gru"], a), (copy, b)):
        assert _bench([model, "--runs", "2", "--no-floor", "--json", out]).exit_code == 0
    res = CliRunner().invoke(cli, ["bench-report", str(a), str(b), "--label", "laptop", "--label", "pi4",
                                   "--json", "-"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    assert [(r["machine"], r["name"]) for r in rows] == [("laptop", "gru"), ("pi4", "renamed")]
    assert rows[0]["model_key"] == rows[1]["model_key"] and len(rows[0]["model_key"]) == 12
    bad = CliRunner().invoke(cli, ["bench-report", str(a), str(b), "--label", "laptop"], standalone_mode=False)
    assert isinstance(bad.exception, UsageError) and "one label per input file; expected 2, got 1" in str(bad.exception)

    rep = json.loads(a.read_text())
    rep["environment"].update(load_average=[3.5, 3.0, 2.0], usable_cores=2, machine="busy")
    lat = rep["results"][0]["latency_s"]
    lat["p99"] = lat["p50"] * (NOISY_P99_OVER_P50 + 13)
    assert noise_warnings([rep]) == [
        "warning: busy: load average 3.5 on 2 usable cores while measuring; rerun on a quiet machine before comparing",
        f"warning: busy: p99 above {NOISY_P99_OVER_P50:g}x p50 in 1 case(s) (worst 18x: gru stream b1 t1); "
        "the machine was busy"]
    rep["environment"]["load_average"] = [0.5, 0.5, 0.5]
    rep["results"][0]["latency_s"]["p99"] = lat["p50"] * 2
    assert noise_warnings([rep]) == []


@pytest.mark.parametrize("content,match", [
    ('{"schema": "other/1"}', r"not an edgelstm benchmark result; expected schema 'edgelstm.bench/1', got other/1"),
    ("[1, 2", r"benchmark file is not valid JSON"),
    ('{"schema": "edgelstm.bench/1", "results": []}', r"benchmark file lacks 'environment'"),
], ids=["schema", "json", "missing-environment"])
def test_load_report_rejects(tmp_path, content, match):
    p = tmp_path / "x.json"
    p.write_text(content)
    with pytest.raises(ManifestError, match=match):
        report.load_report(p)


# ------------------------------------------------------------------------------------- torch-free
def test_bench_core_imports_no_torch_or_onnx():
    code = ("import sys, edgelstm.bench.suite, edgelstm.bench.report, edgelstm.bench.plot, "
            "edgelstm.bench.torch_driver, edgelstm.cli.bench; "
            "bad = [m for m in ('torch', 'onnx') if m in sys.modules]; sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_build_feeds_follow_naming(models):
    import onnxruntime as ort

    from edgelstm.runtime.integrity import check_model_file

    sess = ort.InferenceSession(str(models["dec"]), providers=["CPUExecutionProvider"])
    m = check_model_file(models["dec"])[2]
    fed = feeds.build_feeds(sess, m, batch=2, time_steps=5)
    assert fed["token"].tolist() == [1, 1] and fed["src_lengths"].tolist() == [5, 5]
    assert fed["memory"].shape == (2, 5, 8) and fed["h_in"].shape == (1, 2, 8)


def test_bench_torch_side_by_side(models, tmp_path, monkeypatch):
    """--torch RUN_DIR times PyTorch eager on the same cases; the run directory loader is the
    project's ``edgelstm.checkpoint.load_run``, replaced here by one returning a fresh model."""
    import types

    torch = pytest.importorskip("torch")
    from edgelstm.models.config import ModelConfig
    from edgelstm.models.sequence import SequenceModel

    fake = types.ModuleType("edgelstm.checkpoint")
    cfg = ModelConfig(family="lstm", input_size=4, hidden_size=8, num_layers=2, task="classify", num_outputs=3)
    fake.load_run = lambda run_dir: (SequenceModel(cfg), None)
    monkeypatch.setitem(sys.modules, "edgelstm.checkpoint", fake)
    threads = torch.get_num_threads()
    out = tmp_path / "t.json"
    res = _bench([models["lstm"], "--torch", tmp_path, "--threads", "1", "--mode", "stream,sequence", "--time", "3",
                  "--runs", "3", "--json", out])
    torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["results"]
    torch_rows = [r for r in rows if r["backend"] == "pytorch-eager"]
    assert [(r["mode"], r["time"]) for r in torch_rows] == [("stream", 3), ("sequence", 3)]
    for r in rows:  # the ratio is PyTorch p50 / this p50, so PyTorch itself is exactly 1
        t = next(x for x in torch_rows if x["mode"] == r["mode"])
        assert r["speedup_vs_torch"] == pytest.approx(t["latency_s"]["p50"] / r["latency_s"]["p50"])
    assert torch_rows[0]["speedup_vs_torch"] == pytest.approx(1.0)


def test_bench_torch_run_dir_checked_before_timing(models, tmp_path):
    """A wrong --torch directory fails at once, not after the ONNX models were timed."""
    res = _bench([models["gru"], "--runs", "200", "--torch", str(tmp_path / "nope")])
    assert res.exit_code != 0 and isinstance(res.exception, CheckpointError)
    assert str(res.exception).startswith(f"{tmp_path / 'nope'} | run directory not found")
    assert "p50" not in res.output  # nothing was measured


# ------------------------------------------------------------------------------------- the library call
def test_run_bench_is_what_the_command_runs(models):
    """The demo's path: BenchOptions -> run_bench -> the report, with no CLI in between."""
    from edgelstm.bench.suite import BenchOptions, run_bench

    opts = BenchOptions(models=(str(models["lstm"]), str(models["gru"])), threads=1, modes="stream,sequence",
                        times="1,3", runs=2, warmup=0, no_floor=True, quiet=True)
    rep = run_bench(opts)
    assert rep["schema"] == report.SCHEMA and rep["settings"]["runs"] == 2 and rep["settings"]["floor"] is False
    cases_seen = [(r["name"], r["mode"], r["time"]) for r in rep["results"]]
    assert cases_seen == [(n, m, t) for n in ("lstm", "gru") for m in ("stream", "sequence") for t in (1, 3)]
    assert all(r["baseline"] == "lstm" for r in rep["results"])


@pytest.mark.parametrize("kw,want", [
    (dict(), [("stream", 1, 1)]),
    (dict(modes="sequence", batch="2,4"), [("sequence", 2, 256), ("sequence", 4, 256)]),
    (dict(modes="stream, sequence", times="8"), [("stream", 1, 8), ("sequence", 1, 8)]),
], ids=["defaults", "sequence-batches", "both-modes-one-time"])
def test_bench_options_cases(kw, want):
    from edgelstm.bench.suite import BenchOptions

    assert [(c.mode, c.batch, c.time) for c in BenchOptions(models=("m.onnx",), **kw).cases()] == want


@pytest.mark.parametrize("kw,match", [
    (dict(modes=" , "), "--mode | no mode given"),
    (dict(batch="70000"), "--batch | value too large"),
    (dict(batch="8192", times="16384"), "--batch/--time | batch x time too large for one call"),
], ids=["no-mode", "batch-limit", "elements-limit"])
def test_bench_options_refuse(kw, match):
    from edgelstm.bench.suite import BenchOptions

    with pytest.raises(UsageError, match=re.escape(match)):
        BenchOptions(models=("m.onnx",), **kw).cases()


@pytest.mark.parametrize("mode,time", [("stream", 1), ("sequence", 3)], ids=["stream-step", "sequence"])
def test_paired_ratio_alternates_blocks_of_both_files(models, mode, time, monkeypatch):
    """The suite's int8-vs-fp32 comparison: both files' calls run in ABBA blocks of the same
    length, and the ratio is the median of the per-block ratios (no speed is asserted)."""
    calls = []
    real = drivers._runtime_call

    def counting(loaded, model, role, case, rng):
        call, api, steps = real(loaded, model, role, case, rng)
        tag = model.path.name

        def counted():
            calls.append(tag)
            return call()
        return counted, api, steps

    monkeypatch.setattr(drivers, "_runtime_call", counting)
    settings = cases.Settings(warmup=0, runs=None, duration=0.01, threads=1, device="cpu")
    got = drivers.paired_ratio(models["lstm"], models["gru"], cases.Case(mode, 1, time), settings,
                               blocks=3, block_s=0.002)
    n = got["calls_per_block"]
    assert got["blocks"] == 3 and n >= 1
    assert got["ratio_range"][0] <= got["ratio"] <= got["ratio_range"][1]
    assert got["base_s"] > 0 and got["other_s"] > 0
    # one untimed first call each, one calibration call, then ABBA / BAAB blocks of n calls
    timed = calls[3:]
    blocks = [timed[i:i + n] for i in range(0, len(timed), n)]
    abba, baab = ["lstm.onnx", "gru.onnx", "gru.onnx", "lstm.onnx"], ["gru.onnx", "lstm.onnx", "lstm.onnx", "gru.onnx"]
    assert [b[0] for b in blocks] == abba + baab + abba
    assert all(len(set(b)) == 1 and len(b) == n for b in blocks)
