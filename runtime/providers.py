"""Execution providers: short device names -> onnxruntime provider preference chains.

``cpu``      CPUExecutionProvider.
``cuda``     CUDA, then CPU for the nodes CUDA cannot take.
``tensorrt`` TensorRT (engine cache + fp16 by default), then CUDA, then CPU.
``arm``      The CPU provider on an ARM machine: its MLAS kernels (NEON, KleidiAI where built)
             are the maintained path for LSTM/GRU on ARM. ACL and XNNPACK are added in front
             when this onnxruntime build has them; they have no recurrent kernels, so the
             recurrent nodes still run on CPU (see :attr:`Model.node_placement`).
``qnn``      Qualcomm QNN (HTP backend by default; it has an LSTM builder), then CPU.
``coreml``   CoreML, then CPU.  ``nnapi``: NNAPI (deprecated by Google), then CPU.
``auto``     TensorRT is never chosen automatically (engine builds take minutes); CUDA when
             available, else CPU.

A list of onnxruntime provider names is used as given (in order).

Standard library + onnxruntime only.
"""
from __future__ import annotations

import os
import platform
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import onnxruntime as ort

from edgelstm.errors import ProviderUnavailableError, UnknownChoiceError, UsageError


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"

DEVICES = ("auto", "cpu", "cuda", "tensorrt", "arm", "coreml", "nnapi", "qnn")

_CHAINS: dict[str, tuple[str, ...]] = {
    "cpu": (CPU,),
    "cuda": (CUDA, CPU),
    "tensorrt": (TRT, CUDA, CPU),
    "arm": ("ACLExecutionProvider", "XnnpackExecutionProvider", CPU),
    "qnn": ("QNNExecutionProvider", CPU),
    "coreml": ("CoreMLExecutionProvider", CPU),
    "nnapi": ("NnapiExecutionProvider", CPU),
}


def is_arm_machine() -> bool:
    return platform.machine().lower() in ("arm64", "aarch64", "armv7l", "armv8l", "arm")


def cpu_has_sme() -> bool:
    """True on an ARM CPU with SME (Scalable Matrix Extension), where onnxruntime's KleidiAI int8
    kernels quantize activations per row: int8 outputs then differ from x86 by quantization error.
    Linux: the ``sme`` flag in /proc/cpuinfo; macOS: ``sysctl hw.optional.arm.FEAT_SME``."""
    if not is_arm_machine():
        return False
    if sys.platform == "darwin":
        import subprocess
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_SME"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return False
        return out == "1"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.lower().startswith("features") and "sme" in line.split(":", 1)[-1].split()
                       for line in f)
    except OSError:
        return False


def _default_options(provider: str) -> dict[str, Any]:
    if provider == TRT:
        cache = os.environ.get("EDGELSTM_TRT_CACHE",
                               os.path.join(os.path.expanduser("~"), ".cache", "edgelstm", "trt"))
        return {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache, "trt_fp16_enable": True,
                "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}
    if provider == "QNNExecutionProvider":
        return {"backend_path": "QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so"}
    return {}


@dataclass
class ProviderPlan:
    """What to ask onnxruntime for, and what was asked for in the first place."""

    requested: tuple[str, ...]          # the full preference chain for the device
    providers: list[str]                # those available, in order
    options: list[dict[str, Any]] = field(default_factory=list)
    primary: str = CPU                  # the provider the caller wanted most
    fell_back: bool = False             # True when the primary is not in ``providers``


def plan_providers(device: str | Sequence[str] = "auto", *, fallback: bool = True,
                   provider_options: dict[str, dict[str, Any]] | None = None,
                   available: Sequence[str] | None = None) -> ProviderPlan:
    """Turn a device name (or a list of provider names) into the providers to request.

    ``provider_options`` maps provider name -> options and overrides the defaults (e.g. the
    TensorRT engine cache path). Raises :class:`ProviderUnavailableError` when the wanted
    provider is unavailable and ``fallback`` is False.
    """
    avail = list(ort.get_available_providers() if available is None else available)
    if not isinstance(device, str) and not (isinstance(device, (list, tuple))
                                            and all(isinstance(d, str) for d in device)):
        raise UnknownChoiceError("device", "wrong type", expected="a device name or a list of provider names",
                                 got=type(device).__name__)
    if isinstance(device, str):
        key = device.strip().lower()
        if "," in key:
            return plan_providers([d.strip() for d in device.split(",")], fallback=fallback,
                                  provider_options=provider_options, available=avail)
        if key == "auto":
            chain: tuple[str, ...] = (CUDA, CPU) if CUDA in avail else (CPU,)
        elif key in _CHAINS:
            chain = _CHAINS[key]
        elif device in avail or device.endswith("ExecutionProvider"):
            chain = (device,)
        else:
            raise UnknownChoiceError("device", "unknown device", expected=list(DEVICES) + ["an onnxruntime provider name"],
                                     got=device)
    else:
        names = [n.strip() for n in device if n.strip()]
        if not names:
            raise UnknownChoiceError("device", "empty provider list", expected="at least one provider name", got=names)
        expanded: list[str] = []
        for n in names:
            expanded += [p for p in _CHAINS.get(n.lower(), (n,)) if p not in expanded]
        chain = tuple(expanded)
        key = None
    primary = chain[0]
    if key == "arm":
        # the CPU provider is the ARM path only on an ARM machine
        primary = next((p for p in chain if p in avail and p != CPU), CPU)
        usable = is_arm_machine() or primary != CPU
    else:
        usable = primary in avail
    providers = [p for p in chain if p in avail]
    if not providers:
        providers = [CPU]
    if not usable:
        what = f"device {device!r}" if isinstance(device, str) else "providers"
        if not fallback:
            if key == "arm" and primary == CPU:
                raise ProviderUnavailableError(
                    what, "no ARM execution path here: this is not an ARM machine and no ARM provider "
                    "(ACL, XNNPACK) is in this onnxruntime build",
                    expected=f"an aarch64/armv7 machine or one of {[p for p in chain if p != CPU]}",
                    got=f"{platform.machine()} with providers {avail}")
            raise ProviderUnavailableError(
                what, f"{primary} is not available in this onnxruntime build",
                expected=f"one of the available providers {avail}", got=primary)
        msg = f"{primary} is not available (available: {avail}); running on {providers}"
        warnings.warn(msg, RuntimeWarning, stacklevel=3)  # one channel: the CLI shows it once, not twice
    opts = []
    for p in providers:
        o = dict(_default_options(p))
        o.update((provider_options or {}).get(p, {}))
        opts.append(o)
    return ProviderPlan(requested=chain, providers=providers, options=opts, primary=primary, fell_back=not usable)


def parse_provider_options(values: Sequence[str] | None,
                           option: str = "--provider-option") -> dict[str, dict[str, str]]:
    """``["cuda:use_tf32=0", "tensorrt:trt_fp16_enable=False"]`` -> ``{provider name: {key: value}}``.

    The part before ``:`` is a device name (``cuda``, ``tensorrt``, ``qnn``... : its first
    provider) or a full onnxruntime provider name; values stay strings (onnxruntime parses
    provider options from strings). A later value for the same key replaces an earlier one."""
    out: dict[str, dict[str, str]] = {}
    for raw in values or ():
        head, sep, kv = str(raw).partition(":")
        key, eq, value = kv.partition("=")
        if not sep or not eq or not head.strip() or not key.strip():
            raise UsageError(option, "malformed provider option", expected="DEVICE:KEY=VALUE, e.g. cuda:use_tf32=0",
                             got=raw)
        dev = head.strip()
        if dev.lower() in _CHAINS and dev.lower() != "arm":
            provider = _CHAINS[dev.lower()][0]
        elif dev.endswith("ExecutionProvider"):
            provider = dev
        else:
            known = sorted(k for k in _CHAINS if k != "arm")
            raise UnknownChoiceError(option, f"unknown device {dev!r}",
                                     expected=known + ["an onnxruntime provider name"], got=raw)
        out.setdefault(provider, {})[key.strip()] = value.strip()
    return out


def check_provider_options(options: dict[str, dict[str, Any]] | None, providers: Sequence[str],
                           option: str = "--provider-option") -> None:
    """Options for a provider that will not run are a usage error, not silently ignored."""
    for provider in options or {}:
        if provider not in providers:
            raise UsageError(option, f"options given for {provider}, which this run does not use",
                             expected=f"options for one of {list(providers)}", got=provider)


def ort_type_to_dtype(t: str) -> str:
    """``"tensor(float)"`` -> ``"float32"`` (numpy dtype names, as the manifest uses)."""
    inner = t[len("tensor("):-1] if t.startswith("tensor(") else t
    return {"float": "float32", "double": "float64", "float16": "float16", "int64": "int64",
            "int32": "int32", "int8": "int8", "uint8": "uint8", "bool": "bool", "int16": "int16",
            "string": "str"}.get(inner, inner)
