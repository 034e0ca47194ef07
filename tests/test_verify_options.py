"""VerifyOptions: the typed, frozen options of ``verify`` (one object for the single-graph and
the seq2seq harness, and for the CLI); keyword fields replace those of an options object."""
from __future__ import annotations

import dataclasses
import re

import pytest

pytest.importorskip("onnx")

from edgelstm.errors import UnknownChoiceError, UsageError  # noqa: E402
from edgelstm.verify import VerifyOptions, verify  # noqa: E402
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402


def test_defaults_are_the_documented_ones():
    o = VerifyOptions()
    assert (o.devices, o.steps, o.seed, o.threads, o.chunks, o.run_data, o.data_limit) == \
        (("cpu",), 200, 0, 1, (1, 4, 16), True, 256)
    assert o.checks == ("outputs", "task", "streaming", "drift", "batch_invariance", "state_roundtrip")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.steps = 1  # type: ignore[misc]


@pytest.mark.parametrize("given, field, expected", [
    ({"against": "q.onnx"}, "against", ("q.onnx",)),           # one file where several are allowed
    ({"devices": ["cpu", "cuda"]}, "devices", ("cpu", "cuda")),
    ({"atol": iter(["y:1e-3"])}, "atol", ("y:1e-3",)),           # any iterable, read once
    ({"provider_options": {"CUDAExecutionProvider": {"use_tf32": "0"}}}, "provider_options",
     {"CUDAExecutionProvider": {"use_tf32": "0"}}),
], ids=["one-against", "device-list", "atol-iterator", "provider-options"])
def test_sequences_are_normalised(given, field, expected):
    assert getattr(VerifyOptions(**given), field) == expected


@pytest.mark.parametrize("given, error, pattern", [
    ({"checks": ("speed",)}, UnknownChoiceError, "--checks | unknown check"),
    ({"oracles": ("tvm",)}, UnknownChoiceError, "--oracles | unknown oracle backend"),
    ({"chunks": (4, 0)}, UsageError, "chunks | chunk sizes must be >= 1"),
    ({"steps": -1}, UsageError, "--steps | negative step count"),
    ({"drift_chunk": 0}, UsageError, "drift_chunk | chunk size must be >= 1"),
], ids=["check", "oracle", "chunk", "steps", "drift-chunk"])
def test_bad_values_are_refused_when_built(given, error, pattern):
    with pytest.raises(error, match=re.escape(pattern)):
        VerifyOptions(**given)


def test_build_replaces_fields_and_names_unknown_ones():
    base = VerifyOptions(steps=0, seed=3)
    assert VerifyOptions.build(base, seed=4) == VerifyOptions(steps=0, seed=4)
    assert VerifyOptions.build(None, steps=5) == VerifyOptions(steps=5)
    with pytest.raises(UsageError, match=re.escape("verify() | unknown option") + r".*got \['step'\]"):
        VerifyOptions.build(base, step=5)


def test_an_options_object_and_keywords_give_the_same_verification(tmp_path):
    path = save(build_recurrent(RecurrentSpec(cell="gru")), tmp_path / "m.onnx")
    opts = VerifyOptions(steps=0, oracles=("numpy",), checks=("outputs", "streaming"))
    by_object = verify(path, opts)
    by_keywords = verify(path, steps=0, oracles=["numpy"], checks=["outputs", "streaming"])
    assert by_object and by_keywords
    assert by_object.config == by_keywords.config
    assert [(c.check, c.candidate, c.output, c.passed) for c in by_object.checks] == \
        [(c.check, c.candidate, c.output, c.passed) for c in by_keywords.checks]
    # keywords win over the object's fields
    assert verify(path, opts, seed=7).config["seed"] == 7
