"""Export edgelstm's own model families (a run directory, or a model built from a ModelConfig)
with the one naming scheme of docs/DESIGN.md:

* ``lstm`` / ``peephole`` / ``gru`` / ``attention`` classify: inputs ``x``, ``lengths``, ``h_in``
  (``c_in``) -> ``logits`` or ``y``, ``h_out`` (``c_out``); one graph serves whole sequences and
  streaming (feed ``h_out``/``c_out`` back as ``h_in``/``c_in``).
* ``attention`` seq2seq: ``OUT.encoder.onnx`` and ``OUT.decoder_step.onnx`` side by side.

Each family has one small export config (:data:`FAMILY_EXPORTS`): input specs, output names and
axes, tolerance. The graphs are traced from the model's own ``forward`` / ``encode`` /
``decode_step``; the reference for the parity check is the untouched model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgelstm.errors import UsageError
from edgelstm.exporters.build import build_graph, write_models
from edgelstm.exporters.plan import ExportReport, GraphPlan, GraphWrapper, flatten_outputs
from edgelstm.exporters.recurrent import RecurrentProxy
from edgelstm.exporters.spec import InputSpec
from edgelstm.manifest import DEFAULT_OPSET, Manifest, Normalization, StateSpec
from edgelstm.models.sequence import rnn_hook
from edgelstm.runtime.interface import pair_paths
from edgelstm.stats import FP32_RTOL_SCALE


@dataclass(frozen=True)
class FamilyExport:
    """How one family exports: tolerance scale of the parity rule and whether it streams."""

    name: str
    state_names: tuple[str, ...]
    parity_scale: float = FP32_RTOL_SCALE


#: One entry per family of edgelstm.models (a test fails when a family has none).
FAMILY_EXPORTS: dict[str, FamilyExport] = {
    "lstm": FamilyExport("lstm", ("h", "c")),
    "peephole": FamilyExport("peephole", ("h", "c")),
    "gru": FamilyExport("gru", ("h",)),
    "attention": FamilyExport("attention", ("h", "c")),
}


def _proxy_run_rnn(rnn, x, lengths, hx):
    """``edgelstm.models``' ``run_rnn`` packs sequences for nn.LSTM/GRU; while exporting (through
    :func:`edgelstm.models.sequence.rnn_hook`), a proxied rnn gets the padded tensor and
    ``lengths=`` instead (ONNX ``sequence_lens`` semantics, the same results). None for other
    modules: they go through ``run_rnn`` itself."""
    if not isinstance(rnn, RecurrentProxy):
        return None
    rnn_in = x if rnn.batch_first else x.transpose(0, 1)
    y, h_n = rnn(rnn_in, hx, lengths=lengths)
    return (y if rnn.batch_first else y.transpose(0, 1)), h_n


def _numpy(outs, names: list[str]) -> dict[str, np.ndarray]:
    flat = flatten_outputs(outs)
    return {n: t.detach().cpu().numpy() for n, t in zip(names, flat)}


def _reference(fn: Callable, names_in: list[str], names_out: list[str]) -> Callable[[dict], dict]:
    def ref(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names_in]
        with torch.no_grad():
            return _numpy(fn(*args), names_out)
    return ref


class _SequenceCall(nn.Module):
    """``(x, lengths, h_in[, c_in]) -> (out, h_out[, c_out])`` through the model's own forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, lengths, *state):
        return self.model(x, lengths, tuple(state))


class _EncoderCall(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, src, src_lengths):
        return self.model.encode(src, src_lengths)


class _DecoderStepCall(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token, h_in, c_in, memory, src_lengths):
        return self.model.decode_step(token, h_in, c_in, memory, src_lengths)


def _base_manifest(cfg, run: Any | None, *, task: str, graph: str = "model") -> Manifest:
    norm = None
    if run is not None and getattr(run, "normalization", None):
        norm = Normalization(mean=list(run.normalization["mean"]), std=list(run.normalization["std"]))
    return Manifest(family=cfg.family, task=task, layers=cfg.num_layers, hidden_size=cfg.hidden_size,
                    directions=cfg.directions, inputs=[], outputs=[], graph=graph, normalization=norm,
                    labels=getattr(run, "labels", None), vocab=getattr(run, "vocab", None),
                    frame_rate_hz=getattr(run, "frame_rate_hz", None),
                    extra={"model_config": cfg.to_dict(), "dataset": getattr(run, "dataset", None),
                           "metrics": getattr(run, "metrics", None) or {}})


def sequence_plan(model: nn.Module, run: Any | None = None) -> GraphPlan:
    """Plan for lstm / peephole / gru and attention-pooled classification."""
    cfg = model.config
    fam = FAMILY_EXPORTS[cfg.family]
    S = cfg.num_layers * cfg.directions
    state_shape = (S, "batch", cfg.hidden_size)
    out_name = "logits" if cfg.task == "classify" else "y"
    specs = [InputSpec("x", "float32", ("batch", "time", cfg.input_size)), InputSpec("lengths", "int32", ("batch",))]
    specs += [InputSpec(f"{s}_in", "float32", state_shape) for s in fam.state_names]
    out_names = [out_name] + [f"{s}_out" for s in fam.state_names]
    axes = {out_name: {0: "batch"} if cfg.task == "classify" else {0: "batch", 1: "time"}}
    axes.update({f"{s}_out": {1: "batch"} for s in fam.state_names})
    wrapper = GraphWrapper(_SequenceCall(model), [s.name for s in specs],
                           [s.name for s in specs], "lengths", [])
    m = _base_manifest(cfg, run, task=cfg.task)
    m.states = [StateSpec(f"{s}_in", f"{s}_out", list(state_shape)) for s in fam.state_names]
    # attention pooling reads the whole sequence; a reverse direction reads the future
    m.streamable = cfg.directions == 1 and cfg.family != "attention"
    out_meaning = {"classify": "class logits from the last valid step", "label": "per-step class logits",
                   "regress": "per-step regression outputs",
                   "forecast": "per-step prediction of the next input frame"}.get(cfg.task, "")
    meanings = {"x": "input features, batch-major" + (" (normalize with the manifest's mean/std first)"
                                                       if m.normalization else ""),
                "lengths": "valid steps per sequence (ONNX sequence_lens of every recurrent node)",
                out_name: out_meaning}
    for s in fam.state_names:
        what = "hidden" if s == "h" else "cell"
        meanings[f"{s}_in"] = f"initial {what} state [layers*directions, batch, hidden] (zeros to start)"
        meanings[f"{s}_out"] = f"final {what} state; feed back as {s}_in to stream the next chunk"
    ref = _reference(lambda x, lengths, *st: model(x, lengths, tuple(st)), [s.name for s in specs], out_names)
    return GraphPlan(root=model, wrapper=wrapper, inputs=specs, output_names=out_names, manifest=m,
                     lengths_input="lengths", reference=ref, output_axes=axes,
                     input_meanings=meanings, output_meanings=meanings)


def seq2seq_plans(model: nn.Module, run: Any | None, encoder_file: str, decoder_file: str
                  ) -> tuple[GraphPlan, GraphPlan]:
    from edgelstm.tokens import SPECIAL_TOKENS  # noqa: PLC0415

    cfg = model.config
    H, L = cfg.hidden_size, cfg.num_layers
    common = dict(special_tokens=dict(SPECIAL_TOKENS), max_len=cfg.max_len)
    # --- encoder
    enc_specs = [InputSpec("src", "int64", ("batch", "src_time")), InputSpec("src_lengths", "int32", ("batch",))]
    enc_out = ["memory", "h_out", "c_out"]
    enc = GraphWrapper(_EncoderCall(model), ["src", "src_lengths"], ["src", "src_lengths"], "src_lengths", [])
    m_enc = _base_manifest(cfg, run, task="seq2seq", graph="encoder")
    m_enc.companions = {"decoder_step": decoder_file}
    m_enc.streamable = False
    for k, v in common.items():
        setattr(m_enc, k, v)
    enc_meanings = {"src": "source token ids (pad=0)", "src_lengths": "valid source tokens per sequence",
                    "memory": "encoder states [batch, src_time, hidden], zero past each length",
                    "h_out": "encoder final hidden state: the decoder's first h_in",
                    "c_out": "encoder final cell state: the decoder's first c_in"}
    enc_plan = GraphPlan(root=model, wrapper=enc, inputs=enc_specs, output_names=enc_out, manifest=m_enc,
                         lengths_input="src_lengths", int_high=cfg.vocab_size,
                         reference=_reference(model.encode, ["src", "src_lengths"], enc_out),
                         output_axes={"memory": {0: "batch", 1: "src_time"}, "h_out": {1: "batch"},
                                      "c_out": {1: "batch"}},
                         input_meanings=enc_meanings, output_meanings=enc_meanings)
    # --- decoder step
    dec_names = ["token", "h_in", "c_in", "memory", "src_lengths"]
    dec_specs = [InputSpec("token", "int64", ("batch",)), InputSpec("h_in", "float32", (L, "batch", H)),
                 InputSpec("c_in", "float32", (L, "batch", H)),
                 InputSpec("memory", "float32", ("batch", "src_time", H)),
                 InputSpec("src_lengths", "int32", ("batch",))]
    dec_out = ["logits", "h_out", "c_out", "attention"]
    dec = GraphWrapper(_DecoderStepCall(model), dec_names, dec_names, None, [])
    m_dec = _base_manifest(cfg, run, task="seq2seq", graph="decoder_step")
    m_dec.companions = {"encoder": encoder_file}
    m_dec.states = [StateSpec("h_in", "h_out", [L, "batch", H]), StateSpec("c_in", "c_out", [L, "batch", H])]
    m_dec.streamable = False
    for k, v in common.items():
        setattr(m_dec, k, v)
    dec_meanings = {"token": "previous token id (bos=1 at the first step)",
                    "h_in": "decoder hidden state (encoder h_out at the first step)",
                    "c_in": "decoder cell state (encoder c_out at the first step)",
                    "memory": "encoder memory", "src_lengths": "valid source tokens per sequence",
                    "logits": "next-token logits [batch, vocab]; greedy decoding takes the argmax",
                    "h_out": "next h_in", "c_out": "next c_in",
                    "attention": "attention weights over the source [batch, src_time]"}
    dec_plan = GraphPlan(root=model, wrapper=dec, inputs=dec_specs, output_names=dec_out, manifest=m_dec,
                         lengths_input="src_lengths", int_high=cfg.vocab_size,
                         reference=_reference(model.decode_step, dec_names, dec_out),
                         output_axes={"logits": {0: "batch"}, "h_out": {1: "batch"}, "c_out": {1: "batch"},
                                      "attention": {0: "batch", 1: "src_time"}},
                         input_meanings=dec_meanings, output_meanings=dec_meanings)
    return enc_plan, dec_plan


def export_model(model: nn.Module, path: str | os.PathLike, *, run: Any | None = None,
                 checkpoint_sha256: str | None = None, opset: int = DEFAULT_OPSET, verify: bool = True,
                 atol_scale: float | None = None) -> ExportReport:
    """Export an edgelstm family model (``model.config`` a ModelConfig). Seq2seq writes two files;
    the returned report is the encoder's, with the decoder step's in ``companions``."""
    cfg = getattr(model, "config", None)
    if cfg is None or cfg.family not in FAMILY_EXPORTS:
        raise UsageError("model", "not an edgelstm family model", expected=sorted(FAMILY_EXPORTS),
                         got=getattr(cfg, "family", type(model).__name__))
    scale = atol_scale if atol_scale is not None else FAMILY_EXPORTS[cfg.family].parity_scale
    model.eval()
    if cfg.task == "seq2seq":
        enc_path, dec_path = pair_paths(Path(path))
        plans = list(zip(seq2seq_plans(model, run, enc_path.name, dec_path.name), (enc_path, dec_path)))
    else:
        plans = [(sequence_plan(model, run), Path(path))]
    built = []
    with rnn_hook(_proxy_run_rnn):
        for plan, p in plans:
            plan.manifest.checkpoint_sha256 = checkpoint_sha256
            graph, report = build_graph(plan, opset=opset, verify=verify, subject=str(p), parity_scale=scale)
            report.path = str(p)
            built.append((graph, p, report))
    write_models([(g, p) for g, p, _ in built])
    first = built[0][2]
    first.companions = [r for _, _, r in built[1:]]
    return first


def export_run(run_dir: str | os.PathLike, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
               verify: bool = True, atol_scale: float | None = None) -> ExportReport:
    """Export a training run directory (``model.safetensors`` + ``config.json``)."""
    from edgelstm.checkpoint import WEIGHTS_FILE, load_run, sha256_file  # noqa: PLC0415

    model, run = load_run(run_dir)
    sha = sha256_file(Path(run_dir) / WEIGHTS_FILE)
    return export_model(model, path, run=run, checkpoint_sha256=sha, opset=opset, verify=verify,
                        atol_scale=atol_scale)
