"""The manifest: what an exported ONNX file says about itself.

Stored as JSON in the ONNX ``metadata_props`` under the key :data:`MANIFEST_KEY`. The runtime
needs nothing but the ONNX file (or, for seq2seq, the two files) and this manifest.

Standard library only: the torch-free runtime imports this module.

Naming convention shared by every exported graph (see docs/DESIGN.md):

* ``x``        float32 ``[batch, time, features]`` (always batch-major at the graph boundary)
* ``lengths``  int32   ``[batch]``  valid steps per sequence (ONNX ``sequence_lens``)
* ``h_in`` / ``c_in``   ``[layers*directions, batch, hidden]`` initial state (``c_*`` only for
  LSTM-type families) -> ``h_out`` / ``c_out`` final state.
* outputs by task: ``logits`` (classification), ``y`` (regression / forecasting).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from edgelstm.errors import ManifestError

MANIFEST_KEY = "edgelstm"
SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)

FAMILIES = ("lstm", "peephole", "gru", "attention", "rnn", "custom")
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
TASKS = ("classify", "label", "regress", "forecast", "seq2seq", "custom")
GRAPH_ROLES = ("model", "encoder", "decoder_step")


@dataclass
class TensorSpec:
    """One graph input or output. ``shape`` uses ints for fixed dims, strings for symbolic ones."""

    name: str
    dtype: str  # numpy dtype name: "float32", "int32", "int64", "float16"
    shape: list[Any]
    meaning: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], dtype=d["dtype"], shape=list(d["shape"]), meaning=d.get("meaning", ""))


@dataclass
class StateSpec:
    """A recurrent state pair: graph input ``input`` is fed from graph output ``output``."""

    input: str   # e.g. "h_in"
    output: str  # e.g. "h_out"
    shape: list[Any]  # [layers*directions, "batch", hidden]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, d: dict) -> "StateSpec":
        return cls(input=d["input"], output=d["output"], shape=list(d["shape"]), dtype=d.get("dtype", "float32"))


@dataclass
class Normalization:
    """Per-feature affine normalization applied by the runtime on the way in: (x - mean) / std."""

    mean: list[float]
    std: list[float]


@dataclass
class Manifest:
    family: str
    task: str
    layers: int
    hidden_size: int
    directions: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    states: list[StateSpec] = field(default_factory=list)
    graph: str = "model"  # "model" | "encoder" | "decoder_step"
    precision: str = "fp32"
    opset: int = 17
    normalization: Normalization | None = None
    labels: list[str] | None = None      # class names for classifiers
    vocab: list[str] | None = None       # token strings for seq2seq / char models
    special_tokens: dict[str, int] = field(default_factory=dict)  # pad/bos/eos ids
    max_len: int | None = None           # greedy decoding limit (seq2seq)
    companions: dict[str, str] = field(default_factory=dict)  # role -> file name beside this one
    frame_rate_hz: float | None = None   # for real-time factor when streaming
    streamable: bool = True              # False for bidirectional / attention-pooled models
    checkpoint_sha256: str | None = None
    producer: dict[str, str] = field(default_factory=dict)  # package -> version
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> "Manifest":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(source, "manifest is not valid JSON", expected="a JSON object", got=str(e)) from None
        if not isinstance(d, dict):
            raise ManifestError(source, "manifest is not a JSON object", got=type(d).__name__)
        return cls.from_dict(d, source=source)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "manifest") -> "Manifest":
        version = d.get("schema_version")
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ManifestError(source, "unknown manifest schema version",
                                expected=f"one of {list(SUPPORTED_SCHEMA_VERSIONS)}", got=version)
        try:
            norm = d.get("normalization")
            m = cls(
                family=d["family"], task=d["task"], layers=int(d["layers"]),
                hidden_size=int(d["hidden_size"]), directions=int(d["directions"]),
                inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
                outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
                states=[StateSpec.from_dict(s) for s in d.get("states", [])],
                graph=d.get("graph", "model"), precision=d.get("precision", "fp32"),
                opset=int(d.get("opset", 17)),
                normalization=Normalization(**norm) if norm else None,
                labels=d.get("labels"), vocab=d.get("vocab"),
                special_tokens=dict(d.get("special_tokens", {})), max_len=d.get("max_len"),
                companions=dict(d.get("companions", {})), frame_rate_hz=d.get("frame_rate_hz"),
                streamable=bool(d.get("streamable", True)),
                checkpoint_sha256=d.get("checkpoint_sha256"), producer=dict(d.get("producer", {})),
                extra=dict(d.get("extra", {})), schema_version=version,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(source, "manifest is missing or has a malformed field",
                                expected="the fields of schema version 1", got=repr(e)) from None
        m.validate(source=source)
        return m

    # ------------------------------------------------------------------ checks
    def validate(self, *, source: str = "manifest") -> None:
        """Internal consistency of the manifest itself (graph agreement is the runtime's job)."""
        if self.family not in FAMILIES:
            raise ManifestError(source, "unknown family", expected=list(FAMILIES), got=self.family)
        if self.task not in TASKS:
            raise ManifestError(source, "unknown task", expected=list(TASKS), got=self.task)
        if self.precision not in PRECISIONS:
            raise ManifestError(source, "unknown precision", expected=list(PRECISIONS), got=self.precision)
        if self.graph not in GRAPH_ROLES:
            raise ManifestError(source, "unknown graph role", expected=list(GRAPH_ROLES), got=self.graph)
        if self.directions not in (1, 2):
            raise ManifestError(source, "directions out of range", expected="1 or 2", got=self.directions)
        names_in = {t.name for t in self.inputs}
        names_out = {t.name for t in self.outputs}
        for s in self.states:
            if s.input not in names_in:
                raise ManifestError(source, f"state input {s.input!r} is not among the inputs",
                                    expected=sorted(names_in), got=s.input)
            if s.output not in names_out:
                raise ManifestError(source, f"state output {s.output!r} is not among the outputs",
                                    expected=sorted(names_out), got=s.output)
        if self.normalization is not None and len(self.normalization.mean) != len(self.normalization.std):
            raise ManifestError(source, "normalization mean and std differ in length",
                                expected=len(self.normalization.mean), got=len(self.normalization.std))

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)
