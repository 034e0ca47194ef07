"""edgelstm.runtime: the torch-free runtime, and the exported file's contract.

May import: numpy, onnxruntime, the standard library and the torch-free floor of edgelstm
(``edgelstm.errors``, ``edgelstm.manifest``, ``edgelstm.fileio``, ``edgelstm.units``, the array
loader ``edgelstm.data.readers``); never torch, onnx or ``edgelstm.cli`` (``tests/test_layers.py``).
Imported by: everything else (exporters, verify, the benchmark, the CLI, the device examples).
Modules: ``interface`` (roles, state pairing, pair names) and ``integrity`` (manifest read/write,
seal, ONNX wire reader): the contract; ``session`` (session setup, the thread rule, LoadOptions);
``providers``; ``model`` + ``inputs`` + ``result`` (one graph); ``stream``, ``group``; ``seq2seq``.

::

    from edgelstm import runtime
    model = runtime.load("model.onnx", device="auto")
    result = model.run(x)                 # x [batch, time, features]
    result["logits"], result.labels, result.state
    stream = model.stream(batch=1)
    for frame in frames:                  # frame [batch, features]
        out = stream.step(frame)
    snapshot = stream.state               # dict of numpy arrays; stream.state = snapshot restores it
    group = model.streams(8)              # 8 streams, one batched call per step
    out = group.step(frames8)             # frames8 [8, features]; group.add() / drop(i) / reset(i)

    s2s = runtime.load("translit.onnx")   # the X.encoder.onnx + X.decoder_step.onnx pair
    s2s.generate("hello").text
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import onnxruntime as ort

from edgelstm.errors import ManifestError, ModelFileError, UsageError
from edgelstm.runtime.integrity import check_structure
from edgelstm.runtime.interface import pair_stem
from edgelstm.runtime.model import Model
from edgelstm.runtime.result import IOSpec, RunResult, StatePair
from edgelstm.runtime.session import LoadOptions, read_model_file
from edgelstm.runtime.providers import DEVICES, ProviderPlan, plan_providers
from edgelstm.runtime.seq2seq import Generation, Seq2SeqModel, companion_paths
from edgelstm.runtime.group import StreamGroup
from edgelstm.runtime.stream import Stream

__all__ = ["load", "LoadOptions", "Model", "Seq2SeqModel", "Stream", "StreamGroup", "RunResult", "Generation", "IOSpec", "StatePair",
           "DEVICES", "ProviderPlan", "plan_providers"]


def load(path: str | os.PathLike | bytes, device: str | Sequence[str] = "auto", threads: int | None = None,
         fallback: bool = True, provider_options: dict[str, dict[str, Any]] | None = None, *,
         nan: str = "raise", session_options: ort.SessionOptions | None = None,
         session_config: dict[str, Any] | None = None,
         providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
         trust_modified: bool = False) -> Model | Seq2SeqModel:
    """Load an exported model (or any ONNX file) and create its onnxruntime session(s).

    ``path``: a file, or the model's bytes (a single graph; a seq2seq pair loads from files).
    ``device``: ``auto``, ``cpu``, ``cuda``, ``tensorrt``, ``arm``, ``coreml``, ``nnapi``, ``qnn``,
    or a list of onnxruntime provider names. ``providers``: onnxruntime's own form instead of
    ``device``, names or ``(name, options)`` pairs, e.g. ``[("CUDAExecutionProvider", {"device_id":
    1}), "CPUExecutionProvider"]``. ``fallback=False`` raises
    :class:`~edgelstm.errors.ProviderUnavailableError` when that provider is unavailable; with
    fallback a warning names the providers used. ``threads``: intra-op threads (None or 0 =
    onnxruntime's default). ``provider_options``: provider name -> options (override the defaults,
    e.g. the TensorRT engine cache path). ``nan``: ``"raise"`` (default) or ``"pass"`` for NaN/Inf
    inputs. ``session_config``: session config entries added to the session options, e.g.
    ``{"mlas.disable_kleidiai": "1"}``. ``session_options``: your own ``onnxruntime.SessionOptions``,
    used as given (then ``threads`` must be left at None: set it, the graph optimization level and
    any other knob on it). ``trust_modified``: load a file whose seal (graph + manifest) is missing
    or does not match, with a warning (the manifest is still validated); see
    :mod:`edgelstm.runtime.integrity`. The options are checked as a
    :class:`~edgelstm.runtime.session.LoadOptions`.

    A seq2seq export loads from either of its files, or from the stem ``X.onnx`` when only
    ``X.encoder.onnx`` and ``X.decoder_step.onnx`` exist; it returns a :class:`Seq2SeqModel`.
    """
    if providers is not None:
        if device != "auto":
            raise UsageError("providers", "device and providers both given", expected="one of them",
                             got=f"device={device!r}, providers={providers!r}")
        device, provider_options = _split_providers(providers, provider_options)
    options = LoadOptions(device=device, threads=threads, fallback=fallback, provider_options=provider_options,
                          nan=nan, session_options=session_options, session_config=session_config,
                          trust_modified=trust_modified)
    if isinstance(path, (bytes, bytearray, memoryview)):
        return _load_bytes(bytes(path), options)
    p = Path(path)
    pair = companion_paths(p)
    if pair is None and not p.exists():
        raise ModelFileError(str(p), "model file not found", expected="an existing .onnx file (or, for seq2seq, "
                             "X.encoder.onnx and X.decoder_step.onnx)", got="no such file")
    if pair is not None and pair_stem(p.name)[1] is None:
        return _load_pair(*pair, options)
    fpath, data = read_model_file(p)
    model = Model(fpath, data, options)
    role = model.manifest.graph if model.manifest else "model"
    if role == "model":
        return model
    companion = model.manifest.companions.get("decoder_step" if role == "encoder" else "encoder")
    other = fpath.with_name(companion) if companion else None
    if other is None or not other.exists():
        if pair is None:
            raise ModelFileError(str(fpath), f"the {role} graph's companion file is missing",
                                 expected=str(other) if other else "a companion named in the manifest",
                                 got="no such file")
        other = pair[1] if role == "encoder" else pair[0]
    other_model = Model(*read_model_file(other), options)
    enc, dec = (model, other_model) if role == "encoder" else (other_model, model)
    _check_roles(enc, dec)
    return Seq2SeqModel(enc, dec)


BYTES_SOURCE = "<model bytes>"  # what errors and ``model.path`` call a model given as bytes


def _load_bytes(data: bytes, options: LoadOptions) -> Model:
    check_structure(data, BYTES_SOURCE)
    model = Model(Path(BYTES_SOURCE), data, options, from_bytes=True)
    if model.manifest is not None and model.manifest.graph != "model":
        raise ModelFileError(BYTES_SOURCE, f"a seq2seq {model.manifest.graph} graph cannot load from bytes alone",
                             expected="a single-graph model, or the pair's files", got=model.manifest.graph)
    return model


def _split_providers(providers, provider_options) -> tuple[list[str], dict[str, dict[str, Any]] | None]:
    """onnxruntime's ``providers=[name | (name, options), ...]`` -> (names, provider_options)."""
    names, opts = [], dict(provider_options or {})
    for p in providers if not isinstance(providers, str) else [providers]:
        if isinstance(p, str):
            names.append(p)
        elif isinstance(p, (tuple, list)) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict):
            names.append(p[0])
            opts[p[0]] = {**opts.get(p[0], {}), **p[1]}
        else:
            raise UsageError("providers", "entries are provider names or (name, options) pairs",
                             expected='e.g. ["CPUExecutionProvider"] or [("CUDAExecutionProvider", {"device_id": 0})]',
                             got=repr(p))
    if not names:
        raise UsageError("providers", "empty provider list", expected="at least one provider", got="[]")
    return names, opts or None


def _load_pair(enc_path: Path, dec_path: Path, options: LoadOptions) -> Seq2SeqModel:
    enc = Model(*read_model_file(enc_path), options)
    dec = Model(*read_model_file(dec_path), options)
    _check_roles(enc, dec)
    return Seq2SeqModel(enc, dec)


def _check_roles(enc: Model, dec: Model) -> None:
    for m, role in ((enc, "encoder"), (dec, "decoder_step")):
        got = m.manifest.graph if m.manifest else None
        if m.manifest is not None and got != role:
            raise ManifestError(f"{m.path} manifest", "wrong graph role for this file", expected=role, got=got)
    _check_pair(enc, dec)


def _check_pair(enc: Model, dec: Model) -> None:
    """The two files are one export: what the encoder hands over fits what the decoder step takes,
    and both manifests agree on the vocabulary (otherwise decoding fails midway, or decodes garbage)."""
    subject = f"{enc.path.name} + {dec.path.name}"
    for out, inp in (("memory", "memory"), ("h_out", "h_in"), ("c_out", "c_in")):
        a, b = enc._out.get(out), dec._in.get(inp)
        if a is None or b is None:
            continue
        clash = a.rank != b.rank or any(isinstance(x, int) and isinstance(y, int) and x > 0 and y > 0 and x != y
                                        for x, y in zip(a.shape, b.shape))
        if clash or a.dtype != b.dtype:
            raise ManifestError(subject, f"the encoder's {out!r} does not fit the decoder step's {inp!r} "
                                "(files of two different exports?)", expected=f"{b.dtype.name} {list(b.shape)}",
                                got=f"{a.dtype.name} {list(a.shape)}")
    me, md = enc.manifest, dec.manifest
    if me is not None and md is not None:
        for field in ("vocab", "special_tokens", "hidden_size"):
            if getattr(me, field) != getattr(md, field):
                raise ManifestError(subject, f"encoder and decoder step disagree on {field} "
                                    "(files of two different exports?)", expected=_short(getattr(me, field)),
                                    got=_short(getattr(md, field)))


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
