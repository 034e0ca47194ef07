"""File-level checks of an ONNX model without the onnx package (standard library only).

An ONNX file is a protobuf ``ModelProto``. :func:`scan_model` walks its top-level fields with
the protobuf wire format, which is enough to tell "not ONNX" from "truncated" before
onnxruntime gives a less specific message.

**The seal.** Everything the runtime trusts is the graph (every top-level field but
``metadata_props``) and the manifest (the JSON under ``metadata_props["edgelstm"]``, which holds
normalization, labels and state wiring). :func:`seal_digest` hashes both together, byte for
byte; :func:`seal_proto` stores that digest under ``metadata_props["edgelstm.seal"]``. Every
command that reads a model goes through ONE function, :func:`check_model_bytes` (or
:func:`check_model_file`), which refuses (exit 8, :class:`~edgelstm.errors.ModelFileError`):

* a seal that does not match (weights, nodes or manifest edited after export);
* a manifest without a seal (a removed seal);
* a file whose producer says edgelstm but that has no manifest (a manifest cut off or deleted);
* a manifest of schema 1, whose ``extra["graph_sha256"]`` covered the graph only: re-export it
  (a downgrade to schema 1 would otherwise bypass the manifest's seal);
* two metadata entries under the same edgelstm key (onnxruntime would read one, the check another).

``trust_modified=True`` (the CLI's ``--trust-modified``) skips these seal checks only, with a
warning; the manifest is still parsed and validated against its schema, so a modified file can
give wrong answers but never a crash. Files from other tools (no manifest, another producer)
load as foreign models.

**Graph facts** (initializer headers, nodes, the dtype table, the quantized-op set and the
precision rule) are read from this wire reader by :mod:`edgelstm.runtime.graphfacts`.

Imports: the standard library only (``edgelstm.errors`` / ``edgelstm.manifest`` inside functions).
Imported by the runtime, the benchmark (:mod:`edgelstm.bench`), export, quantize, verify and the CLI.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

METADATA_PROPS_FIELD = 14
IR_VERSION_FIELD = 1
GRAPH_FIELD = 7
OPSET_IMPORT_FIELD = 8
PRODUCER_NAME_FIELD = 2
DIGEST_KEY = "graph_sha256"  # schema 1: graph-only digest in manifest.extra (no longer accepted unsealed)
SEAL_KEY = "edgelstm.seal"  # metadata_props key of the seal (graph + manifest)
SEAL_PREFIX = "sha256-v2:"
PRODUCER = "edgelstm"
TRUST_HINT = "re-export the model, or pass --trust-modified to load it anyway"

log = logging.getLogger("edgelstm.runtime")


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class Field:
    number: int
    wire_type: int
    start: int  # offset of the field's key
    end: int    # offset one past its value


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise WireError(f"varint runs past the end at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def iter_fields(buf: bytes) -> list[Field]:
    """Top-level fields of a protobuf message; raises :class:`WireError` on malformed bytes."""
    fields = []
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {start}")
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire} at byte {start}")
        if pos > n:
            raise WireError(f"field {number} at byte {start} needs {pos - n} more bytes than the file has")
        fields.append(Field(number, wire, start, pos))
    return fields


def iter_values(buf: bytes):
    """Top-level fields of a protobuf message with their values: ``(number, wire_type, value)``,
    ``value`` an int (varint), or bytes (length-delimited, fixed32, fixed64). Raises
    :class:`WireError` on malformed bytes."""
    for f in iter_fields(buf):
        _, pos = _varint(buf, f.start)
        if f.wire_type == 0:
            value, _ = _varint(buf, pos)
        elif f.wire_type == 2:
            _, pos = _varint(buf, pos)
            value = buf[pos:f.end]
        else:
            value = buf[pos:f.end]
        yield f.number, f.wire_type, value


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """One varint at ``pos``: ``(value, next position)``; :class:`WireError` when malformed."""
    return _varint(buf, pos)


def scan_model(buf: bytes) -> list[Field]:
    """Fields of a ModelProto; raises :class:`WireError` when it is not one."""
    fields = iter_fields(buf)
    numbers = {f.number for f in fields}
    if GRAPH_FIELD not in numbers:
        raise WireError("no graph field (ModelProto field 7)")
    if IR_VERSION_FIELD not in numbers:
        raise WireError("no ir_version field (ModelProto field 1)")
    return fields


def graph_digest(buf: bytes) -> str:
    """SHA-256 of every top-level ModelProto field except ``metadata_props``, in file order."""
    h = hashlib.sha256()
    for f in iter_fields(buf):
        if f.number != METADATA_PROPS_FIELD:
            h.update(buf[f.start:f.end])
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- the seal
def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _entry(buf: bytes, f: Field) -> tuple[str, str]:
    """(key, value) of one ``StringStringEntryProto`` (a ``metadata_props`` field)."""
    if f.wire_type != 2:
        raise WireError(f"metadata_props entry at byte {f.start} is not length-delimited")
    _, pos = _varint(buf, f.start)
    _, pos = _varint(buf, pos)
    key = value = b""
    for number, wire, v in iter_values(buf[pos:f.end]):
        if wire == 2 and number == 1:
            key = v
        elif wire == 2 and number == 2:
            value = v
    try:
        return key.decode("utf-8"), value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError(f"metadata_props entry at byte {f.start} is not UTF-8 ({e.reason})") from None


def metadata(buf: bytes) -> tuple[dict[str, str], list[str]]:
    """``metadata_props`` as a dict, and the keys that appear more than once."""
    out: dict[str, str] = {}
    repeated: list[str] = []
    for f in iter_fields(buf):
        if f.number == METADATA_PROPS_FIELD:
            k, v = _entry(buf, f)
            if k in out:
                repeated.append(k)
            out[k] = v
    return out, repeated


def producer_name(buf: bytes) -> str:
    for number, wire, value in iter_values(buf):
        if number == PRODUCER_NAME_FIELD and wire == 2:
            return value.decode("utf-8", "replace")
    return ""


def seal_digest(buf: bytes, manifest_text: str) -> str:
    """SHA-256 over every top-level ModelProto field except ``metadata_props`` (in file order),
    then the manifest's exact JSON text: the graph and the manifest together."""
    h = hashlib.sha256(b"edgelstm seal v2\0")
    for f in iter_fields(buf):
        if f.number != METADATA_PROPS_FIELD:
            h.update(buf[f.start:f.end])
    h.update(b"\0manifest\0")
    h.update(manifest_text.encode("utf-8"))
    return SEAL_PREFIX + h.hexdigest()


def seal_proto(model) -> None:
    """Seal an ``onnx.ModelProto`` in place with :func:`seal_digest`; its manifest must be set
    first. Duck-typed so that this module never imports onnx."""
    from edgelstm.manifest import MANIFEST_KEY  # noqa: PLC0415

    for prop in list(model.metadata_props):
        if prop.key == SEAL_KEY:
            model.metadata_props.remove(prop)
    text = next(prop.value for prop in model.metadata_props if prop.key == MANIFEST_KEY)
    entry = model.metadata_props.add()
    entry.key, entry.value = SEAL_KEY, seal_digest(model.SerializeToString(), text)


def read_model_bytes(path: str | os.PathLike) -> tuple[Path, bytes]:
    """Read and structurally check an ONNX file; :class:`~edgelstm.errors.ModelFileError` if it is not one."""
    from edgelstm.errors import ModelFileError  # noqa: PLC0415

    p = Path(path)
    if not p.exists():
        raise ModelFileError(str(p), "model file not found", expected="an existing .onnx file", got="no such file")
    if p.is_dir():
        raise ModelFileError(str(p), "model path is a directory", expected="an .onnx file", got="a directory")
    if not p.is_file():
        raise ModelFileError(str(p), "model path is not a regular file", expected="an .onnx file",
                             got="a device, FIFO or socket")
    data = p.read_bytes()
    check_structure(data, str(p))
    return p, data


def check_structure(data: bytes, source: str) -> None:
    """Structurally check ONNX bytes (a file's or a caller's); :class:`~edgelstm.errors.ModelFileError`
    naming ``source`` when they are empty, truncated or not a ModelProto."""
    from edgelstm.errors import ModelFileError  # noqa: PLC0415

    if not data:
        raise ModelFileError(source, "model file is empty", expected="an ONNX protobuf", got="0 bytes")
    try:
        scan_model(data)
    except WireError as e:
        kind = "truncated or corrupt" if "more bytes than the file has" in str(e) or "past the end" in str(e) \
            else "not an ONNX model"
        raise ModelFileError(source, f"model file is {kind}", expected="an ONNX ModelProto",
                             got=f"{e} ({len(data)} bytes)") from None


def seal_problem(data: bytes, source: str) -> tuple[str, str, str] | None:
    """None when the file is sealed and intact or foreign (no manifest, another producer); else
    ``(problem, expected, got)``. Raises :class:`~edgelstm.errors.ModelFileError` on corrupt metadata."""
    from edgelstm.errors import ModelFileError  # noqa: PLC0415
    from edgelstm.manifest import MANIFEST_KEY, peek_schema_version  # noqa: PLC0415

    try:
        meta, repeated = metadata(data)
        producer = producer_name(data)
    except WireError as e:
        raise ModelFileError(source, "model file is truncated or corrupt", expected="an ONNX ModelProto",
                             got=str(e)) from None
    text = meta.get(MANIFEST_KEY)
    dup = [k for k in repeated if k in (MANIFEST_KEY, SEAL_KEY)]
    if dup:
        return (f"metadata key {dup[0]!r} appears more than once (which one a reader takes is undefined)",
                "one entry", f"{repeated.count(dup[0]) + 1} entries")
    if text is None:
        if producer == PRODUCER:
            return ("written by edgelstm but its manifest is missing (cut off or deleted)",
                    f"a {MANIFEST_KEY!r} entry in metadata_props", "none")
        return None
    seal = meta.get(SEAL_KEY)
    if seal is None:
        if peek_schema_version(text) == 1:
            return ("sealed by the old scheme (manifest schema 1 seals the graph only, not the manifest)",
                    "a model exported by this edgelstm (manifest schema 2)", "schema 1")
        return ("the manifest is not sealed (seal removed, or written by another tool)", f"a {SEAL_KEY!r} entry",
                "none")
    actual = seal_digest(data, text)
    if seal != actual:
        return ("graph or manifest modified after export (seal mismatch)", f"{seal[:30]}...", f"{actual[:30]}...")
    return None


def check_model_bytes(data: bytes, source: str, *, trust_modified: bool = False):
    """THE integrity check every command runs on a model file: returns its validated
    :class:`~edgelstm.manifest.Manifest`, or None for a foreign ONNX file. Raises
    :class:`~edgelstm.errors.ModelFileError` (exit 8) for a broken or missing seal (see the module
    docstring) unless ``trust_modified``, and :class:`~edgelstm.errors.ManifestError` (exit 8) for a
    manifest that fails its schema (always)."""
    from edgelstm.errors import ModelFileError  # noqa: PLC0415

    problem = seal_problem(data, source)
    if problem is not None:
        if not trust_modified:
            what, expected, got = problem
            raise ModelFileError(source, f"{what}; {TRUST_HINT}", expected=expected, got=got)
        log.warning("%s: %s; loaded anyway (--trust-modified skips the seal check; the manifest is still "
                    "validated)", source, problem[0])
    return peek_manifest(data, source)


def peek_manifest(data: bytes, source: str):
    """THE manifest reader: the validated :class:`~edgelstm.manifest.Manifest` under
    ``metadata_props["edgelstm"]`` of a model's bytes, or None; the seal is NOT checked (use
    :func:`check_model_bytes` for anything that runs the model)."""
    from edgelstm.manifest import MANIFEST_KEY, Manifest  # noqa: PLC0415

    text = metadata(data)[0].get(MANIFEST_KEY)
    if text is None:
        return None
    return Manifest.from_json(text, source=f"{source} manifest")


def set_manifest(model, manifest) -> None:
    """THE manifest writer: ``manifest`` as the one ``metadata_props["edgelstm"]`` entry of an
    ONNX ``ModelProto`` (read by attribute; any earlier entries under that key are removed).
    Seal afterwards with :func:`seal_proto`."""
    from edgelstm.manifest import MANIFEST_KEY  # noqa: PLC0415

    for prop in [p for p in model.metadata_props if p.key == MANIFEST_KEY]:
        model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = MANIFEST_KEY, manifest.to_json()


def check_model_file(path: str | os.PathLike, *, trust_modified: bool = False):
    """:func:`read_model_bytes` then :func:`check_model_bytes`: ``(path, bytes, manifest or None)``."""
    p, data = read_model_bytes(path)
    return p, data, check_model_bytes(data, str(p), trust_modified=trust_modified)
