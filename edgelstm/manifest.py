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
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from edgelstm.errors import ManifestError

MANIFEST_KEY = "edgelstm"
# 2: sealed together with the graph (metadata_props["edgelstm.seal"], see
# edgelstm.runtime.integrity); 1: graph-only digest in extra["graph_sha256"], refused unless the
# caller trusts modified files (the manifest itself was never covered).
SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (1, 2)
DTYPES = ("float32", "float16", "float64", "int32", "int64", "int8", "uint8", "bool")
MAX_NESTING = 16      # extra / producer: JSON deeper than this is refused (no recursion limits hit later)
MAX_ITEMS = 1_000_000  # labels, vocab, normalization: longer lists are refused before any allocation

FAMILIES = ("lstm", "peephole", "gru", "attention", "rnn", "custom")
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
TASKS = ("classify", "label", "regress", "forecast", "seq2seq", "custom")
GRAPH_ROLES = ("model", "encoder", "decoder_step")
#: Default ONNX opset (export's default, and a manifest's when it names none). 17 holds every op
#: edgelstm emits (LSTM/GRU/RNN-14, Squeeze/Slice with tensor axes); it is the newest opset the
#: TorchScript exporter fully covers AND is run by every onnxruntime release since 1.11 (2022),
#: which matters on edge devices with older builds.
DEFAULT_OPSET = 17


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
    opset: int = DEFAULT_OPSET
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
    #: every input and output with its axes and role (edgelstm.runtime.interface.Interface.to_dict);
    #: optional in schema 2 (files written before it infer it from the graph), omitted when None
    interface: dict[str, Any] | None = None

    # ------------------------------------------------------------------ serialisation
    def to_json(self) -> str:
        d = asdict(self)
        if d["interface"] is None:
            del d["interface"]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> "Manifest":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(source, "manifest is not valid JSON", expected="a JSON object", got=str(e)) from None
        except RecursionError:
            raise ManifestError(source, "manifest JSON is nested too deeply", expected=f"at most {MAX_NESTING} levels",
                                got="more than the parser's recursion limit") from None
        if not isinstance(d, dict):
            raise ManifestError(source, "manifest is not a JSON object", got=type(d).__name__)
        return cls.from_dict(d, source=source)

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "manifest") -> "Manifest":
        version = d.get("schema_version")
        if isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS:
            raise ManifestError(source, "unknown manifest schema version",
                                expected=f"one of {list(SUPPORTED_SCHEMA_VERSIONS)}", got=_short(version))
        check_schema(d, source=source)
        try:
            norm = d.get("normalization")
            m = cls(
                family=d["family"], task=d["task"], layers=int(d["layers"]),
                hidden_size=int(d["hidden_size"]), directions=int(d["directions"]),
                inputs=[TensorSpec.from_dict(t) for t in d["inputs"]],
                outputs=[TensorSpec.from_dict(t) for t in d["outputs"]],
                states=[StateSpec.from_dict(s) for s in d.get("states", [])],
                graph=d.get("graph", "model"), precision=d.get("precision", "fp32"),
                opset=int(d.get("opset", DEFAULT_OPSET)),
                normalization=Normalization(**norm) if norm else None,
                labels=d.get("labels"), vocab=d.get("vocab"),
                special_tokens=dict(d.get("special_tokens", {})), max_len=d.get("max_len"),
                companions=dict(d.get("companions", {})), frame_rate_hz=d.get("frame_rate_hz"),
                streamable=bool(d.get("streamable", True)),
                checkpoint_sha256=d.get("checkpoint_sha256"), producer=dict(d.get("producer", {})),
                extra=dict(d.get("extra", {})), schema_version=version,
                interface=dict(d["interface"]) if d.get("interface") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(source, "manifest is missing or has a malformed field",
                                expected=f"the fields of schema version {version}", got=repr(e)[:200]) from None
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
        check_schema(json.loads(self.to_json()), source=source)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


# ------------------------------------------------------------------------------ the schema
def peek_schema_version(text: str) -> Any:
    """``schema_version`` of a manifest JSON text, or None when it cannot be read."""
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return d.get("schema_version") if isinstance(d, dict) else None


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _depth(v: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping once past ``limit``."""
    if limit < 0:
        return 1
    if isinstance(v, dict):
        return 1 + max((_depth(x, limit - 1) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x, limit - 1) for x in v), default=0)
    return 0


class _Schema:
    """Type checks of a manifest dict, each failure a :class:`ManifestError` naming the field."""

    def __init__(self, d: dict, source: str):
        self.d, self.source = d, source

    def fail(self, name: str, expected: str, got: Any) -> None:
        raise ManifestError(self.source, f"field {name!r} is malformed", expected=expected, got=_short(got))

    def int_(self, name: str, v: Any, lo: int = 0, optional: bool = False) -> None:
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            self.fail(name, f"an integer >= {lo}", v)

    def str_(self, name: str, v: Any, optional: bool = False) -> None:
        if v is None and optional:
            return
        if not isinstance(v, str):
            self.fail(name, "a string", v)

    def number(self, name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(name, "a finite number", v)
        return float(v)

    def list_(self, name: str, v: Any, optional: bool = False) -> bool:
        if v is None and optional:
            return False
        if not isinstance(v, list):
            self.fail(name, "a list", v)
        if len(v) > MAX_ITEMS:
            self.fail(name, f"at most {MAX_ITEMS} items", f"{len(v)} items")
        return True

    def dict_(self, name: str, v: Any, values: type | None = None) -> None:
        if not isinstance(v, dict):
            self.fail(name, "an object", v)
        if values is not None:
            for k, x in v.items():
                if isinstance(x, bool) or not isinstance(x, values):
                    self.fail(f"{name}.{k}", f"a {values.__name__}", x)
        if _depth(v, MAX_NESTING) > MAX_NESTING:
            self.fail(name, f"JSON nested at most {MAX_NESTING} levels", "deeper")

    def tensor(self, name: str, t: Any, keys: tuple[str, ...]) -> None:
        if not isinstance(t, dict):
            self.fail(name, "an object", t)
        for k in keys:
            self.str_(f"{name}.{k}", t.get(k))
        if t.get("dtype", "float32") not in DTYPES:
            self.fail(f"{name}.dtype", f"one of {list(DTYPES)}", t.get("dtype"))
        shape = t.get("shape")
        self.list_(f"{name}.shape", shape)
        for dim in shape:
            if isinstance(dim, bool) or not (isinstance(dim, str) or (isinstance(dim, int) and dim >= 0)):
                self.fail(f"{name}.shape", "dimensions that are integers >= 0 or names", shape)
        if "meaning" in t:
            self.str_(f"{name}.meaning", t["meaning"])


def _plain_file_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0:")


def check_schema(d: dict, *, source: str = "manifest") -> None:
    """Validate a manifest dict against the schema: types, list lengths against the manifest's own
    tensor specs (which the runtime checks against the graph), finite normalization with std > 0,
    one label per class, companions that are plain file names beside the model. Raises
    :class:`ManifestError` naming the first bad field."""
    s = _Schema(d, source)
    for k in ("family", "task"):
        s.str_(k, d.get(k))
    for k in ("graph", "precision"):
        s.str_(k, d.get(k, "model" if k == "graph" else "fp32"))
    s.int_("layers", d.get("layers"), 1)
    s.int_("hidden_size", d.get("hidden_size"), 1)
    s.int_("directions", d.get("directions"), 1)
    s.int_("opset", d.get("opset", DEFAULT_OPSET), 1)
    s.int_("max_len", d.get("max_len"), 1, optional=True)
    for k in ("inputs", "outputs"):
        s.list_(k, d.get(k))
        for i, t in enumerate(d[k]):
            s.tensor(f"{k}[{i}]", t, ("name", "dtype"))
    s.list_("states", d.get("states", []))
    for i, t in enumerate(d.get("states", [])):
        s.tensor(f"states[{i}]", t, ("input", "output"))
    for k in ("labels", "vocab"):
        if s.list_(k, d.get(k), optional=True):
            for x in d[k]:
                s.str_(f"{k} item", x)
    s.dict_("special_tokens", d.get("special_tokens", {}), int)
    s.dict_("companions", d.get("companions", {}), str)
    for role, name in d.get("companions", {}).items():
        if not _plain_file_name(name):
            s.fail(f"companions.{role}", "a plain file name beside the model (no folders, no '..')", name)
    s.dict_("producer", d.get("producer", {}), str)
    s.dict_("extra", d.get("extra", {}))
    if d.get("interface") is not None:
        s.dict_("interface", d["interface"])
        for k in ("inputs", "outputs"):
            s.list_(f"interface.{k}", d["interface"].get(k))
    if not isinstance(d.get("streamable", True), bool):
        s.fail("streamable", "true or false", d.get("streamable"))
    s.str_("checkpoint_sha256", d.get("checkpoint_sha256"), optional=True)
    if d.get("frame_rate_hz") is not None and s.number("frame_rate_hz", d["frame_rate_hz"]) <= 0:
        s.fail("frame_rate_hz", "a number > 0", d["frame_rate_hz"])
    tensors = {t["name"]: t for t in d["inputs"] + d["outputs"]}
    norm = d.get("normalization")
    if norm is not None:
        features = tensors.get("x", {}).get("shape", [None])[-1:] or [None]
        check_normalization(norm, source=source, features=features[0])
    labels = d.get("labels")
    if labels:
        out = next((tensors[n] for n in ("logits", "y") if n in tensors), None)
        classes = out["shape"][-1] if out and out["shape"] else None
        if isinstance(classes, int) and classes != len(labels):
            raise ManifestError(source, f"label count disagrees with the classes of {out['name']!r}",
                                expected=classes, got=len(labels))


def check_normalization(norm: Any, *, source: str, features: Any = None) -> None:
    """``{"mean": [...], "std": [...]}``: finite numbers, equal lengths (= ``features`` when that is
    an int), every std > 0. Raises :class:`ManifestError`."""
    s = _Schema({}, source)
    s.dict_("normalization", norm)
    if set(norm) != {"mean", "std"}:
        s.fail("normalization", "an object with exactly 'mean' and 'std'", sorted(norm))
    s.list_("normalization.mean", norm["mean"])
    s.list_("normalization.std", norm["std"])
    mean = [s.number("normalization.mean", v) for v in norm["mean"]]
    std = [s.number("normalization.std", v) for v in norm["std"]]
    if len(mean) != len(std):
        raise ManifestError(source, "normalization mean and std differ in length", expected=len(mean), got=len(std))
    if any(v <= 0 for v in std):
        raise ManifestError(source, "normalization std must be > 0", expected="every std > 0",
                            got=[v for v in std if v <= 0][:3])
    if isinstance(features, int) and not isinstance(features, bool) and features != len(mean):
        raise ManifestError(source, "normalization length disagrees with the feature size of 'x'",
                            expected=features, got=len(mean))
