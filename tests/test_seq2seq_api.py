"""``Seq2SeqModel.encode_source`` / ``decode_steps``: the public decoder loop (what ``generate``
runs and ``edgelstm.bench`` times), against a plain ``session.run`` greedy loop."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from graphs import Seq2SeqSpec, save_seq2seq  # noqa: E402

from edgelstm import runtime  # noqa: E402
from edgelstm.errors import UsageError  # noqa: E402

# the graphs of tests/test_runtime_seq2seq.py: these sources stop after 8 and 3 tokens and never
SPEC = Seq2SeqSpec(seed=6, eos_bias=0.1)
SOURCES = ["abcdef", "fa", "cebd"]
EOS = 2


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("s2s_api")
    enc, dec = save_seq2seq(SPEC, d, stem="api")
    return enc, dec, runtime.load(d / "api.onnx", device="cpu", threads=1)


def plain_tokens(enc_path, dec_path, sources: list[str], steps: int) -> np.ndarray:
    """``steps`` greedy tokens per row, eos or not, with session.run and numpy feeds: ``[steps, batch]``."""
    width = max(len(s) for s in sources)
    ids = np.zeros((len(sources), width), np.int64)
    for i, s in enumerate(sources):
        ids[i, :len(s)] = [SPEC.vocab.index(ch) for ch in s]
    lens = np.array([len(s) for s in sources], np.int32)
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(dec_path), providers=["CPUExecutionProvider"])
    memory, h, c = enc.run(["memory", "h_out", "c_out"], {"src": ids, "src_lengths": lens})
    token, out = np.full(len(sources), 1, np.int64), []
    for _ in range(steps):
        logits, h, c = dec.run(["logits", "h_out", "c_out"],
                               {"token": token, "h_in": h, "c_in": c, "memory": memory, "src_lengths": lens})
        token = logits.argmax(-1).astype(np.int64)
        out.append(token)
    return np.stack(out)


@pytest.mark.parametrize("steps", [1, 5, 12], ids=["1", "5", "12-past-every-eos"])
def test_fixed_length_decoding_equals_the_plain_loop(pair, steps):
    """``stop_at_eos=False`` decodes exactly ``steps`` tokens per row, through and past an eos."""
    enc, dec, model = pair
    got = model.decode_steps(model.encode_source(SOURCES), steps, stop_at_eos=False)
    want = plain_tokens(enc, dec, SOURCES, steps)
    assert got.shape == (steps, len(SOURCES))
    np.testing.assert_array_equal(got, want)  # integer ids from the same graph: exact


def test_an_encoded_source_is_never_written(pair):
    """Decoding reads the encoder's state and never writes it: a second decode is the same."""
    _, _, model = pair
    encoded = model.encode_source(SOURCES)
    first = model.decode_steps(encoded, 12, stop_at_eos=False)
    np.testing.assert_array_equal(model.decode_steps(encoded, 12, stop_at_eos=False), first)
    assert encoded.batch == 3 and encoded.width == 6 and encoded.lengths.tolist() == [6, 2, 4]


@pytest.mark.parametrize("sources,rows", [(["fa"], 4), (["abcdef", "fa"], 9), (SOURCES, 10)],
                         ids=["stops-at-3", "stops-at-8", "one-never-stops"])
def test_stop_at_eos_ends_when_every_row_has_stopped(pair, sources, rows):
    """Rows run to the step where the last row produced its eos (or to ``steps``), and each row's
    ids before its first eos are what ``generate`` returns."""
    _, _, model = pair
    hist = model.decode_steps(model.encode_source(sources), 10)
    assert hist.shape == (rows, len(sources))
    for b, tokens in enumerate(model.generate(sources, max_len=10).tokens):
        col = hist[:, b].tolist()
        assert col[:len(tokens)] == tokens
        assert len(tokens) == 10 or col[len(tokens)] == EOS


@pytest.mark.parametrize("encoded,steps,match", [
    ("abc", 4, "encoded | not an encoder result"),
    (None, 0, "max_len | must be a positive integer"),
    (None, 10_001, "max_len | too many output tokens"),
], ids=["not-encoded", "zero-steps", "too-many-steps"])
def test_decode_steps_refuses(pair, encoded, steps, match):
    _, _, model = pair
    with pytest.raises(UsageError, match=re.escape(match)):
        model.decode_steps(model.encode_source("abc") if encoded is None else encoded, steps)
