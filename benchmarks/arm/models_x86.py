"""The models the ARM check runs, made or collected on x86, and their inputs.

Sources:

* ``pipeline``: the product's own path, through the CLI: ``edgelstm train`` (tiny, seconds),
  ``edgelstm export``, ``edgelstm quantize --mode int8-dynamic``, for every family;
* ``dir``: every exported ``*.onnx`` in a directory (e.g. ``demo_out/``); seq2seq pairs
  (``X.encoder.onnx`` + ``X.decoder_step.onnx``) are taken together;
* ``torch``: tiny ``nn.LSTM`` / ``nn.GRU`` exported with ``torch.onnx.export`` and quantized with
  ``onnxruntime.quantization.quantize_dynamic``: a smoke test of the emulated environment
  that needs nothing of edgelstm but the wheel.

Inputs are random but seeded, saved as ``.npz`` next to the model in the job folder, so both
sides read the very same bytes.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger("edgelstm.arm")

BATCH = 3
TIME = 23
LENGTHS = (23, 17, 9)        # ragged on purpose: exercises sequence_lens
CHUNKS = (4, 1, 7, 1, 10)    # uneven streaming chunks (1 = Stream.step), sum == TIME
SEED = 0


@dataclasses.dataclass
class ModelSpec:
    name: str                 # unique in the job, e.g. "lstm-int8"
    family: str
    precision: str            # manifest precision: fp32, int8-dynamic...
    kind: str                 # "recurrent" | "seq2seq"
    files: dict               # role -> file name in the job folder ("model" or "encoder"/"decoder")
    inputs: str               # npz file name in the job folder
    streamable: bool = True
    max_len: int = 0
    bos: int = 1

    def job_entry(self) -> dict:
        e = {"name": self.name, "kind": self.kind, "inputs": self.inputs, "chunks": list(CHUNKS),
             "max_len": self.max_len, "bos": self.bos}
        e.update(self.files)
        return e


def read_manifest(path: Path) -> dict | None:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    for p in m.metadata_props:
        if p.key == "edgelstm":
            return json.loads(p.value)
    return None


def _graph_inputs(path: Path) -> dict[str, tuple[str, list]]:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    init = {i.name for i in m.graph.initializer}
    out = {}
    for i in m.graph.input:
        if i.name in init:
            continue
        t = i.type.tensor_type
        out[i.name] = (onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                       [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim])
    return out


def _recurrent_inputs(path: Path, out: Path) -> None:
    ins = _graph_inputs(path)
    if "x" not in ins:
        raise ValueError(f"{path.name} | no input named 'x'; expected the edgelstm naming, got {sorted(ins)}")
    feat = ins["x"][1][2]
    if not isinstance(feat, int) or feat <= 0:
        raise ValueError(f"{path.name} | input x has no fixed feature size; got {ins['x'][1]}")
    rng = np.random.default_rng(SEED)
    np.savez(out, x=rng.standard_normal((BATCH, TIME, feat)).astype(np.float32),
             lengths=np.array(LENGTHS, np.int32))


def _seq2seq_inputs(enc: Path, manifest: dict, out: Path) -> None:
    vocab = len(manifest.get("vocab") or []) or 16
    special = manifest.get("special_tokens") or {}
    low = 1 + max(special.values(), default=2)  # real tokens only: no pad/bos/eos inside the source
    rng = np.random.default_rng(SEED)
    lengths = np.array([11, 8, 5], np.int32)
    src = np.zeros((BATCH, int(lengths.max())), np.int64)
    for b, n in enumerate(lengths):
        src[b, :n] = rng.integers(low, max(low + 1, vocab), n)
    np.savez(out, src=src, src_lengths=lengths)


def collect_dir(models_dir: Path, job: Path) -> list[ModelSpec]:
    """Every exported model in ``models_dir``, copied into the job folder with its inputs."""
    specs: list[ModelSpec] = []
    files = sorted(p for p in models_dir.rglob("*.onnx") if ".decoder_step." not in p.name)
    if not files:
        raise ValueError(f"{models_dir} | no .onnx files; expected exported edgelstm models, got none")
    for p in files:
        man = read_manifest(p)
        if man is None:
            log.warning("%s: no edgelstm manifest, skipped", p)
            continue
        prec = man.get("precision", "fp32")
        family = man["family"]
        rel = p.relative_to(models_dir)
        name = "_".join([*rel.parent.parts, p.name.split(".")[0]]) or family  # unique within the job
        if man.get("graph") == "encoder":
            dec = p.parent / man.get("companions", {}).get("decoder_step", p.name.replace(".encoder.", ".decoder_step."))
            if not dec.exists():
                raise ValueError(f"{p.name} | companion decoder not found; expected {dec.name}")
            shutil.copy(p, job / f"{name}.encoder.onnx")
            shutil.copy(dec, job / f"{name}.decoder_step.onnx")
            _seq2seq_inputs(p, man, job / f"{name}.inputs.npz")
            specs.append(ModelSpec(name, family, prec, "seq2seq",
                                   {"encoder": f"{name}.encoder.onnx", "decoder": f"{name}.decoder_step.onnx"},
                                   f"{name}.inputs.npz", streamable=False,
                                   max_len=int(man.get("max_len") or 12),
                                   bos=int((man.get("special_tokens") or {}).get("bos", 1))))
        else:
            shutil.copy(p, job / f"{name}.onnx")
            for extra in p.parent.glob(p.name + ".*"):  # external data beside the model, if any
                shutil.copy(extra, job / extra.name)
            _recurrent_inputs(p, job / f"{name}.inputs.npz")
            specs.append(ModelSpec(name, family, prec, "recurrent", {"model": f"{name}.onnx"},
                                   f"{name}.inputs.npz", streamable=bool(man.get("streamable", True))))
    return specs


# ---------------------------------------------------------------------------- torch smoke models
def torch_models(job: Path) -> list[ModelSpec]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(1)
    torch.manual_seed(SEED)

    class Tiny(torch.nn.Module):
        def __init__(self, cell):
            super().__init__()
            self.rnn = cell(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(16, 3)
            self.lstm = cell is torch.nn.LSTM

        def forward(self, x, h, c=None):
            y, st = self.rnn(x, (h, c) if self.lstm else h)
            if self.lstm:
                return self.head(y), st[0], st[1]
            return self.head(y), st

    specs = []
    for family, cell in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        model = Tiny(cell).eval()
        x = torch.randn(2, 5, 8)
        h = torch.zeros(2, 2, 16)
        args = (x, h, torch.zeros(2, 2, 16)) if family == "lstm" else (x, h)
        in_names = ["x", "h_in", "c_in"][: len(args)]
        out_names = ["y", "h_out", "c_out"][: len(args)]
        axes = {"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}}
        axes.update({n: {1: "batch"} for n in in_names[1:] + out_names[1:]})
        fp32 = job / f"{family}-fp32.onnx"
        torch.onnx.export(model, args, str(fp32), input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
        int8 = job / f"{family}-int8.onnx"
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        for prec, path in (("fp32", fp32), ("int8-dynamic", int8)):
            name = path.stem
            _recurrent_inputs(path, job / f"{name}.inputs.npz")
            specs.append(ModelSpec(name, family, prec, "recurrent", {"model": path.name}, f"{name}.inputs.npz"))
    return specs


# ---------------------------------------------------------------------------- product pipeline
def make_models(source: str, job: Path, *, models_dir: Path | None = None, host_python: str = "python",
                cache: Path | None = None) -> tuple[list[ModelSpec], dict]:
    """The models to check, and the (family, precision) -> error of those that could not be made."""
    if source == "torch":
        return torch_models(job), {}
    if source == "dir":
        if models_dir is None:
            raise ValueError("--models | required with --source dir; expected a directory, got nothing")
        return collect_dir(models_dir, job), {}
    if source == "pipeline":
        from pipeline import build_pipeline_models
        out, errors = build_pipeline_models(job / "exported", host_python, cache)
        return collect_dir(out, job), errors
    raise ValueError(f"source | unknown; expected pipeline, dir or torch, got {source!r}")
