"""Run directories: weights + typed config + metrics, written atomically, loaded without unpickling.

A run directory holds::

    model.safetensors   the model's state_dict (names as in ``model.state_dict()``)
    config.json         RunConfig as JSON (the ModelConfig under "model"; see docs/DESIGN.md)
    metrics.json        the final metrics

:func:`save_run` writes all three into a temporary directory beside ``run_dir`` and renames it
into place, so a run directory is either complete or absent. Extra artefacts (plots, logs) can
be added to the directory after :func:`save_run` returns.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelstm import __version__
from edgelstm.errors import CheckpointError, EdgeLSTMError, ManifestError, RunDirExistsError, UsageError
from edgelstm.fileio import file_mode, fix_dir_mode
from edgelstm.manifest import check_normalization
from edgelstm.models import ModelConfig, build_model

__all__ = ["RunConfig", "save_run", "load_run", "load_weights", "sha256_file",
           "WEIGHTS_FILE", "CONFIG_FILE", "METRICS_FILE"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
TORCH_SUFFIXES = (".pt", ".pth")


@dataclass
class RunConfig:
    """``config.json`` of a run directory."""

    family: str                                   # == model.family
    model: ModelConfig                            # how to rebuild the network
    task: str                                     # == model.task
    dataset: str | None = None                    # bundled dataset name or data file path
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]} per feature
    labels: list[str] | None = None               # class names (classify / label)
    vocab: list[str] | None = None                # token strings (seq2seq), index = token id
    metrics: dict[str, Any] = field(default_factory=dict)   # final metrics (also in metrics.json)
    seed: int | None = None                       # training seed
    versions: dict[str, str] = field(default_factory=dict)  # package -> version at training time
    frame_rate_hz: float | None = None            # input frames per second (streaming real-time factor)
    extra: dict[str, Any] = field(default_factory=dict)     # anything else a trainer wants to keep

    @classmethod
    def for_model(cls, model: ModelConfig, **kw: Any) -> "RunConfig":
        return cls(family=model.family, model=model, task=model.task, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source: str = CONFIG_FILE) -> "RunConfig":
        if not isinstance(d, dict):
            raise CheckpointError(source, "run config is not a JSON object", got=type(d).__name__)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CheckpointError(source, "unknown run config keys", expected=sorted(known), got=unknown)
        missing = sorted({"family", "model", "task"} - set(d))
        if missing:
            raise CheckpointError(source, "run config is missing keys", expected=["family", "model", "task"],
                                  got=f"missing {missing}")
        try:
            model = ModelConfig.from_dict(d["model"], source=f"{source} model")
        except EdgeLSTMError as e:
            raise CheckpointError(source, f"bad model config: {e}") from None
        rc = cls(**{**d, "model": model})
        if rc.family != model.family or rc.task != model.task:
            raise CheckpointError(source, "family/task disagree with the model config",
                                  expected=(model.family, model.task), got=(rc.family, rc.task))
        labels = rc.labels
        if labels is not None and (not isinstance(labels, list) or not all(isinstance(v, str) for v in labels)
                                   or (model.task in ("classify", "label") and len(labels) != model.num_outputs)):
            raise CheckpointError(source, "malformed labels", expected=f"a list of {model.num_outputs} class names "
                                  "(one per output)", got=repr(labels)[:60])
        if rc.normalization is not None:
            try:
                check_normalization(rc.normalization, source=source, features=model.input_size or None)
            except ManifestError as e:
                raise CheckpointError(source, f"malformed normalization: {e.problem}", expected=e.expected,
                                      got=e.got) from None
        return rc


def _versions() -> dict[str, str]:
    import numpy
    v = {"python": platform.python_version(), "edgelstm": __version__, "torch": torch.__version__,
         "numpy": numpy.__version__}
    try:
        import safetensors
        v["safetensors"] = safetensors.__version__
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return v


def _json(obj: Any, what: str) -> str:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if hasattr(o, "item") and callable(o.item):   # numpy / torch scalars
            return clean(o.item())
        return o
    try:
        return json.dumps(clean(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise UsageError(what, "not JSON-serialisable", expected="numbers, strings, lists, dicts", got=str(e)) from None


def _is_empty_dir(p: Path) -> bool:
    return p.is_dir() and not any(p.iterdir())


# ---------------------------------------------------------------------------- save
RUN_MARKER = "config.json"


def is_run_dir(path: str | os.PathLike) -> bool:
    """A directory written by :func:`save_run` (it holds ``config.json``), complete or not."""
    p = Path(path)
    return p.is_dir() and (p / RUN_MARKER).is_file()


def refuse_foreign_dir(path: str | os.PathLike) -> None:
    """``--overwrite`` replaces a run directory, never anything else: a non-empty directory that
    is not a run (a project folder given by mistake) is refused whatever the flag says."""
    p = Path(path)
    if p.is_dir() and not _is_empty_dir(p) and not is_run_dir(p):
        raise RunDirExistsError(str(p), "is a non-empty directory that is not a run directory; refusing to write "
                                "into it or replace it, even with --overwrite",
                                expected=f"a new or empty directory, or a run directory (with {RUN_MARKER})",
                                got=f"{sum(1 for _ in p.iterdir())} other entries")


def save_run(run_dir: str | os.PathLike, model: nn.Module, run_config: RunConfig,
             metrics: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``metrics.json`` into ``run_dir`` atomically.

    ``run_dir`` must not exist or be empty, unless ``overwrite`` (then the old directory is
    replaced whole, after the new one is complete). Returns ``run_dir`` as a ``Path``.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirExistsError(str(run_dir), "exists and is not a directory", expected="a directory path",
                                got="a file")
    refuse_foreign_dir(run_dir)
    if run_dir.exists() and not overwrite and not _is_empty_dir(run_dir):
        raise RunDirExistsError(str(run_dir), "already holds a run; pass overwrite (--overwrite) to replace it")
    if not isinstance(run_config, RunConfig):
        raise UsageError("run_config", "wrong type", expected="RunConfig", got=type(run_config).__name__)
    model_config = getattr(model, "config", None)
    if model_config is not None and model_config != run_config.model:
        raise UsageError("run_config.model", "differs from the model's own config",
                         expected=model_config, got=run_config.model)
    metrics = dict(metrics or {})
    run_config = RunConfig(**{**{f.name: getattr(run_config, f.name) for f in fields(RunConfig)},
                              "metrics": metrics or run_config.metrics,
                              "versions": run_config.versions or _versions()})
    metrics_text = _json(run_config.metrics, "metrics")  # first: the config embeds them, name the culprit
    config_text = _json(run_config.to_dict(), "run config")
    # clone: safetensors refuses tensors that share storage; contiguous CPU copies are always fine
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}

    from safetensors.torch import save_file

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        fix_dir_mode(tmp)  # mkdtemp makes 0700; a run directory gets the umask's mode like any other
        try:
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "producer": f"edgelstm {__version__}"})
        except OSError:
            raise
        except Exception as e:  # safetensors' own error type (a full disk, an unwritable folder)
            raise CheckpointError(str(run_dir / WEIGHTS_FILE), "cannot write the weights", expected="a writable folder "
                                  "with free space", got=str(e).splitlines()[0][:200] if str(e) else type(e).__name__) from None
        (tmp / CONFIG_FILE).write_text(config_text, encoding="utf-8")
        (tmp / METRICS_FILE).write_text(metrics_text, encoding="utf-8")
        for f in tmp.iterdir():  # safetensors writes 0600: every file gets the umask's mode
            os.chmod(f, file_mode())
        if run_dir.exists():
            if _is_empty_dir(run_dir):
                run_dir.rmdir()
            elif overwrite:
                old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".old", dir=run_dir.parent))
                old.rmdir()
                os.replace(run_dir, old)
                os.replace(tmp, run_dir)
                shutil.rmtree(old, ignore_errors=True)
                log.info("replaced run directory %s", run_dir)
                return run_dir
            else:  # appeared while we were writing
                raise RunDirExistsError(str(run_dir), "already holds a run; pass overwrite (--overwrite) to replace it")
        os.replace(tmp, run_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved run to %s", run_dir)
    return run_dir


# ---------------------------------------------------------------------------- load
def read_run_config(run_dir: str | os.PathLike) -> RunConfig:
    """Read and validate ``config.json`` of ``run_dir`` (no weights, no torch model)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(str(run_dir), "no such run directory", expected="a directory made by training",
                              got="missing" if not run_dir.exists() else "a file")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(str(path), "missing run config", expected=f"{CONFIG_FILE} in the run directory")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(str(path), "run config is not valid JSON", got=str(e)) from None
    return RunConfig.from_dict(d, source=str(path))


def load_run(run_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild the model of ``run_dir`` and load its weights (eval mode). Never unpickles."""
    run_dir = Path(run_dir)
    rc = read_run_config(run_dir)
    model = build_model(rc.model)
    load_weights(model, run_dir / WEIGHTS_FILE)
    return model.to(device).eval(), rc


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(str(path), "no such weights file", got="missing" if not path.exists() else "not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises SafetensorError / OSError / ValueError
            raise CheckpointError(str(path), "not a readable safetensors file", got=f"{type(e).__name__}: {e}") from None
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise CheckpointError(str(path), "holds objects other than tensors (refused: loading would run code)",
                                  expected="a state_dict of tensors", got=str(e).splitlines()[0]) from None
        except Exception as e:  # truncated zip, not a torch file at all, ...
            raise CheckpointError(str(path), "not a readable PyTorch file", got=f"{type(e).__name__}: {e}") from None
        if isinstance(obj, dict):
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(str(path), "not a state_dict", expected="a dict of name -> tensor",
                                  got=type(obj).__name__)
        return dict(obj)
    raise CheckpointError(str(path), "unknown weights file type", expected=[".safetensors", *TORCH_SUFFIXES],
                          got=path.suffix or "no suffix")


def _names(items, limit: int = 8) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ``.safetensors`` or ``.pt``/``.pth`` (``weights_only=True``) into ``model``, strictly.

    A state_dict nested under ``state_dict`` / ``model_state_dict`` / ``model`` and a
    ``module.`` prefix (DataParallel) are accepted. Raises :class:`CheckpointError` naming the
    file and listing missing, unexpected and mis-shaped tensors.
    """
    path = Path(path)
    sd = _read_tensors(path)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    want = model.state_dict()
    sd = _restore_tied(want, sd, path)
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    misshaped = [f"{k} {list(sd[k].shape)} (model {list(want[k].shape)})"
                 for k in want if k in sd and sd[k].shape != want[k].shape]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped {_names(misshaped)}")
        raise CheckpointError(str(path), "weights do not fit the model: " + "; ".join(parts),
                              expected=f"the {len(want)} tensors of {type(model).__name__}")
    model.load_state_dict(sd, strict=True)
    return model


def tied_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    """Names of a state_dict that are one tensor (tied weights such as ``encoder.weight`` /
    ``decoder.weight``), in state_dict order; groups of two or more only."""
    groups: dict[tuple, list[str]] = {}
    for name, t in state.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        groups.setdefault(key, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def _restore_tied(want: dict[str, torch.Tensor], sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """A file holds each tied tensor once (``safetensors.torch.save_model`` drops the duplicate
    names) or under every name (``torch.save``, ``save_file`` of clones): fill in the missing names
    from the one present; names present twice must hold the same values."""
    sd = dict(sd)
    for group in tied_groups(want):
        present = [n for n in group if n in sd]
        if not present:
            continue
        first = sd[present[0]]
        differ = [n for n in present[1:] if sd[n].shape == first.shape and not torch.equal(sd[n], first)]
        if differ:
            raise CheckpointError(str(path), "tied tensors hold different values", expected=f"{group} equal (the "
                                  "model shares one tensor between them)", got=f"{present[0]} != {differ}")
        for n in group:
            sd.setdefault(n, first)
    return sd


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(str(path), "no such file to hash")
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
