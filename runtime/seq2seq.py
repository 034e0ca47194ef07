"""Greedy decoding for the attention seq2seq export: ``X.encoder.onnx`` + ``X.decoder_step.onnx``.

The encoder runs once over the source; the decoder step runs once per output token with its
state carried as onnxruntime values (no copies between steps). Token ids come from the
manifest's ``special_tokens`` (pad/bos/eos; defaults 0/1/2) and strings are encoded with its
``vocab``: character by character when every ordinary token is one character (or
``extra["tokenizer"] == "char"``), else on whitespace (``extra["tokenizer"] == "word"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from edgelstm.errors import InputError, ManifestError, UsageError
from edgelstm.runtime.model import Model


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
        sp = {"pad": 0, "bos": 1, "eos": 2, **(m.special_tokens or {})}
        self.pad, self.bos, self.eos = int(sp["pad"]), int(sp["bos"]), int(sp["eos"])
        self.unk = sp.get("unk")
        self.max_len = int(m.max_len) if m.max_len else 64
        self._specials = {self.pad, self.bos, self.eos}
        tok = m.extra.get("tokenizer")
        if tok not in (None, "char", "word"):
            raise ManifestError(str(decoder.path), "unknown tokenizer", expected=["char", "word"], got=tok)
        if tok is None and self.vocab:
            plain = [t for i, t in enumerate(self.vocab) if i not in self._specials and not t.startswith("<")]
            tok = "char" if all(len(t) == 1 for t in plain) else "word"
        self.tokenizer = tok
        self._index = {t: i for i, t in enumerate(self.vocab)} if self.vocab else {}
        self._enc_state = {s.output for s in encoder.states} | {"h_out", "c_out"}
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
        lists, or ``[batch, src_time]`` with pad=``pad``). Stops at eos or ``max_len`` tokens."""
        max_len = self.max_len if max_len is None else max_len
        if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
            raise UsageError("max_len", "must be a positive integer", expected=">= 1", got=max_len)
        ids, lens = self._batch(src)
        batch = ids.shape[0]
        enc_names = [o.name for o in self.encoder.outputs]
        enc_in = {"src": ids.astype(self.encoder._in["src"].dtype),
                  "src_lengths": lens.astype(self.encoder._in["src_lengths"].dtype)}
        enc = dict(zip(enc_names, self.encoder.session.run_with_ort_values(
            enc_names, {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in enc_in.items()})))
        dec = self.decoder
        feeds = {"memory": enc["memory"],
                 "src_lengths": ort.OrtValue.ortvalue_from_numpy(lens.astype(dec._in["src_lengths"].dtype))}
        for s in self._dec_states:
            if s.output not in enc:
                raise ManifestError(str(self.encoder.path), f"encoder has no output {s.output!r} for the decoder's "
                                    f"{s.input!r}", expected=s.output, got=enc_names)
            feeds[s.input] = enc[s.output]
        out_names = [o.name for o in dec.outputs]
        i_logits = out_names.index("logits")
        i_attn = out_names.index("attention") if "attention" in out_names else None
        state_idx = [(s.input, out_names.index(s.output)) for s in self._dec_states]
        token = np.full(batch, self.bos, dtype=dec._in["token"].dtype)
        done = np.zeros(batch, dtype=bool)
        out = [[] for _ in range(batch)]
        attn = [[] for _ in range(batch)]
        run = dec.session.run_with_ort_values
        for _ in range(max_len):
            feeds["token"] = ort.OrtValue.ortvalue_from_numpy(token)
            res = run(out_names, feeds)
            nxt = res[i_logits].numpy().argmax(axis=-1)
            a = res[i_attn].numpy() if (return_attention and i_attn is not None) else None
            for b in range(batch):
                if done[b]:
                    continue
                if nxt[b] == self.eos:
                    done[b] = True
                    continue
                out[b].append(int(nxt[b]))
                if a is not None:
                    attn[b].append(a[b, :lens[b]].copy())
            if done.all():
                break
            for name, i in state_idx:
                feeds[name] = res[i]
            token = nxt.astype(token.dtype)
        texts = [self.decode(t) for t in out] if self.vocab else None
        att = [np.stack(a) if a else np.zeros((0, int(n)), np.float32) for a, n in zip(attn, lens)] \
            if return_attention else []
        return Generation(out, texts, att)


def companion_paths(path: Path) -> tuple[Path, Path] | None:
    """``X.onnx`` / ``X.encoder.onnx`` / ``X.decoder_step.onnx`` -> (encoder, decoder) when both exist."""
    name = path.name
    for suffix in (".encoder.onnx", ".decoder_step.onnx", ".onnx"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            enc, dec = path.with_name(f"{stem}.encoder.onnx"), path.with_name(f"{stem}.decoder_step.onnx")
            if suffix == ".onnx" and path.exists():
                return None
            return (enc, dec) if enc.exists() and dec.exists() else None
    return None
