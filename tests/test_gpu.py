"""GPU paths. The provider selection logic is tested everywhere, with the available-providers list
under the test's control (``onnxruntime.get_available_providers`` as ``runtime/providers.py`` sees
it). The CUDA and TensorRT paths run for real where onnxruntime-gpu sees a GPU, and are skipped with
a reason elsewhere."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgelstm import runtime
from edgelstm.errors import ProviderUnavailableError
from edgelstm.runtime import providers as prov

sys.path.insert(0, str(Path(__file__).parent))

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
ACL, XNN, QNN, COREML = "ACLExecutionProvider", "XnnpackExecutionProvider", "QNNExecutionProvider", \
    "CoreMLExecutionProvider"

# ------------------------------------------------------------------------------ selection logic
GPU_BOX = [TRT, CUDA, CPU]
ARM_BOX = [ACL, XNN, CPU]


@pytest.fixture
def available(monkeypatch):
    """Set the providers this onnxruntime build 'has' for plan_providers' default lookup."""
    def set_(names):
        monkeypatch.setattr(prov.ort, "get_available_providers", lambda: list(names))
    return set_


@pytest.mark.parametrize("avail, device, chain, primary", [
    (GPU_BOX, "cuda", [CUDA, CPU], CUDA),
    (GPU_BOX, "tensorrt", [TRT, CUDA, CPU], TRT),
    (GPU_BOX, "auto", [CUDA, CPU], CUDA),              # TensorRT is never picked automatically
    ([CUDA, CPU], "auto", [CUDA, CPU], CUDA),
    ([CPU], "auto", [CPU], CPU),
    (ARM_BOX, "arm", [ACL, XNN, CPU], ACL),
    ([XNN, CPU], "arm", [XNN, CPU], XNN),
    ([QNN, CPU], "qnn", [QNN, CPU], QNN),
    ([COREML, CPU], "coreml", [COREML, CPU], COREML),
    (GPU_BOX, "cuda,cpu", [CUDA, CPU], CUDA),
    (GPU_BOX, [TRT, CPU], [TRT, CPU], TRT),             # provider names are used as given, in order
    (GPU_BOX, ["tensorrt"], [TRT, CUDA, CPU], TRT),     # device names in a list expand to their chain
], ids=["cuda", "tensorrt", "auto-skips-trt", "auto-cuda", "auto-cpu", "arm-acl", "arm-xnnpack", "qnn", "coreml",
        "comma-list", "provider-list", "device-in-list"])
def test_chains_when_available(available, recwarn, avail, device, chain, primary):
    available(avail)
    plan = runtime.plan_providers(device, fallback=False)
    assert plan.providers == chain and plan.primary == primary and plan.fell_back is False
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("avail, device, primary, chain", [
    ([CUDA, CPU], "tensorrt", TRT, [CUDA, CPU]),        # TensorRT missing: CUDA still before CPU
    ([CPU], "tensorrt", TRT, [CPU]),
    ([CPU], "cuda", CUDA, [CPU]),
    ([CPU], "qnn", QNN, [CPU]),
    ([CPU], "coreml", COREML, [CPU]),
    ([ACL, CPU], "cuda", CUDA, [CPU]),
], ids=["trt-to-cuda", "trt-to-cpu", "cuda-to-cpu", "qnn-to-cpu", "coreml-to-cpu", "cuda-on-arm-box"])
def test_fallback_warns_and_names_what_runs(available, avail, device, primary, chain):
    available(avail)
    with pytest.warns(RuntimeWarning, match=rf"{primary} is not available \(available: "
                                            rf"{_re_list(avail)}\); running on {_re_list(chain)}"):
        plan = runtime.plan_providers(device)
    assert plan.providers == chain and plan.fell_back is True and plan.primary == primary
    with pytest.raises(ProviderUnavailableError,
                       match=rf"device '{device}' \| {primary} is not available in this onnxruntime build; "
                             rf"expected one of the available providers {_re_list(avail)}, got {primary}"):
        runtime.plan_providers(device, fallback=False)


def _re_list(names):
    return "\\[" + ", ".join(f"'{n}'" for n in names) + "\\]"


def test_provider_list_error_names_the_list(available):
    available([CPU])
    with pytest.raises(ProviderUnavailableError, match=rf"providers \| {TRT} is not available"):
        runtime.plan_providers([TRT, CUDA], fallback=False)


def test_default_options_per_provider(available, monkeypatch, tmp_path):
    available([TRT, CUDA, QNN, CPU])
    monkeypatch.setenv("EDGELSTM_TRT_CACHE", str(tmp_path / "trt"))
    trt = runtime.plan_providers("tensorrt")
    opts = dict(zip(trt.providers, trt.options))
    assert opts[TRT]["trt_engine_cache_path"] == str(tmp_path / "trt") and opts[TRT]["trt_fp16_enable"] is True
    assert opts[CUDA] == {} and opts[CPU] == {}
    # caller options override the defaults, per provider
    trt32 = runtime.plan_providers("tensorrt", provider_options={TRT: {"trt_fp16_enable": False},
                                                                 CUDA: {"device_id": 0}})
    opts = dict(zip(trt32.providers, trt32.options))
    assert opts[TRT]["trt_fp16_enable"] is False and opts[TRT]["trt_engine_cache_enable"] is True
    assert opts[CUDA] == {"device_id": 0}
    qnn = runtime.plan_providers("qnn")
    assert qnn.options[0]["backend_path"].endswith(("libQnnHtp.so", "QnnHtp.dll"))


# ------------------------------------------------------------------------------ real GPU runs
HAS_CUDA_EP = CUDA in ort.get_available_providers()
HAS_TRT_EP = TRT in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(not HAS_CUDA_EP, reason="onnxruntime-gpu with CUDAExecutionProvider is not "
                                "installed here (CPU build): the CUDA path runs only where a GPU is seen")
needs_trt = pytest.mark.skipif(not HAS_TRT_EP, reason="this onnxruntime build has no TensorrtExecutionProvider")

# CUDA runs the same fp32 maths as the CPU in another summation order, and onnxruntime's CUDA
# provider may use TF32 tensor cores for the MatMul/Gemm parts (10-bit mantissa, ~5e-4 relative):
# tiny hidden sizes keep outputs O(1), so 2e-3 covers that with margin.
CUDA_TOL = 2e-3
# TensorRT runs with fp16 by default (edgelstm's TensorRT options): ~1e-3 relative per op over a
# few short recurrent steps of a tiny model stays under 2e-2.
TRT_FP16_TOL = 2e-2


def _usable(provider: str, tmp_path: Path) -> None:
    """Skip when the provider is compiled in but cannot start here (no GPU, missing CUDA libs)."""
    pytest.importorskip("onnx")  # the probe graph is built with onnx (the dev install has it)
    from graphs import build_add, save

    path = save(build_add(), tmp_path / "probe.onnx")
    try:
        sess = ort.InferenceSession(str(path), providers=[provider, CPU])
    except Exception as e:  # onnxruntime raises its own types; any of them means "not here"
        pytest.skip(f"{provider} is compiled in but cannot start here: {str(e).splitlines()[0][:200]}")
    if sess.get_providers()[0] != provider:
        pytest.skip(f"{provider} is compiled in but did not initialise here (no GPU visible?)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from tiny import make_tiny

    from edgelstm.exporters import export_model

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("gpu")
    out = {}
    for name in ("lstm-2x6-bi", "gru-1x4", "peephole-1x4", "attention-s2s-1x8"):
        export_model(make_tiny(name), d / f"{name}.onnx")
        out[name] = d / f"{name}.onnx"
    return out


def _x(batch=3, time=7, features=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, time, features)).astype(np.float32)


@needs_cuda
@pytest.mark.parametrize("name", ["lstm-2x6-bi", "gru-1x4", "peephole-1x4"])
def test_cuda_matches_cpu(exported, tmp_path, name):
    _usable(CUDA, tmp_path)
    gpu = runtime.load(exported[name], device="cuda", fallback=False)
    cpu = runtime.load(exported[name], device="cpu")
    assert gpu.providers[0] == CUDA and gpu.state_device == "cuda"
    x, lengths = _x(), [7, 4, 1]
    a, b = gpu.run(x, lengths=lengths), cpu.run(x, lengths=lengths)
    assert set(a.outputs) == set(b.outputs)
    for out in b.outputs:
        np.testing.assert_allclose(np.asarray(a[out]), b[out], atol=CUDA_TOL, rtol=CUDA_TOL, err_msg=out)
    for k in b.state:
        np.testing.assert_allclose(a.state[k], b.state[k], atol=CUDA_TOL, rtol=CUDA_TOL, err_msg=k)


@needs_cuda
def test_cuda_stream_keeps_state_on_device_and_matches_cpu(exported, tmp_path):
    _usable(CUDA, tmp_path)
    gpu = runtime.load(exported["gru-1x4"], device="cuda", fallback=False)
    cpu = runtime.load(exported["gru-1x4"], device="cpu")
    x = _x(batch=2)
    sg, sc = gpu.stream(batch=2), cpu.stream(batch=2)
    for t in range(x.shape[1]):
        og, oc = sg.step(x[:, t]), sc.step(x[:, t])
    name = cpu.outputs[0].name
    np.testing.assert_allclose(og[name], oc[name], atol=CUDA_TOL, rtol=CUDA_TOL)
    np.testing.assert_allclose(sg.state["h_in"], sc.state["h_in"], atol=CUDA_TOL, rtol=CUDA_TOL)


@needs_cuda
def test_cuda_seq2seq_generates_the_cpu_tokens(exported, tmp_path):
    _usable(CUDA, tmp_path)
    gpu = runtime.load(exported["attention-s2s-1x8"], device="cuda", fallback=False)
    cpu = runtime.load(exported["attention-s2s-1x8"], device="cpu")
    src = np.array([[3, 4, 5, 6], [7, 8, 0, 0]], dtype=np.int64)
    # greedy argmax over O(1) logits: a CUDA_TOL difference could only flip a near-tie, which these
    # seeded tiny weights do not have
    want = cpu.generate(src).tokens
    assert gpu.generate(src).tokens == want and any(want)


@needs_cuda
@pytest.mark.parametrize("tf32", ["1", "0"], ids=["tf32-on", "tf32-off"])
def test_cuda_verify_passes_a_faithful_model_with_and_without_tf32(exported, tmp_path, tf32):
    """Issue 12: the fp32 profile rejected what TF32 computes; each setting gets its own profile."""
    _usable(CUDA, tmp_path)
    from edgelstm.verify import verify

    r = verify(exported["gru-1x4"], devices=["cpu", "cuda"], steps=200, provider_options={CUDA: {"use_tf32": tf32}})
    assert r.passed, r.table()
    assert r.config["candidate_profiles"]["ort:cuda[gru-1x4.onnx]"] == ("tf32" if tf32 == "1" else "fp32")


@needs_cuda
def test_cuda_run_takes_and_returns_device_values(exported, tmp_path):
    _usable(CUDA, tmp_path)
    gpu = runtime.load(exported["gru-1x4"], device="cuda", fallback=False)
    cpu = runtime.load(exported["gru-1x4"], device="cpu")
    x = _x()
    r = gpu.run(ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0), output_device="cuda")
    name = cpu.outputs[0].name
    assert r[name].device_name() == "cuda"
    np.testing.assert_allclose(r[name].numpy(), cpu.run(x)[name], atol=CUDA_TOL, rtol=CUDA_TOL)


@needs_trt
def test_tensorrt_matches_cpu(exported, tmp_path):
    _usable(TRT, tmp_path)
    cache = tmp_path / "trt-cache"
    gpu = runtime.load(exported["lstm-2x6-bi"], device="tensorrt", fallback=False,
                       provider_options={TRT: {"trt_engine_cache_path": str(cache),
                                               "trt_timing_cache_path": str(cache)}})
    cpu = runtime.load(exported["lstm-2x6-bi"], device="cpu")
    assert gpu.providers[0] == TRT
    x, lengths = _x(), [7, 4, 1]
    a, b = gpu.run(x, lengths=lengths), cpu.run(x, lengths=lengths)
    name = cpu.outputs[0].name
    np.testing.assert_allclose(a[name], b[name], atol=TRT_FP16_TOL, rtol=TRT_FP16_TOL)
    # the engine cache lands where the caller said (edgelstm enables it by default)
    assert cache.is_dir() and os.listdir(cache)
