"""Greedy decoding for the attention seq2seq export: ``X.encoder.onnx`` + ``X.decoder_step.onnx``.

Public API: :meth:`Seq2SeqModel.generate` (greedy decoding to text), built on
:meth:`Seq2SeqModel.encode_source` (the encoder once, a read-only :class:`EncodedSource`) and
:meth:`Seq2SeqModel.decode_steps` (the decoder loop's token ids; ``stop_at_eos=False`` for exactly
``steps`` tokens, what ``edgelstm.bench`` times).

The encoder runs once over the source; the decoder step runs once per output token as one
``run_with_iobinding`` with no allocation on the CPU provider: two fresh state sets swapped
between steps (the encoder's state is read by the first step, never written), memory and source lengths bound once, logits written to a preallocated buffer, the next
token written by ``argmax`` into the token buffer and bound again before each step (a binding
copies an input that lives on another device than the node reading it, so a binding made once
would feed every step the first token on a GPU: see :mod:`edgelstm.runtime.stream`;
``benchmarks/seq2seq_step.py`` measures it
against a bare ``session.run`` loop). Token ids come from the
manifest's ``special_tokens`` (pad/bos/eos; defaults 0/1/2) and strings are encoded with its
``vocab``: character by character when every ordinary token is one character (or
``extra["tokenizer"] == "char"``), else on whitespace (``extra["tokenizer"] == "word"``).

Imports numpy, onnxruntime, the standard library, ``edgelstm.errors`` and ``edgelstm.runtime``'s
own modules. Imported by ``edgelstm.runtime`` (``load``), the benchmark, verify and the CLI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, ManifestError, UsageError
from edgelstm.runtime.model import Model
from edgelstm.tokens import SPECIAL_TOKENS


@dataclass
class Generation:
    """What :meth:`Seq2SeqModel.generate` returns, one entry per source sequence."""

    tokens: list[list[int]]                 # generated ids, without bos and eos
    texts: list[str] | None                 # decoded with the vocab (None without one)
    attention: list[np.ndarray] = field(default_factory=list)  # [out_len, src_len] weights each

    @property
    def text(self) -> str | None:
        return self.texts[0] if self.texts else None

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "texts": self.texts}


MAX_GENERATE_LEN = 10_000
"""Hard upper bound on ``generate(max_len=...)`` (and on a manifest's ``max_len``): greedy decoding
runs one decoder call per token and keeps a ``[max_len, batch]`` history, so an unbounded value
would turn a typo into an apparent hang or a huge allocation."""


class Seq2SeqModel:
    """An encoder / decoder-step pair loaded as one model."""

    def __init__(self, encoder: Model, decoder: Model):
        self.encoder, self.decoder = encoder, decoder
        m = decoder.manifest or encoder.manifest
        if m is None:
            raise ManifestError(str(decoder.path), "a seq2seq pair needs a manifest (vocab, special tokens)",
                                expected="metadata_props['edgelstm']", got=None)
        self.manifest = m
        self.path = encoder.path
        for g, names in ((encoder, ("src", "src_lengths")), (decoder, ("token", "h_in", "memory", "src_lengths"))):
            missing = [n for n in names if n not in g._in]
            if missing:
                raise ManifestError(str(g.path), "seq2seq graph lacks required inputs",
                                    expected=list(names), got=[s.name for s in g.inputs])
        self.vocab = list(m.vocab) if m.vocab else None
        sp = {**SPECIAL_TOKENS, **(m.special_tokens or {})}
        self.pad, self.bos, self.eos = int(sp["pad"]), int(sp["bos"]), int(sp["eos"])
        self.unk = sp.get("unk")
        self.max_len = int(m.max_len) if m.max_len else 64
        if not 1 <= self.max_len <= MAX_GENERATE_LEN:
            raise ManifestError(str(decoder.path), "manifest max_len out of range",
                                expected=f"1..{MAX_GENERATE_LEN}", got=self.max_len)
        self._specials = {self.pad, self.bos, self.eos}
        tok = m.extra.get("tokenizer")
        if tok not in (None, "char", "word"):
            raise ManifestError(str(decoder.path), "unknown tokenizer", expected=["char", "word"], got=tok)
        if tok is None and self.vocab:
            plain = [t for i, t in enumerate(self.vocab) if i not in self._specials and not t.startswith("<")]
            tok = "char" if all(len(t) == 1 for t in plain) else "word"
        self.tokenizer = tok
        self._index = {t: i for i, t in enumerate(self.vocab)} if self.vocab else {}
        self._dec_states = decoder.states
        self._state_map = {s.input: s.output for s in decoder.states}

    # -------------------------------------------------------------- properties
    @property
    def providers(self) -> list[str]:
        return self.decoder.providers

    @property
    def inputs(self):
        return self.encoder.inputs

    @property
    def outputs(self):
        return self.decoder.outputs

    def __repr__(self) -> str:
        return f"Seq2SeqModel({str(self.encoder.path)!r}, vocab={len(self.vocab or [])}, providers={self.providers})"

    # -------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        if not self.vocab:
            raise InputError("src", "string input needs a vocab in the manifest", expected="token ids", got="a string")
        pieces = list(text) if self.tokenizer == "char" else text.split()
        ids = []
        for p in pieces:
            i = self._index.get(p)
            if i is None:
                if self.unk is None:
                    raise InputError("src", f"token {p!r} is not in the vocab",
                                     expected=f"one of {len(self.vocab)} vocab tokens", got=p)
                i = int(self.unk)
            ids.append(i)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        sep = "" if self.tokenizer == "char" else " "
        return sep.join(self.vocab[i] for i in ids if i not in self._specials)

    def _batch(self, src: Any) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(src, str):
            seqs = [self.encode(src)]
        elif isinstance(src, np.ndarray) and src.ndim == 2:
            if src.dtype.kind not in "iu":
                raise InputError("src", "wrong dtype", expected="integer token ids", got=src.dtype.name)
            seqs = [list(r[r != self.pad]) if np.any(r == self.pad) else list(r) for r in src]
        elif isinstance(src, (list, tuple)) and src and all(isinstance(s, str) for s in src):
            seqs = [self.encode(s) for s in src]
        elif isinstance(src, (list, tuple, np.ndarray)) and len(src) and all(
                isinstance(t, (int, np.integer)) for t in src):
            seqs = [[int(t) for t in src]]
        elif isinstance(src, (list, tuple)) and src and all(isinstance(s, (list, tuple, np.ndarray)) for s in src):
            seqs = [[int(t) for t in s] for s in src]
        else:
            raise InputError("src", "unsupported source", expected="a string, a list of strings, or token ids "
                             "[batch, src_time]", got=type(src).__name__)
        if any(len(s) == 0 for s in seqs):
            raise InputError("src", "empty source sequence", expected="at least one token", got=0)
        vocab_size = len(self.vocab) if self.vocab else None
        for s in seqs:
            bad = [t for t in s if t < 0 or (vocab_size is not None and t >= vocab_size)]
            if bad:
                raise InputError("src", "token id out of range", expected=f"0..{(vocab_size or 1) - 1}", got=bad[0])
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.pad, dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
        return ids, np.array([len(s) for s in seqs], dtype=np.int32)

    # -------------------------------------------------------------- decoding
    def generate(self, src: Any, max_len: int | None = None, *, return_attention: bool = False) -> Generation:
        """Greedy decoding. ``src``: a string, a list of strings, or token ids (one list, a list of
        lists, or ``[batch, src_time]`` with pad=``pad``). A row stops at its first eos (not
        included) or after ``max_len`` tokens; decoding ends when every row has stopped.
        ``max_len`` defaults to the manifest's ``max_len`` (64 without one) and may be at most
        :data:`MAX_GENERATE_LEN` (10,000 tokens); larger values raise :class:`UsageError`.

        The same as :meth:`encode_source` then :meth:`decode_steps`, plus the per-row cut at eos and
        the texts. Each call owns its buffers, so one model can generate from many threads at once."""
        max_len = self._check_max_len(max_len)
        enc = self.encode_source(src)
        hist, stop, attn = self._decode(enc, max_len, return_attention, stop_at_eos=True)
        out = [hist[:n, b].tolist() for b, n in enumerate(stop)]
        texts = [self.decode(t) for t in out] if self.vocab else None
        att = []
        if return_attention:
            att = [attn[:n, b, :w].copy() if attn is not None else np.zeros((0, int(w)), np.float32)
                   for b, (n, w) in enumerate(zip(stop, enc.lengths))]
        return Generation(out, texts, att)

    def encode_source(self, src: Any) -> "EncodedSource":
        """Run the encoder once over ``src`` (what :meth:`generate` accepts): the memory and the
        decoder's initial state, kept as onnxruntime values on the decoder's state device. The
        result is read-only: :meth:`decode_steps` can decode from it any number of times."""
        ids, lens = self._batch(src)
        enc = self.encoder
        bnd = enc.session.io_binding()
        bnd.bind_cpu_input("src", ids.astype(enc._in["src"].dtype, copy=False))
        bnd.bind_cpu_input("src_lengths", lens.astype(enc._in["src_lengths"].dtype, copy=False))
        enc_names = [o.name for o in enc.outputs]
        want = ["memory"] + [s.output for s in self._dec_states]
        for name in want:
            if name not in enc._out:
                raise ManifestError(str(enc.path), f"encoder has no output {name!r} for the decoder",
                                    expected=want, got=enc_names)
            bnd.bind_output(name, self.decoder.state_device)
        enc.session.run_with_iobinding(bnd)
        vals = dict(zip(want, bnd.get_outputs()))
        return EncodedSource(vals["memory"], {s.input: vals[s.output] for s in self._dec_states}, lens,
                             int(ids.shape[1]))

    def decode_steps(self, encoded: "EncodedSource", steps: int | None = None, *,
                     stop_at_eos: bool = True) -> np.ndarray:
        """Greedy token ids ``[steps_run, batch]`` from an :meth:`encode_source` result: the decoder
        loop of :meth:`generate` without the text. ``stop_at_eos=True`` ends when every row has
        produced an eos (rows keep their eos and whatever follows it until then);
        ``stop_at_eos=False`` decodes exactly ``steps`` tokens per row (a fixed-length output, and
        what ``edgelstm.bench`` times). ``steps`` defaults to the manifest's ``max_len``."""
        if not isinstance(encoded, EncodedSource):
            raise UsageError("encoded", "not an encoder result", expected="Seq2SeqModel.encode_source(...)",
                             got=type(encoded).__name__)
        steps = self._check_max_len(steps)
        hist, stop, _ = self._decode(encoded, steps, False, stop_at_eos=stop_at_eos)
        return hist[: min(steps, max(stop) + 1)]

    def _check_max_len(self, max_len: Any) -> int:
        max_len = self.max_len if max_len is None else max_len
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
            raise UsageError("max_len", "must be a positive integer", expected=">= 1", got=max_len)
        if max_len > MAX_GENERATE_LEN:
            raise UsageError("max_len", "too many output tokens", expected=f"1..{MAX_GENERATE_LEN}", got=max_len)
        return int(max_len)

    def _decode(self, enc: "EncodedSource", max_len: int, return_attention: bool, *, stop_at_eos: bool):
        """The decoder loop: one ``run_with_iobinding`` per token and no allocation.

        Two bindings are made once per call over two fresh state sets: binding ``p`` reads set ``p``
        and writes set ``1 - p``, so a step never overwrites the state it reads; for the first step
        binding 0 reads the encoder's state instead (re-bound to set 0 after it), so ``enc`` is
        never written.
        ``memory`` and ``src_lengths`` (constant) are bound once; ``token`` is a numpy buffer that
        ``logits.argmax(out=...)`` refills in place and that is bound again before every step (on
        the CPU provider a re-bind stores a pointer; on a GPU it uploads the new token), as is the
        state set the step reads when the decoder runs on mixed devices
        (:attr:`Model.mixed_devices`); logits (and attention) go to preallocated numpy buffers.
        Returns the token history ``[max_len, batch]`` (rows past the last step run are unset),
        each row's token count (up to, not including, its eos; ``max_len`` without one) and the
        attention history."""
        dec = self.decoder
        sess, dev = dec.session, dec.state_device
        batch, width = len(enc.lengths), enc.width
        src_lengths = enc.lengths.astype(dec._in["src_lengths"].dtype, copy=False)
        logits_spec = dec._out["logits"]
        vocab = logits_spec.fixed(-1) or (len(self.vocab) if self.vocab else None)
        tok_dtype = dec._in["token"].dtype
        tok = np.full(batch, self.bos, tok_dtype)
        if vocab is None:  # a graph with a dynamic vocab axis: one probe step learns it
            v = ort.OrtValue.ortvalue_from_numpy
            probe = {"token": v(tok), "memory": enc.memory, "src_lengths": v(src_lengths), **enc.state}
            vocab = sess.run_with_ort_values(["logits"], probe)[0].shape()[-1]
        logits = np.empty((batch, vocab), logits_spec.dtype)
        # argmax writes int64 (intp); a token input of another integer type goes through a scratch array
        amax = tok if tok.dtype == np.intp else np.empty(batch, np.intp)
        a_spec = dec._out.get("attention")
        attn_buf = np.empty((batch, width), a_spec.dtype) if a_spec is not None and a_spec.rank == 2 else None
        # set 0 is bound to the encoder's state for the first step only (then to fresh buffers), set 1 fresh
        fresh = [{k: ort.OrtValue.ortvalue_from_shape_and_type(v.shape(), dec._in[k].dtype, dev, 0)
                  for k, v in enc.state.items()} for _ in range(2)]
        sets = [enc.state, fresh[1]]
        tok_v = ort.OrtValue.ortvalue_from_numpy(tok)
        logits_v = ort.OrtValue.ortvalue_from_numpy(logits)
        attn_v = ort.OrtValue.ortvalue_from_numpy(attn_buf) if attn_buf is not None else None
        binds, rebind = [], []
        mixed = dec.mixed_devices  # a state read on another device than it lives on: bind it each step
        for p in range(2):
            bnd = sess.io_binding()
            bnd.bind_ortvalue_input("memory", enc.memory)
            bnd.bind_cpu_input("src_lengths", src_lengths)
            for name_in, name_out in self._state_map.items():
                bnd.bind_ortvalue_input(name_in, sets[p][name_in])
                bnd.bind_ortvalue_output(name_out, fresh[1 - p][name_in])
            bnd.bind_ortvalue_output("logits", logits_v)
            if attn_v is not None:
                bnd.bind_ortvalue_output("attention", attn_v)
            binds.append(bnd)
            # the per-step inputs, bound again right before each run: the token (and the state set it reads)
            rebind.append([(bnd.bind_ortvalue_input, "token", tok_v)]
                          + ([(bnd.bind_ortvalue_input, k, fresh[p][k]) for k in self._state_map] if mixed else []))
        first = [(binds[0].bind_ortvalue_input, "token", tok_v)] \
            + ([(binds[0].bind_ortvalue_input, k, enc.state[k]) for k in self._state_map] if mixed else [])
        run = sess.run_with_iobinding
        hist = np.empty((max_len, batch), np.int64)
        attn = np.empty((max_len, batch, width), attn_buf.dtype) \
            if (return_attention and attn_buf is not None) else None
        stop, done, left = [max_len] * batch, [False] * batch, batch
        eos = self.eos
        argmax = logits.argmax
        for t in range(max_len):
            for bind, name, value in (rebind[t & 1] if t else first):
                bind(name, value)
            run(binds[t & 1])
            if not t:  # from the third step on, binding 0 reads fresh set 0, never the encoder's state
                for name_in in self._state_map:
                    binds[0].bind_ortvalue_input(name_in, fresh[0][name_in])
            argmax(1, out=amax)
            if amax is not tok:
                tok[...] = amax
            hist[t] = amax
            if attn is not None:
                attn[t] = attn_buf
            if not stop_at_eos:  # fixed-length decoding: exactly max_len tokens
                continue
            row = amax.tolist()
            if eos in row:  # rare: settle which rows just stopped
                for b, v in enumerate(row):
                    if v == eos and not done[b]:
                        done[b], stop[b] = True, t
                        left -= 1
                if not left:
                    break
        return hist, stop, attn


@dataclass(frozen=True)
class EncodedSource:
    """What :meth:`Seq2SeqModel.encode_source` returns and :meth:`Seq2SeqModel.decode_steps` reads.
    Decoding never writes into it."""

    memory: ort.OrtValue                 # [batch, src_time, hidden] on the decoder's state device
    state: dict[str, ort.OrtValue]       # decoder state input name -> the encoder's final state
    lengths: np.ndarray                  # [batch] source lengths (int32)
    width: int                           # src_time: the padded source length

    @property
    def batch(self) -> int:
        return len(self.lengths)


def companion_paths(path: Path) -> tuple[Path, Path] | None:
    """``X.onnx`` / ``X.encoder.onnx`` / ``X.decoder_step.onnx`` -> (encoder, decoder) when both exist."""
    from edgelstm.runtime.interface import pair_paths, pair_stem

    if not path.name.endswith(".onnx") or (pair_stem(path.name)[1] is None and path.exists()):
        return None
    enc, dec = pair_paths(path)
    return (enc, dec) if enc.exists() and dec.exists() else None
