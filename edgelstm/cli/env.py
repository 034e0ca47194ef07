"""``edgelstm env``: what this installation and this machine offer.

Versions (read from package metadata, nothing heavy is imported), onnxruntime's execution
providers, the CPU's SIMD features that onnxruntime's kernels use (AVX2, AVX-512, VNNI, AMX on
x86; NEON dot product, i8mm, SVE, SME on ARM), which extras are installed and what each command
needs. Runs on a device install (numpy, onnxruntime, click).
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata

import click

from edgelstm import __version__
from edgelstm.cli import options
from edgelstm.extras import COMMAND_EXTRAS, EXTRAS, OPTION_EXTRAS, missing_modules

SCHEMA = "edgelstm.env/1"

# distributions whose versions matter (pip names), in the order shown
PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "click", "torch", "onnx", "safetensors", "tqdm", "matplotlib")

# /proc/cpuinfo flag -> what it is called here (flags absent from the file are reported False)
X86_FEATURES = {"avx2": "avx2", "fma": "fma", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni",
                "avx_vnni": "avx_vnni", "avx512_bf16": "avx512_bf16", "amx_int8": "amx_int8"}
ARM_FEATURES = {"asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16", "sve": "sve",
                "sve2": "sve2", "sme": "sme"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_features() -> dict[str, bool] | None:
    """SIMD features from /proc/cpuinfo (Linux) or SME via sysctl (macOS); None when unknown."""
    from edgelstm.runtime.providers import cpu_has_sme, is_arm_machine

    arm = is_arm_machine()
    names = ARM_FEATURES if arm else X86_FEATURES
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        if not arm:
            return None
    out = {name: flag in flags for flag, name in names.items()}
    if arm:
        out["sme"] = out["sme"] or cpu_has_sme()
    return out


def collect() -> dict:
    """The ``edgelstm.env/1`` document."""
    import onnxruntime as ort

    extras = {name: {"installed": not missing_modules(name), "missing": missing_modules(name),
                     "install": f'pip install "edgelstm[{name}]"'} for name in EXTRAS}
    commands = {}
    for name, needs in sorted(COMMAND_EXTRAS.items()):
        opts = {opt: extra for (cmd, opt), extra in OPTION_EXTRAS.items() if cmd == name}
        commands[name] = {"needs": list(needs), "ready": all(extras[e]["installed"] for e in needs),
                          "options": opts}
    return {
        "edgelstm": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "arch": platform.machine(),
        "executable": sys.executable,
        "packages": {p: _version(p) for p in PACKAGES},
        "onnxruntime": {"version": ort.__version__, "device": ort.get_device(),
                        "providers": list(ort.get_available_providers())},
        "cpu_features": cpu_features(),
        "extras": extras,
        "commands": commands,
    }


def _lines(env: dict) -> list[str]:
    out = [f"edgelstm {env['edgelstm']}, Python {env['python']} ({env['executable']})",
           f"platform   {env['platform']} ({env['arch']})"]
    pk = env["packages"]
    out.append("packages   " + ", ".join(f"{k} {v}" for k, v in pk.items() if v is not None)
               + "; not installed: " + (", ".join(k for k, v in pk.items() if v is None) or "none"))
    ort = env["onnxruntime"]
    out.append(f"providers  {', '.join(ort['providers'])} (onnxruntime {ort['version']}, {ort['device']})")
    feats = env["cpu_features"]
    out.append("cpu        " + ("unknown" if feats is None else
                                ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in feats.items())))
    out.append("extras     " + ", ".join(
        f"[{k}] {'installed' if v['installed'] else 'missing ' + '+'.join(v['missing'])}"
        for k, v in env["extras"].items()))
    out.append("commands")
    for name, c in env["commands"].items():
        needs = ", ".join(f"[{e}]" for e in c["needs"]) or "the runtime only"
        opts = "".join(f"; {o} needs [{e}]" for o, e in c["options"].items())
        out.append(f"  {name:<13} {'ready  ' if c['ready'] else 'MISSING'} needs {needs}{opts}")
    return out


@click.command("env")
@options.json_out
def env_command(json_out):
    """Versions, providers, CPU features, installed extras and what each command needs."""
    env = collect()
    if json_out is not None:
        options.write_json(json_out, SCHEMA, env)
        if json_out == "-":
            return 0
    for line in _lines(env):
        click.echo(line)
    return 0


commands = {"env": env_command}
