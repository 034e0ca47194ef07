"""The optional dependency groups (``pip install "edgelstm[NAME]"``) and what each command needs.

Standard library only: the CLI consults it on a device install (numpy, onnxruntime, click) before
importing anything heavy, so a missing extra ends in one line naming it, never a traceback.
The groups mirror ``[project.optional-dependencies]`` in pyproject.toml.
"""
from __future__ import annotations

import importlib.util

from edgelstm.errors import MissingExtraError

# extra -> the import names it provides that edgelstm needs (pip names in pyproject.toml)
EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "onnx", "safetensors"),
    "train": ("torch", "safetensors"),
    "quantize": ("onnx",),
    "verify": ("onnx",),
    "plot": ("matplotlib",),
}

# command -> the extras it cannot run without (options needing more check for themselves:
# `bench --torch` needs export, every `--plot` needs plot, `verify --reference/--model` needs export)
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "models": ("train",),
    "datasets": (),
    "train": ("train",),
    "demo": ("export", "train"),
    "export": ("export",),
    "quantize": ("quantize",),
    "run": (),
    "verify": ("verify",),
    "bench": (),
    "bench-report": (),
    "inspect": (),
    "env": (),
}

# options that need an extra of their own: (command, option) -> extra
OPTION_EXTRAS: dict[tuple[str, str], str] = {
    ("bench", "--torch"): "export",
    ("bench", "--plot"): "plot",
    ("bench-report", "--plot"): "plot",
    ("verify", "--plot"): "plot",
    ("verify", "--reference"): "export",
    ("verify", "--model"): "export",
}


def module_available(name: str) -> bool:
    """True when ``import name`` would find the module (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a blocked or broken import counts as missing
        return False


def missing_modules(extra: str) -> list[str]:
    return [m for m in EXTRAS[extra] if not module_available(m)]


def installed(extra: str) -> bool:
    return not missing_modules(extra)


def require(extras: tuple[str, ...] | str, what: str = "this command") -> None:
    """Raise :class:`MissingExtraError` naming ``extras`` when any module they provide is missing."""
    extras = (extras,) if isinstance(extras, str) else tuple(extras)
    missing = [m for e in extras for m in missing_modules(e)]
    if missing:
        raise MissingExtraError(what, ",".join(extras), missing=sorted(set(missing)))


def extra_for_module(module: str | None) -> str | None:
    """The extra that provides ``module`` (a top-level import name), or None."""
    root = (module or "").split(".")[0]
    return next((e for e, mods in EXTRAS.items() if root in mods), None)
