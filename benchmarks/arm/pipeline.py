"""Make every family's fp32 and int8 models on x86 through the product's CLI.

``edgelstm train`` (tiny: a few seconds each) -> ``edgelstm export`` -> ``edgelstm quantize
--mode int8-dynamic``. Layout: ``OUT/fp32/<family>.onnx`` and ``OUT/int8/<family>.onnx`` (a
seq2seq pair as ``<family>.encoder.onnx`` + ``<family>.decoder_step.onnx`` in each folder, so
the manifests' ``companions`` resolve in both).

The result is cached under the ARM cache, keyed by a hash of the exporter / training sources and
of the recipe below: a second ``make test-arm`` with unchanged sources reuses the models; any
change to ``edgelstm/`` or ``exporters/`` makes them again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger("edgelstm.arm")
REPO = Path(__file__).resolve().parents[2]

# family, dataset, extra train options: tiny and fast, but 2 layers where it adds coverage
RECIPE = (
    ("lstm", "digits", ("--layers", "2", "--hidden", "16")),
    ("peephole", "sine", ("--hidden", "16")),
    ("gru", "sine", ("--layers", "2", "--hidden", "16")),
    ("attention", "dates", ("--hidden", "16")),
)
TRAIN_COMMON = ("--epochs", "1", "--seed", "0", "--threads", "1", "--quiet")


class PipelineError(RuntimeError):
    """A CLI step failed on x86 (the check cannot run without its models)."""


def sources_key() -> str:
    h = hashlib.sha256(repr((RECIPE, TRAIN_COMMON)).encode())
    for top in ("edgelstm", "exporters", "pyproject.toml"):
        root = REPO / top
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                     and "__pycache__" not in p.parts)
        for p in files:
            h.update(str(p.relative_to(REPO)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cli(host_python: str, args: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    p = subprocess.run([host_python, "-m", "edgelstm", *args], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=600)
    log.debug("edgelstm %s: %.1f s", " ".join(args), time.perf_counter() - t0)
    if p.returncode != 0:
        raise PipelineError(f"edgelstm {' '.join(args)} | exit {p.returncode}: "
                            f"{(p.stderr or p.stdout).strip().splitlines()[-1:]}")


def _decoder_calibration(encoder: Path, out: Path, n: int = 32) -> Path:
    """Decoder-step inputs for the first step of ``n`` random in-vocabulary sources."""
    import numpy as np
    import onnxruntime as ort

    from models_x86 import read_manifest
    man = read_manifest(encoder) or {}
    vocab = len(man.get("vocab") or []) or 16
    low = 1 + max((man.get("special_tokens") or {"eos": 2}).values())
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, n).astype(np.int32)
    src = np.zeros((n, int(lengths.max())), np.int64)
    for b, k in enumerate(lengths):
        src[b, :k] = rng.integers(low, max(low + 1, vocab), k)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(encoder), so, providers=["CPUExecutionProvider"])
    memory, h, c = sess.run(["memory", "h_out", "c_out"], {"src": src, "src_lengths": lengths})
    bos = int((man.get("special_tokens") or {}).get("bos", 1))
    # The state inputs are left out: the calibration reader takes every array as batch-first, and
    # h/c are [layers, batch, hidden]; quantize defaults them to zeros.
    np.savez(out, token=np.full(n, bos, np.int64), memory=memory, src_lengths=lengths)
    return out


def build_pipeline_models(out: Path, host_python: str, cache: Path | None = None) -> tuple[Path, dict]:
    """Fill ``out`` with ``fp32/`` and ``int8/`` models of every family. Returns ``(out, errors)``,
    errors mapping (family, precision) -> the failed CLI step (those models are missing)."""
    errors: dict[tuple[str, str], str] = {}
    key = sources_key()
    cached = (cache / f"models-{key}") if cache else None
    if cached is not None and (cached / ".ok").exists():
        log.info("models: cached %s (sources unchanged)", cached)
        shutil.copytree(cached, out, dirs_exist_ok=True)
        return out, errors
    work = out.parent / (out.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    (work / "runs").mkdir(parents=True)
    (out / "fp32").mkdir(parents=True, exist_ok=True)
    (out / "int8").mkdir(parents=True, exist_ok=True)
    for family, dataset, extra in RECIPE:
        t0 = time.perf_counter()
        run = work / "runs" / family
        fp32 = out / "fp32" / f"{family}.onnx"
        try:
            _cli(host_python, ["train", "--family", family, "--dataset", dataset, "--out", str(run), *extra,
                               *TRAIN_COMMON], work)
            _cli(host_python, ["export", str(run), "-o", str(fp32)], work)
        except PipelineError as e:  # the family's rows fail; the other families still run
            errors[(family, "fp32")] = errors[(family, "int8-dynamic")] = str(e)
            log.error("models: %s", e)
            continue
        try:
            if fp32.exists():
                _cli(host_python, ["quantize", str(fp32), "-o", str(out / "int8" / fp32.name), "--mode",
                                   "int8-dynamic", "--force-int8", "--threads", "1", "--samples", "32"], work)
            else:  # seq2seq: OUT.encoder.onnx + OUT.decoder_step.onnx, each quantized
                calib = _decoder_calibration(out / "fp32" / f"{family}.encoder.onnx",
                                             work / f"{family}.decoder_calib.npz")
                for role in ("encoder", "decoder_step"):
                    src = out / "fp32" / f"{family}.{role}.onnx"
                    # the decoder step's inputs (memory, state) cannot be made up by `quantize`: give
                    # it real ones, from the fp32 encoder (used to measure the quantization error only)
                    extra_args = ["--calibration", str(calib)] if role == "decoder_step" else []
                    _cli(host_python, ["quantize", str(src), "-o", str(out / "int8" / src.name), "--mode",
                                       "int8-dynamic", "--force-int8", "--threads", "1", "--samples", "32", *extra_args],
                         work)
        except PipelineError as e:
            errors[(family, "int8-dynamic")] = str(e)
            log.error("models: %s", e)
            for partial in (out / "int8").glob(f"{family}.*"):
                partial.unlink()
            continue
        log.info("models: %s (%s) trained, exported, quantized in %.1f s", family, dataset, time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    if cached is not None and not errors:  # only a complete set is cached
        for old in cache.glob("models-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = cache / f".models-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out, tmp)
        (tmp / ".ok").touch()
        os.replace(tmp, cached)
    return out, errors
