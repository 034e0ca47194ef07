"""What a timed call is fed and where it runs: generated inputs, the state pairs, the providers.

Imports numpy, the standard library, ``edgelstm.errors``, ``edgelstm.manifest`` and
``edgelstm.runtime`` (``interface`` for the state pairing, ``providers`` for the plan). Imported by
:mod:`.drivers` and :mod:`.suite`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgelstm.errors import InputError, UsageError
from edgelstm.manifest import Manifest
from edgelstm.runtime.interface import pair_states
from edgelstm.runtime.providers import ProviderPlan, check_provider_options, ort_type_to_dtype, plan_providers
from edgelstm.tokens import SPECIAL_TOKENS

# the input element types build_feeds can generate (numpy names, as ort_type_to_dtype gives them)
FEED_DTYPES = ("float32", "float16", "float64", "int32", "int64", "int8", "uint8", "bool")


def provider_plan(device: str, provider_options: dict[str, dict[str, Any]] | None = None) -> ProviderPlan:
    """``cpu`` / ``cuda`` / ... -> the runtime's provider plan; a benchmark never falls back
    silently, so an unavailable device raises ProviderUnavailableError. ``provider_options``
    (provider name -> options, e.g. CUDA's ``use_tf32``) must name providers this run uses."""
    if "," in device:  # a list would read as a fallback chain and time only its first available entry
        raise UsageError("--device", "bench times one device per run", expected="one of cpu, cuda, tensorrt, arm, "
                         "coreml, nnapi, qnn (run once per device, then merge with edgelstm bench-report)", got=device)
    plan = plan_providers(device, fallback=False, provider_options=provider_options)
    check_provider_options(provider_options, plan.providers)
    return plan


def state_pairs(session, manifest: Manifest | None) -> list[tuple[str, str]]:
    """(input, output) names of the recurrent state: from the manifest, else the naming rule."""
    if manifest is not None and manifest.states:
        return [(s.input, s.output) for s in manifest.states]
    return pair_states([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])


def _dim(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and value > 0 else fallback


def build_feeds(session, manifest: Manifest | None, *, batch: int, time_steps: int,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one call, by the project's naming scheme (docs/DESIGN.md, "Exported graphs").

    ``x [batch, time, F]``, ``src [batch, time]`` token ids, ``lengths``/``src_lengths``
    filled with ``time``, ``token [batch]`` = bos, ``memory [batch, time, H]``, state inputs
    zeros ``[L, batch, H]``. Any other input: symbolic dims -> batch (first) then time.
    """
    rng = np.random.default_rng(seed)
    vocab = len(manifest.vocab) if manifest is not None and manifest.vocab else 16
    bos = {**SPECIAL_TOKENS, **(manifest.special_tokens if manifest is not None else {})}["bos"]
    feeds: dict[str, np.ndarray] = {}
    state_in = {a for a, _ in state_pairs(session, manifest)}
    for inp in session.get_inputs():
        dtype_name = ort_type_to_dtype(inp.type)
        if dtype_name not in FEED_DTYPES:
            raise InputError(inp.name, "input type the benchmark cannot generate", expected=list(FEED_DTYPES),
                             got=inp.type)
        dtype = np.dtype(dtype_name)
        shape = list(inp.shape)
        name = inp.name
        if name in ("lengths", "src_lengths", "sequence_lens"):
            feeds[name] = np.full((batch,), time_steps, dtype=dtype)
        elif name == "token":
            feeds[name] = np.full((batch,), bos, dtype=dtype)
        elif name == "src":
            feeds[name] = rng.integers(3, max(4, vocab), size=(batch, time_steps)).astype(dtype)
        elif len(shape) == 3 and name in ("x", "memory"):
            feeds[name] = rng.standard_normal((batch, time_steps, _dim(shape[2], 1))).astype(dtype)
        elif len(shape) == 3 and name in state_in:
            hidden = manifest.hidden_size if manifest is not None else 1
            layers = manifest.layers * manifest.directions if manifest is not None else 1
            feeds[name] = np.zeros((_dim(shape[0], layers), batch, _dim(shape[2], hidden)), dtype=dtype)
        else:
            dims, first = [], True
            for d in shape:
                if isinstance(d, int) and d > 0:
                    dims.append(d)
                else:
                    dims.append(batch if first else time_steps)
                first = False
            if np.issubdtype(dtype, np.floating):
                feeds[name] = rng.standard_normal(dims).astype(dtype)
            else:
                feeds[name] = np.zeros(dims, dtype=dtype)
    return feeds
