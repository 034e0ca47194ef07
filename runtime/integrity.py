"""File-level checks of an ONNX model without the onnx package (standard library only).

An ONNX file is a protobuf ``ModelProto``. :func:`scan_model` walks its top-level fields with
the protobuf wire format, which is enough to tell "not ONNX" from "truncated" before
onnxruntime gives a less specific message, and :func:`graph_digest` hashes every top-level
field except ``metadata_props`` (field 14), so an exporter can store the digest in the
manifest (``manifest.extra["graph_sha256"]``) and the runtime can detect tampered weights or
nodes: the digest does not change when the manifest itself is written.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

METADATA_PROPS_FIELD = 14
IR_VERSION_FIELD = 1
GRAPH_FIELD = 7
OPSET_IMPORT_FIELD = 8
DIGEST_KEY = "graph_sha256"


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
