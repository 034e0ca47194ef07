"""Load a user's own model: ``FILE.py:FACTORY`` or ``package.module:FACTORY``, plus a checkpoint.

Every failure is a typed error naming the thing: a module that does not import, a missing
factory, a factory that raises or returns something other than an ``nn.Module``, a missing or
foreign checkpoint, tensors missing / unexpected / mis-shaped (listed).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from torch import nn

from edgelstm.errors import ModelDefinitionError, UsageError


def _import_file(path: Path, spec_text: str):
    if not path.is_file():
        raise ModelDefinitionError(f"--model {spec_text}", "no such Python file", expected="an existing FILE.py",
                                   got=str(path))
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"edgelstm_user_model_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelDefinitionError(f"--model {spec_text}", "cannot import the file", expected="a Python source file",
                                   got=str(path))
    module = importlib.util.module_from_spec(spec)
    parent = str(path.resolve().parent)
    sys.path.insert(0, parent)  # sibling imports of the user's file
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # any failure of user code, sys.exit included
        sys.modules.pop(name, None)
        raise ModelDefinitionError(f"--model {spec_text}", "the model file does not import",
                                   expected="a file that imports cleanly",
                                   got=f"{type(e).__name__}: {e}") from None
    finally:
        with_path = sys.path
        if with_path and with_path[0] == parent:
            with_path.pop(0)
    return module


def load_factory(spec_text: str):
    """The callable named by ``FILE.py:FACTORY`` or ``package.module:FACTORY``."""
    target, sep, attr = spec_text.rpartition(":")
    if not sep or not target or not attr or not attr.isidentifier():
        raise UsageError(f"--model {spec_text}", "malformed model reference",
                         expected="FILE.py:FACTORY or package.module:FACTORY", got=spec_text)
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _import_file(Path(target), spec_text)
    else:
        try:
            module = importlib.import_module(target)
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise ModelDefinitionError(f"--model {spec_text}", "the model module does not import",
                                       expected="an importable module", got=f"{type(e).__name__}: {e}") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        names = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise ModelDefinitionError(f"--model {spec_text}", f"no callable {attr!r} in the module",
                                   expected=f"one of {names[:20]}", got=attr)
    return factory


def build_user_model(spec_text: str) -> nn.Module:
    """Call the factory (no arguments) and check that it returns an ``nn.Module``."""
    factory = load_factory(spec_text)
    try:
        model = factory()
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise ModelDefinitionError(f"--model {spec_text}", "the factory raised", expected="an nn.Module",
                                   got=f"{type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelDefinitionError(f"--model {spec_text}", "the factory did not return an nn.Module",
                                   expected="torch.nn.Module", got=type(model).__name__)
    return model.eval()


def load_user_checkpoint(model: nn.Module, path: str | os.PathLike) -> str:
    """Load ``.safetensors`` / ``.pt`` weights strictly (never unpickling); return the file's SHA-256."""
    from edgelstm.checkpoint import load_weights, sha256_file  # noqa: PLC0415

    load_weights(model, path)
    model.eval()
    return sha256_file(path)
