"""edgelstm.runtime: the torch-free runtime. Imports only numpy, onnxruntime and the stdlib
(plus the stdlib-only ``edgelstm.errors`` / ``edgelstm.manifest`` / ``edgelstm.fileio``).

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

from edgelstm.errors import ManifestError, ModelFileError
from edgelstm.runtime.model import IOSpec, Model, RunResult, StatePair, read_model_file
from edgelstm.runtime.providers import DEVICES, ProviderPlan, plan_providers
from edgelstm.runtime.seq2seq import Generation, Seq2SeqModel, companion_paths
from edgelstm.runtime.group import StreamGroup
from edgelstm.runtime.stream import Stream

__all__ = ["load", "Model", "Seq2SeqModel", "Stream", "StreamGroup", "RunResult", "Generation", "IOSpec", "StatePair",
           "DEVICES", "ProviderPlan", "plan_providers"]


def load(path: str | os.PathLike, device: str | Sequence[str] = "auto", threads: int | None = None,
         fallback: bool = True, provider_options: dict[str, dict[str, Any]] | None = None, *,
         nan: str = "raise", optimization: str = "all", trust_modified: bool = False) -> Model | Seq2SeqModel:
    """Load an exported model (or any ONNX file) and create its onnxruntime session(s).

    ``device``: ``auto``, ``cpu``, ``cuda``, ``tensorrt``, ``arm``, ``coreml``, ``nnapi``, ``qnn``,
    or a list of onnxruntime provider names. ``fallback=False`` raises
    :class:`~edgelstm.errors.ProviderUnavailableError` when that provider is unavailable; with
    fallback a warning names the providers used. ``threads``: intra-op threads (None = onnxruntime's
    default). ``provider_options``: provider name -> options (override the defaults, e.g. the
    TensorRT engine cache path). ``nan``: ``"raise"`` (default) or ``"pass"`` for NaN/Inf inputs.
    ``trust_modified``: load a file whose seal (graph + manifest) is missing or does not match,
    with a warning (the manifest is still validated); see :mod:`edgelstm.runtime.integrity`.

    A seq2seq export loads from either of its files, or from the stem ``X.onnx`` when only
    ``X.encoder.onnx`` and ``X.decoder_step.onnx`` exist; it returns a :class:`Seq2SeqModel`.
    """
    p = Path(path)
    pair = companion_paths(p)
    kwargs = dict(device=device, threads=threads, fallback=fallback, provider_options=provider_options,
                  nan=nan, optimization=optimization, trust_modified=trust_modified)
    if pair is None and not p.exists():
        raise ModelFileError(str(p), "model file not found", expected="an existing .onnx file (or, for seq2seq, "
                             "X.encoder.onnx and X.decoder_step.onnx)", got="no such file")
    if pair is not None and not p.name.endswith((".encoder.onnx", ".decoder_step.onnx")):
        return _load_pair(*pair, **kwargs)
    fpath, data = read_model_file(p)
    model = Model(fpath, data, **kwargs)
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
    other_model = Model(*read_model_file(other), **kwargs)
    enc, dec = (model, other_model) if role == "encoder" else (other_model, model)
    _check_roles(enc, dec)
    return Seq2SeqModel(enc, dec)


def _load_pair(enc_path: Path, dec_path: Path, **kwargs) -> Seq2SeqModel:
    enc = Model(*read_model_file(enc_path), **kwargs)
    dec = Model(*read_model_file(dec_path), **kwargs)
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
