"""Bundled data, synthetic generators and user data readers (NumPy only, fast)."""
from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgelstm.data import DATASETS, EOS, IGNORE_INDEX, load_dataset
from edgelstm.data.bundle import valid_step_mask
from edgelstm.data.real import BUNDLED_DIR
from edgelstm.data.synthetic import decode_ids, encode_text
from edgelstm.errors import DataError, UnknownChoiceError


# ---------------------------------------------------------------------------- bundled
@pytest.mark.parametrize("name", sorted(DATASETS), ids=sorted(DATASETS))
def test_bundled_dataset_shapes_and_task(name):
    b = load_dataset(name, seed=0)
    assert b.task == DATASETS[name].task
    for split_name, s in b.splits.items():
        assert len(s) > 0, split_name
        assert s.lengths.dtype == np.int64 and s.lengths.shape == (len(s),)
        assert (s.lengths >= 1).all() and (s.lengths <= s.x.shape[1]).all()
        if b.task == "seq2seq":
            assert s.x.dtype == np.int64 and s.x.ndim == 2
        else:
            assert s.x.dtype == np.float32 and s.x.shape[2] == b.num_features
            assert np.isfinite(s.x).all()
    if b.normalization is not None:
        assert b.normalization.mean.shape == (b.num_features,)
        assert (b.normalization.std > 0).all()


def test_bundled_files_match_sources_md():
    text = (BUNDLED_DIR / "SOURCES.md").read_text()
    for f in ("digits.csv.gz", "airline.csv", "sunspots.csv"):
        digest = hashlib.sha256((BUNDLED_DIR / f).read_bytes()).hexdigest()
        assert f"`{f}`" in text and digest in text, f


def test_digits_content_and_normalization_from_train():
    b = load_dataset("digits", seed=0)
    n = sum(len(s) for s in b.splits.values())
    assert n == 1797 and b.train.x.shape[1:] == (8, 8)
    assert b.train.x.min() == 0 and b.train.x.max() == 16  # 4x4 blocks count 0..16 on-pixels
    assert set(np.unique(b.train.y)) == set(range(10)) and b.labels == [str(i) for i in range(10)]
    # mean/std come from the train split only; float32 sums over 11,504 values: 1e-4 relative
    np.testing.assert_allclose(b.normalization.mean, b.train.x.reshape(-1, 8).mean(0), rtol=1e-4, atol=1e-5)


def test_random_split_depends_on_seed_only():
    a, b, c = (load_dataset("digits", seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.test.y, b.test.y)
    assert not np.array_equal(a.test.x, c.test.x)


def test_airline_is_chronological_with_masked_periods():
    b = load_dataset("airline")
    assert b.task == "forecast" and b.train.x.shape == (84, 24, 1)
    # train windows: y is x one month later
    np.testing.assert_array_equal(b.train.x[0, 1:], b.train.y[0, :-1])
    assert b.val.mask.sum() == 12 and b.test.mask.sum() == 24
    assert b.test.y[0, -1, 0] == 432.0  # December 1960 (thousands of passengers)
    assert b.test.lengths[0] == 143     # all of history except the last month as input


def test_sine_has_variable_lengths_and_zero_padding():
    b = load_dataset("sine", seed=3)
    s = b.train
    assert len(set(s.lengths.tolist())) > 10
    pad = ~valid_step_mask(s.lengths, s.x.shape[1])
    assert (s.x[pad] == 0).all()
    i = int(np.argmax(s.lengths))
    np.testing.assert_array_equal(s.x[i, 1:s.lengths[i]], s.y[i, :s.lengths[i] - 1])


def test_timing_spikes_every_period_after_two_cues():
    b = load_dataset("timing", seed=0)
    for x, y in zip(b.train.x[:50, :, 0], b.train.y[:50]):
        cues = np.flatnonzero(x)
        assert len(cues) == 2
        period = cues[1] - cues[0]
        spikes = np.flatnonzero(y)
        np.testing.assert_array_equal(spikes, np.arange(cues[0] + 2 * period, len(y), period))


def test_dates_targets_are_iso_of_the_source():
    b = load_dataset("dates", seed=0)
    months = {m[:3].lower(): i + 1 for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
    assert b.vocab[:3] == ["<pad>", "<bos>", "<eos>"] and b.max_len == 11
    for src, tgt, n in zip(b.train.x[:200], b.train.y[:200], b.train.y_lengths[:200]):
        s, t = decode_ids(src, b.vocab), decode_ids(tgt, b.vocab)
        d = dt.date.fromisoformat(t)
        assert tgt[n - 1] == EOS
        assert str(d.year) in s and (str(d.day) in s)
        words = [w.strip(",").lower()[:3] for w in s.split() if w.strip(",").isalpha()]
        if words and words[-1] in months:
            assert months[words[-1]] == d.month
    np.testing.assert_array_equal(encode_text("23 Nov 2026", b.vocab)[:2],
                                  [b.vocab.index("2"), b.vocab.index("3")])


def test_encode_text_refuses_unknown_characters():
    with pytest.raises(DataError, match=r"characters outside the vocabulary; .*got \['#'\]"):
        encode_text("#1 Jan 2000", load_dataset("dates").vocab)


# ---------------------------------------------------------------------------- unknown names
@pytest.mark.parametrize("spec", ["mnist", "csvx:foo", ""], ids=["name", "bad-prefix", "empty"])
def test_unknown_dataset_lists_choices(spec):
    with pytest.raises(UnknownChoiceError, match=r"dataset \| unknown data set; expected one of \['digits',.*'csv:PATH'"):
        load_dataset(spec)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.csv \| file not found"):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")


# ---------------------------------------------------------------------------- CSV
def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_sequences_with_labels_and_variable_lengths(tmp_path):
    rows = ["label,t1,t2,t3,t4"]
    for i in range(30):
        n = 2 + i % 3
        vals = [str(i + k) for k in range(n)] + [""] * (4 - n)
        rows.append(",".join(["up" if i % 2 else "down", *vals]))
    b = load_dataset(f"csv:{_write(tmp_path, 'seq.csv', chr(10).join(rows))}", seed=0)
    assert b.task == "classify" and b.labels == ["down", "up"] and b.num_outputs == 2
    all_lengths = np.concatenate([s.lengths for s in b.splits.values()])
    assert sorted(set(all_lengths.tolist())) == [2, 3, 4]  # kept, never truncated
    assert b.train.x.shape[1:] == (4, 1)


def test_csv_integer_labels_keep_their_ids(tmp_path):
    rows = ["t1,t2,class"] + [f"{i},{i * 2},{i % 3}" for i in range(12)]
    b = load_dataset(f"csv:{_write(tmp_path, 'ints.csv', chr(10).join(rows))}")
    assert b.labels == ["0", "1", "2"]
    ys = np.concatenate([s.y for s in b.splits.values()])
    assert sorted(ys.tolist()) == sorted(i % 3 for i in range(12))


def test_csv_single_column_is_a_forecast_series(tmp_path):
    vals = "\n".join(str(np.sin(i / 5)) for i in range(200))
    b = load_dataset(f"csv:{_write(tmp_path, 'series.csv', 'value' + chr(10) + vals)}")
    assert b.task == "forecast" and b.num_features == 1
    assert b.test.mask.sum() == 20 and b.val.mask.sum() == 20


@pytest.mark.parametrize("text,match", [
    ("label,a,b\n1,2,3\n0,4\n", r"bad.csv:3 \| ragged row; expected 3 fields like the header \(line 1\), got 2"),
    ("label,a,b,c\n1,2,,3\n", r"bad.csv:2 column 3 \('b'\) \| missing value; expected a number \(only trailing"),
    ("label,a,b\n1,2,x7\n", r"bad.csv:2 column 3 \('b'\) \| not a number; expected a decimal number, got 'x7'"),
    ("a,b\n1,2\n3,\n", r"bad.csv:3 column 2 \('b'\) \| missing value; expected a number, got an empty cell"),
    ("a\n1\nnan\n", r"bad.csv:3 column 1 \('a'\) \| non-finite value"),
    ("label,a\n,1\n", r"bad.csv:2 column 1 \('label'\) \| missing value; expected a label"),
    ("", r"bad.csv \| empty CSV"),
], ids=["ragged", "gap", "non-number", "series-missing", "nan", "no-label", "empty"])
def test_csv_bad_input_names_file_line_column(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        load_dataset(f"csv:{_write(tmp_path, 'bad.csv', text)}")


# ---------------------------------------------------------------------------- NPZ
def test_npz_classification_with_lengths(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 7, 3)).astype(np.float32)
    lengths = rng.integers(1, 8, size=20)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 4, lengths=lengths,
             labels=np.array(["a", "b", "c", "d"]), frame_rate_hz=np.float64(100.0))
    b = load_dataset(f"npz:{tmp_path / 'd.npz'}", seed=0)
    assert b.task == "classify" and b.labels == ["a", "b", "c", "d"] and b.frame_rate_hz == 100.0
    got = np.concatenate([s.lengths for s in b.splits.values()])
    assert sorted(got.tolist()) == sorted(lengths.tolist())
    # padding past each length is zeroed, valid steps are kept bit for bit
    s = b.train
    assert (s.x[~valid_step_mask(s.lengths, 7)] == 0).all()


@pytest.mark.parametrize("y,task", [
    (np.zeros((10, 5), dtype=np.int64), "label"),
    (np.zeros((10, 5), dtype=np.float32), "regress"),
    (np.zeros((10, 5, 2), dtype=np.float64), "regress"),
], ids=["int-per-step", "float-per-step", "float-k"])
def test_npz_task_from_y(tmp_path, y, task):
    np.savez(tmp_path / "d.npz", x=np.ones((10, 5)), y=y, lengths=np.full(10, 3))
    b = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert b.task == task and b.train.x.shape[1:] == (5, 1)
    if task == "label":
        assert (b.train.y[:, 3:] == IGNORE_INDEX).all()  # steps past the length do not count


@pytest.mark.parametrize("arrays,match", [
    (dict(data=np.ones((3, 4)), y=np.ones(3)), r"no array named 'x'; expected arrays x \[N,T,F\] and y, got arrays \['data', 'y'\]"),
    (dict(x=np.ones((3, 4))), r"no array named 'y'.*got arrays \['x'\]"),
    (dict(x=np.ones((3, 4, 2)), y=np.ones(3)), r"y \| float y must give a target per step"),
    (dict(x=np.ones((3, 4, 2)), y=np.ones(3, dtype=int), lengths=np.array([1, 5, 2])),
     r"lengths\[1\] \| length out of range; expected 1..4, got 5"),
    (dict(x=np.ones((3, 4, 2)), y=np.ones(2, dtype=int)), r"y \| first dimension differs from x; expected 3, got 2"),
    (dict(x=np.full((3, 4, 2), np.nan), y=np.ones(3, dtype=int)), r"x\[0, 0\] \| non-finite value"),
], ids=["no-x", "no-y", "float-y-per-seq", "bad-length", "y-rows", "nan"])
def test_npz_bad_input(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=match):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_npz_refuses_pickled_objects(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object), y=np.ones(1))
    with pytest.raises(DataError, match=r"object \(pickled\) arrays are refused: nothing is unpickled"):
        load_dataset(f"npz:{tmp_path / 'o.npz'}")


# ---------------------------------------------------------------------------- text
def test_text_next_character(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 40
    b = load_dataset(f"text:{_write(tmp_path, 't.txt', text)}")
    assert b.task == "label" and b.vocab == sorted(set(text)) and b.normalization is None
    x, y = b.train.x[0], b.train.y[0]
    assert x.shape == (64, len(b.vocab)) and (x.sum(1) == 1).all()
    np.testing.assert_array_equal(x.argmax(1)[1:], y[:-1])


def test_text_too_short(tmp_path):
    with pytest.raises(DataError, match=r"t.txt \| text too short; expected at least 650 characters, got 5"):
        load_dataset(f"text:{_write(tmp_path, 't.txt', 'hello')}")
