"""Seeded synthetic data sets. The same seed gives the same arrays on every machine.

* ``sine``   forecasting: noisy sines of random frequency, phase and amplitude, variable length.
* ``timing`` per-step labelling: two cue pulses ``P`` steps apart; the model must emit a spike
  every ``P`` steps after them with no further input. Measuring and reproducing an interval is
  the task family on which Gers & Schmidhuber (2000) introduced peephole connections.
* ``dates``  seq2seq: date strings in several human formats -> ISO ``YYYY-MM-DD``.
"""
from __future__ import annotations

import datetime as _dt

import numpy as np

from edgelstm.data.bundle import DatasetBundle, Split, fit_normalization, pad_sequences, random_split
from edgelstm.tokens import BOS, EOS, PAD, SPECIAL_TOKENS

# ---------------------------------------------------------------------------- sine
SINE_STEPS = (32, 64)   # min / max sequence length: lengths vary, padding never counts
SINE_NOISE = 0.05       # std of the additive noise: the best achievable RMSE is about this


def sine(seed: int = 0, n: int = 800) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    seqs_x, seqs_y = [], []
    for _ in range(n):
        t_len = int(rng.integers(SINE_STEPS[0], SINE_STEPS[1] + 1))
        freq = rng.uniform(0.03, 0.15)      # cycles per step: periods of about 7 to 33 steps
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.5, 1.5)
        t = np.arange(t_len + 1)
        s = amp * np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, SINE_NOISE, t_len + 1)
        seqs_x.append(s[:-1, None])
        seqs_y.append(s[1:, None])
    x, lengths = pad_sequences(seqs_x)
    y, _ = pad_sequences(seqs_y)
    tr, va, te = random_split(n, seed)
    train = Split(x[tr], y[tr], lengths[tr])
    norm = fit_normalization(train.x, train.lengths)
    return DatasetBundle(
        name="sine", task="forecast", train=train, val=Split(x[va], y[va], lengths[va]),
        test=Split(x[te], y[te], lengths[te]), num_features=1, num_outputs=1, metric="rmse",
        normalization=norm, target_normalization=norm,
        description=f"noisy sine waves ({SINE_STEPS[0]}-{SINE_STEPS[1]} steps, noise std {SINE_NOISE}); "
                    "forecast the next value",
        extra={"noise_std": SINE_NOISE},
    )


# ---------------------------------------------------------------------------- timing
TIMING_STEPS = 48
TIMING_PERIODS = (4, 10)  # interval between spikes, inclusive
TIMING_LABELS = ["none", "spike"]


def timing(seed: int = 0, n: int = 1200, steps: int = TIMING_STEPS) -> DatasetBundle:
    rng = np.random.default_rng(seed)
    x = np.zeros((n, steps, 1), dtype=np.float32)
    y = np.zeros((n, steps), dtype=np.int64)
    for i in range(n):
        period = int(rng.integers(TIMING_PERIODS[0], TIMING_PERIODS[1] + 1))
        t0 = int(rng.integers(0, 6))
        x[i, t0, 0] = 1.0
        x[i, t0 + period, 0] = 1.0
        y[i, t0 + 2 * period::period] = 1
    lengths = np.full(n, steps, dtype=np.int64)
    tr, va, te = random_split(n, seed)
    train = Split(x[tr], y[tr], lengths[tr])
    return DatasetBundle(
        name="timing", task="label", train=train, val=Split(x[va], y[va], lengths[va]),
        test=Split(x[te], y[te], lengths[te]), num_features=1, num_outputs=2, metric="event_f1",
        labels=list(TIMING_LABELS), normalization=None,
        description=f"two cue pulses P steps apart (P in {TIMING_PERIODS[0]}..{TIMING_PERIODS[1]}); "
                    f"emit a spike every P steps afterwards ({steps} steps)",
    )


# ---------------------------------------------------------------------------- dates
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
DATE_FORMATS = (
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",            # 23 Nov 2026
    lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",                # 23 November 2026
    lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",           # Nov 23, 2026
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",               # November 23, 2026
    lambda d: f"{WEEKDAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",  # Monday, 23 November 2026
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",                    # 23.11.2026
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",                    # 2026/11/23
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3].lower()} {d.year}",    # 23 nov 2026
)
DATE_RANGE = (_dt.date(1950, 1, 1), _dt.date(2049, 12, 31))


def dates_vocab() -> list[str]:
    """Token strings, index = id: ``<pad>``, ``<bos>``, ``<eos>`` then every character used."""
    chars = set("0123456789 ,./-")
    for word in MONTHS + WEEKDAYS:
        chars.update(word)
        chars.update(word.lower())
    return ["<pad>", "<bos>", "<eos>", *sorted(chars)]


def dates(seed: int = 0, n: int = 6000) -> DatasetBundle:
    vocab = dates_vocab()
    index = {c: i for i, c in enumerate(vocab)}
    rng = np.random.default_rng(seed)
    lo, hi = DATE_RANGE[0].toordinal(), DATE_RANGE[1].toordinal()
    srcs, tgts = [], []
    for _ in range(n):
        d = _dt.date.fromordinal(int(rng.integers(lo, hi + 1)))
        text = DATE_FORMATS[int(rng.integers(len(DATE_FORMATS)))](d)
        srcs.append(np.array([index[c] for c in text], dtype=np.int64))
        tgts.append(np.array([index[c] for c in d.isoformat()] + [EOS], dtype=np.int64))
    x, lengths = pad_sequences(srcs, dtype=np.int64, fill=PAD)
    y, y_lengths = pad_sequences(tgts, dtype=np.int64, fill=PAD)
    tr, va, te = random_split(n, seed)

    def split(ix):
        return Split(x[ix], y[ix], lengths[ix], y_lengths=y_lengths[ix])

    return DatasetBundle(
        name="dates", task="seq2seq", train=split(tr), val=split(va), test=split(te),
        num_features=len(vocab), num_outputs=len(vocab), metric="exact_match", vocab=vocab,
        max_len=int(y.shape[1]), description=f"{len(DATE_FORMATS)} human date formats "
        f"({DATE_RANGE[0].year}-{DATE_RANGE[1].year}) -> ISO YYYY-MM-DD",
        extra={"special_tokens": dict(SPECIAL_TOKENS)},
    )


def encode_text(text: str, vocab: list[str]) -> np.ndarray:
    """Characters -> ids with a seq2seq vocabulary (unknown characters raise DataError)."""
    from edgelstm.errors import DataError
    index = {c: i for i, c in enumerate(vocab)}
    bad = sorted({c for c in text if c not in index or index[c] < 3})
    if bad:
        raise DataError(repr(text), "characters outside the vocabulary",
                        expected="characters of the training vocabulary", got=bad)
    return np.array([index[c] for c in text], dtype=np.int64)


def decode_ids(ids, vocab: list[str]) -> str:
    """Token ids -> string, stopping at eos and skipping pad / bos."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i in (PAD, BOS):
            continue
        out.append(vocab[i])
    return "".join(out)
