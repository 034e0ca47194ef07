"""GPU verification settings, tested without a GPU: the ``tf32`` tolerance profile (its arithmetic
and when it is chosen), ``--provider-option DEVICE:KEY=VALUE`` parsing and plumbing, and the
report naming the profile used. The CUDA runs themselves are in ``tests/test_gpu.py`` (skipped
where onnxruntime-gpu sees no GPU)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm.errors import UnknownChoiceError, UsageError
from edgelstm.runtime.providers import check_provider_options, parse_provider_options
from edgelstm.verify.result import VerifyResult
from edgelstm.verify.tolerance import PROFILES, TF32_UNIT_ROUNDOFF, select_profile, tf32_enabled

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
sys.path.insert(0, str(Path(__file__).parent))


# ------------------------------------------------------------------------------ the tf32 profile
def test_tf32_profile_arithmetic():
    # TF32 keeps 10 of fp32's 23 mantissa bits: round-to-nearest unit roundoff 2^-(10+1)
    assert TF32_UNIT_ROUNDOFF == 2.0 ** -11 == pytest.approx(4.8828125e-4)
    tf32 = PROFILES["tf32"]
    assert tf32.atol_scale == 4 * TF32_UNIT_ROUNDOFF == pytest.approx(1.953125e-3)
    # between fp32 (fp32 operands) and fp16 (fp16 operands *and* fp16 state and sums)
    assert PROFILES["fp32"].atol_scale < tf32.atol_scale < PROFILES["fp16"].atol_scale
    # the H200 measurement of issue 12 (h_out of a 2x256 LSTM, outputs in [-1, 1]) passes with margin,
    # and what fp32 allows would have rejected it
    assert 1.3e-4 * 10 < tf32.atol_scale and 1.3e-4 > PROFILES["fp32"].atol_scale
    assert tf32.min_snr_db is None and tf32.min_agreement == 1.0


@pytest.mark.parametrize("precision, provider, options, want", [
    ("fp32", CUDA, None, "tf32"),                     # onnxruntime-gpu's default: use_tf32=1
    ("fp32", CUDA, {"use_tf32": "1"}, "tf32"),
    ("fp32", CUDA, {"use_tf32": "0"}, "fp32"),
    ("fp32", CUDA, {"use_tf32": 0}, "fp32"),
    ("fp32", CUDA, {"use_tf32": "False"}, "fp32"),
    ("fp32", CUDA, {"device_id": "0"}, "tf32"),       # other options leave TF32 on
    ("fp32", CPU, None, "fp32"),
    ("fp32", TRT, None, "fp32"),
    ("fp16", CUDA, None, "fp16"),                     # a coarser file keeps its own profile
    ("int8-dynamic", CUDA, None, "int8"),
], ids=["cuda-default", "cuda-tf32-on", "cuda-tf32-off", "cuda-tf32-off-int", "cuda-tf32-false", "cuda-other-option",
        "cpu", "tensorrt", "fp16-on-cuda", "int8-on-cuda"])
def test_profile_selection(precision, provider, options, want):
    assert select_profile(precision, provider, options).precision == want


@pytest.mark.parametrize("options, on", [(None, True), ({}, True), ({"use_tf32": "1"}, True), ({"use_tf32": 1}, True),
                                         ({"use_tf32": "0"}, False), ({"use_tf32": " false "}, False)])
def test_tf32_enabled_follows_the_cuda_default(options, on):
    assert tf32_enabled(options) is on


# ------------------------------------------------------------------------------ --provider-option
@pytest.mark.parametrize("raw, want", [
    (["cuda:use_tf32=0"], {CUDA: {"use_tf32": "0"}}),
    (["CUDA:use_tf32=0", "cuda:device_id=1"], {CUDA: {"use_tf32": "0", "device_id": "1"}}),
    (["cuda:use_tf32=1", "cuda:use_tf32=0"], {CUDA: {"use_tf32": "0"}}),  # the last value wins
    (["tensorrt:trt_fp16_enable=False"], {TRT: {"trt_fp16_enable": "False"}}),
    ([f"{CUDA}:gpu_mem_limit=1024"], {CUDA: {"gpu_mem_limit": "1024"}}),
    (["cuda:cudnn_conv_algo_search=HEURISTIC"], {CUDA: {"cudnn_conv_algo_search": "HEURISTIC"}}),
    ([], {}),
], ids=["one", "two-keys", "last-wins", "tensorrt", "provider-name", "string-value", "none"])
def test_parse_provider_options(raw, want):
    assert parse_provider_options(raw) == want


@pytest.mark.parametrize("raw, error, match", [
    ("use_tf32=0", UsageError, "--provider-option | malformed provider option; expected DEVICE:KEY=VALUE, "
                               "e.g. cuda:use_tf32=0, got use_tf32=0"),
    ("cuda:use_tf32", UsageError, "malformed provider option; expected DEVICE:KEY=VALUE, e.g. cuda:use_tf32=0, "
                                  "got cuda:use_tf32"),
    ("cuda:=0", UsageError, "got cuda:=0"),
    ("gpu:use_tf32=0", UnknownChoiceError, "--provider-option | unknown device 'gpu'; expected ['coreml', 'cpu', "
                                           "'cuda', 'nnapi', 'qnn', 'tensorrt', 'an onnxruntime provider name'], "
                                           "got gpu:use_tf32=0"),
], ids=["no-device", "no-value", "no-key", "unknown-device"])
def test_parse_provider_options_rejects(raw, error, match):
    with pytest.raises(error, match=re.escape(match)):
        parse_provider_options([raw])


def test_options_for_a_provider_not_in_use_are_refused():
    check_provider_options({CUDA: {"use_tf32": "0"}}, [CUDA, CPU])
    with pytest.raises(UsageError, match=re.escape(
            f"--provider-option | options given for {CUDA}, which this run does not use; "
            f"expected options for one of ['{CPU}'], got {CUDA}")):
        check_provider_options({CUDA: {"use_tf32": "0"}}, [CPU])


# ------------------------------------------------------------------------------ the report
def test_table_names_the_profiles_when_one_differs():
    r = VerifyResult(model="m.onnx", reference="torch")
    r.config = {"candidate_profiles": {"ort:cpu[m]": "fp32", "ort:cuda[m]": "tf32"},
                "candidate_precisions": {"ort:cpu[m]": "fp32", "ort:cuda[m]": "fp32"}, "provider_options": {}}
    assert "tolerance profiles: ort:cpu[m]=fp32, ort:cuda[m]=tf32" in r.table().splitlines()
    r.config["candidate_profiles"]["ort:cuda[m]"] = "fp32"
    r.config["provider_options"] = {CUDA: {"use_tf32": "0"}}
    assert (f"tolerance profiles: ort:cpu[m]=fp32, ort:cuda[m]=fp32; provider options: {CUDA}: "
            "{'use_tf32': '0'}") in r.table().splitlines()
    r.config["provider_options"] = {}
    assert not any(line.startswith("tolerance profiles") for line in r.table().splitlines())


@pytest.fixture(scope="module")
def lstm_path(tmp_path_factory):
    pytest.importorskip("onnx")
    from graphs import RecurrentSpec, build_recurrent, save

    return save(build_recurrent(RecurrentSpec(cell="lstm", input_size=3, hidden=4)),
                tmp_path_factory.mktemp("opts") / "lstm.onnx")


def test_verify_reports_each_candidates_profile(lstm_path):
    from edgelstm.verify import verify

    r = verify(lstm_path, steps=0, checks=["outputs"], oracles=["numpy", "reference"])
    assert r.passed
    assert r.config["candidate_profiles"] == {"ort:cpu[lstm.onnx]": "fp32", "reference[lstm.onnx]": "fp32"}
    assert r.config["provider_options"] == {}
    assert all("(fp32 profile)" in c.rule for c in r.checks)
    with pytest.raises(UsageError, match=re.escape(f"options given for {CUDA}, which this run does not use")):
        verify(lstm_path, steps=0, checks=["outputs"], provider_options={CUDA: {"use_tf32": "0"}})


@pytest.mark.parametrize("command", ["verify", "run", "bench"])
def test_cli_refuses_cuda_options_on_a_cpu_run(lstm_path, tmp_path, command):
    """``--provider-option`` reaches the command; one for a provider the run does not use exits 2."""
    extra = {"verify": ["--steps", "0", "-q"], "bench": ["--runs", "2", "--quiet", "--no-floor"],
             "run": ["--input", str(tmp_path / "x.npy")]}[command]
    np.save(tmp_path / "x.npy", np.zeros((5, 3), np.float32))
    r = subprocess.run([sys.executable, "-m", "edgelstm", command, str(lstm_path), "--device", "cpu",
                        "--provider-option", "cuda:use_tf32=0", *extra], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"options given for {CUDA}, which this run does not use" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bench_records_the_provider_options(lstm_path, tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "edgelstm", "bench", str(lstm_path), "--device", "cpu",
                        "--provider-option", "cpu:arena_extend_strategy=kSameAsRequested", "--runs", "2",
                        "--warmup", "0", "--no-floor", "--quiet", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["settings"]["provider_options"] == {
        CPU: {"arena_extend_strategy": "kSameAsRequested"}}


def test_bench_torch_on_cuda_needs_a_cuda_torch(tmp_path, monkeypatch):
    """``edgelstm bench --device cuda --torch RUN`` times PyTorch on the GPU; a torch without CUDA
    is a usage error, not a silent CPU timing next to GPU rows."""
    import types

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA: the refusal cannot be observed here")
    from edgelstm.bench.torch_driver import bench_torch
    from edgelstm.models.config import ModelConfig
    from edgelstm.models.sequence import SequenceModel
    from edgelstm.bench import cases

    fake = types.ModuleType("edgelstm.checkpoint")
    cfg = ModelConfig(family="lstm", input_size=4, hidden_size=8, task="classify", num_outputs=3)
    fake.load_run = lambda run_dir: (SequenceModel(cfg), None)
    monkeypatch.setitem(sys.modules, "edgelstm.checkpoint", fake)
    settings = cases.Settings(runs=2, device="cuda")
    with pytest.raises(UsageError, match=re.escape(
            f"--torch | --device cuda times PyTorch on the GPU, but this torch has no CUDA; expected a CUDA build "
            f"of torch with a visible GPU, got torch {torch.__version__}, cuda available: False")):
        bench_torch(str(tmp_path), lambda case: {}, "model", [cases.Case("sequence", 1, 3)], settings)
