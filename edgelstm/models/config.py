"""The typed model configuration saved beside the weights (``config.json`` -> ``"model"``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from edgelstm.data.bundle import TASKS
from edgelstm.errors import UnknownChoiceError, UsageError

FAMILY_NAMES = ("lstm", "peephole", "gru", "attention")
SCORES = ("general", "bahdanau")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; weights live in ``model.safetensors``.

    Recurrent families (lstm, peephole, gru) use ``input_size .. num_outputs``; ``attention``
    with ``task="seq2seq"`` uses ``vocab_size, emb_size, score, max_len`` instead of
    ``input_size``/``num_outputs``; ``attention`` with ``task="classify"`` is an LSTM encoder
    with attention pooling over its hidden states.
    """

    family: str                       # one of FAMILY_NAMES
    input_size: int = 0               # features per time step (0 for seq2seq: tokens come in)
    hidden_size: int = 64             # recurrent state width per direction
    num_layers: int = 1               # stacked recurrent layers
    bidirectional: bool = False       # not for forecast (would see the future) nor seq2seq
    dropout: float = 0.0              # between stacked layers, training only (as nn.LSTM)
    batch_first: bool = True          # layout INSIDE .rnn; the model boundary is always [b, t, f]
    task: str = "classify"            # one of TASKS
    num_outputs: int = 2              # classes (classify/label) or values per step (regress/forecast)
    vocab_size: int | None = None     # seq2seq: tokens incl. pad=0, bos=1, eos=2
    emb_size: int | None = None       # seq2seq: token embedding width
    score: str = "general"            # attention score: Luong "general" or "bahdanau" (additive)
    max_len: int | None = None        # seq2seq: greedy decoding limit

    # ------------------------------------------------------------------ checks
    def validate(self) -> "ModelConfig":
        """Raise a typed error naming the first bad field; return ``self`` when all are fine."""
        if self.family not in FAMILY_NAMES:
            raise UnknownChoiceError("model family", "unknown family", expected=list(FAMILY_NAMES), got=self.family)
        if self.task not in TASKS:
            raise UnknownChoiceError("task", "unknown task", expected=list(TASKS), got=self.task)
        _positive("hidden_size", self.hidden_size)
        _positive("num_layers", self.num_layers)
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool) \
                or not 0.0 <= self.dropout < 1.0:
            raise UsageError("ModelConfig.dropout", "out of range", expected="0 <= dropout < 1", got=self.dropout)
        for name in ("bidirectional", "batch_first"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"ModelConfig.{name}", "must be a boolean", expected="true or false",
                                 got=getattr(self, name))
        if self.score not in SCORES:
            raise UnknownChoiceError("ModelConfig.score", "unknown attention score", expected=list(SCORES),
                                     got=self.score)
        if self.task == "seq2seq":
            if self.family != "attention":
                raise UsageError("task", "seq2seq needs the attention family", expected="attention",
                                 got=self.family)
            _positive("vocab_size", self.vocab_size, minimum=4)  # pad, bos, eos + at least one symbol
            _positive("emb_size", self.emb_size)
            _positive("max_len", self.max_len)
            if self.bidirectional:
                raise UsageError("ModelConfig.bidirectional", "the seq2seq encoder is unidirectional "
                                 "(its final state starts the decoder)", expected=False, got=True)
            return self
        _positive("input_size", self.input_size)
        _positive("num_outputs", self.num_outputs)
        if self.family == "attention" and self.task != "classify":
            raise UsageError("task", "the attention family does seq2seq or attention-pooled classification",
                             expected=["seq2seq", "classify"], got=self.task)
        if self.task == "forecast" and self.bidirectional:
            raise UsageError("ModelConfig.bidirectional", "a forecaster cannot read the future",
                             expected=False, got=True)
        return self

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "model config") -> "ModelConfig":
        """Build and validate; unknown or missing keys raise :class:`UsageError` naming ``source``."""
        if not isinstance(d, dict):
            raise UsageError(source, "model config is not an object", expected="a JSON object",
                             got=type(d).__name__)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(source, "unknown model config keys", expected=sorted(known), got=unknown)
        if "family" not in d:
            raise UsageError(source, "model config has no family", expected=list(FAMILY_NAMES), got=None)
        return cls(**d).validate()


def _positive(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"ModelConfig.{name}", "must be an integer", expected=f">= {minimum}",
                         got="nothing" if value is None else value)
