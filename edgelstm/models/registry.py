"""The registry of model families: name -> :class:`Family`, and :func:`build_model`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from edgelstm.errors import UnknownChoiceError
from edgelstm.models.attention import AttentionClassifier, Seq2Seq
from edgelstm.models.config import ModelConfig
from edgelstm.models.sequence import SequenceModel

__all__ = ["Family", "FAMILIES", "build_model"]


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    tasks: tuple[str, ...]           # tasks this family builds
    state_names: tuple[str, ...]     # recurrent state tensors: ("h", "c") or ("h",)
    onnx_op: str                     # the fused ONNX operator its recurrent layers map to
    build: Callable[[ModelConfig], nn.Module]


def _build_attention(config: ModelConfig) -> nn.Module:
    return Seq2Seq(config) if config.task == "seq2seq" else AttentionClassifier(config)


_SEQ_TASKS = ("classify", "label", "regress", "forecast")

FAMILIES: dict[str, Family] = {
    "lstm": Family("lstm", "nn.LSTM stack + linear head", _SEQ_TASKS, ("h", "c"), "LSTM", SequenceModel),
    "peephole": Family("peephole", "PeepholeLSTM stack (LSTM with peepholes) + linear head", _SEQ_TASKS,
                       ("h", "c"), "LSTM", SequenceModel),
    "gru": Family("gru", "nn.GRU stack + linear head", _SEQ_TASKS, ("h",), "GRU", SequenceModel),
    "attention": Family("attention", "LSTM encoder-decoder with Luong/Bahdanau attention (seq2seq), "
                        "or LSTM + attention pooling (classify)", ("seq2seq", "classify"), ("h", "c"), "LSTM",
                        _build_attention),
}


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """A freshly initialised model for ``config`` (a :class:`ModelConfig` or its dict form).

    The returned module carries ``.config``. Seed torch first for reproducible weights.
    """
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    family = FAMILIES.get(config.family)
    if family is None:
        raise UnknownChoiceError("model family", "unknown family", expected=sorted(FAMILIES), got=config.family)
    config.validate()
    return family.build(config)
