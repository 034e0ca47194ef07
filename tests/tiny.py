"""Tiny model configurations every test file can draw from (hidden 4-8, 1-2 layers, uni/bi).

Import as ``from tiny import TINY, make_tiny, tiny_batch`` (pytest puts ``tests/`` on ``sys.path``).
``test_models.py`` fails when a registered family has no tiny model here.
"""
from __future__ import annotations

from edgelstm.models.config import ModelConfig

TINY: dict[str, ModelConfig] = {
    "lstm-1x4": ModelConfig("lstm", input_size=3, hidden_size=4, num_layers=1, task="classify", num_outputs=3),
    "lstm-2x6-bi": ModelConfig("lstm", input_size=3, hidden_size=6, num_layers=2, bidirectional=True,
                               task="classify", num_outputs=3),
    "lstm-1x5-label": ModelConfig("lstm", input_size=3, hidden_size=5, task="label", num_outputs=4),
    "peephole-1x4": ModelConfig("peephole", input_size=3, hidden_size=4, task="classify", num_outputs=3),
    "peephole-2x6-bi": ModelConfig("peephole", input_size=3, hidden_size=6, num_layers=2, bidirectional=True,
                                   task="regress", num_outputs=2),
    "gru-1x4": ModelConfig("gru", input_size=3, hidden_size=4, task="classify", num_outputs=3),
    "gru-2x8-bi": ModelConfig("gru", input_size=3, hidden_size=8, num_layers=2, bidirectional=True,
                              task="label", num_outputs=3),
    "gru-1x6-forecast": ModelConfig("gru", input_size=3, hidden_size=6, task="forecast", num_outputs=3),
    "attention-s2s-1x8": ModelConfig("attention", hidden_size=8, task="seq2seq", vocab_size=9, emb_size=5,
                                     score="general", max_len=6),
    "attention-s2s-2x6-bahdanau": ModelConfig("attention", hidden_size=6, num_layers=2, task="seq2seq",
                                              vocab_size=9, emb_size=4, score="bahdanau", max_len=6),
    "attention-clf-1x6-bi": ModelConfig("attention", input_size=3, hidden_size=6, bidirectional=True,
                                        task="classify", num_outputs=3),
}


def make_tiny(name: str, seed: int = 0):
    """A freshly built, seeded model for ``TINY[name]`` (the same weights for the same seed)."""
    import torch

    from edgelstm.models import build_model

    torch.manual_seed(seed)
    return build_model(TINY[name])


def tiny_batch(config: ModelConfig, batch: int = 3, time: int = 5, seed: int = 0, ragged: bool = True):
    """Inputs for a tiny model: ``(x [b, t, f], lengths [b])`` or, for seq2seq, ``(src, src_lengths)``.

    With ``ragged`` the lengths run from ``time`` down to 1 (the first sequence is full).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([max(1, time - (i * time) // batch) for i in range(batch)]) if ragged \
        else torch.full((batch,), time)
    if config.task == "seq2seq":
        src = torch.randint(3, config.vocab_size, (batch, time), generator=g)
        src = src.masked_fill(torch.arange(time).unsqueeze(0) >= lengths.unsqueeze(1), 0)  # pad=0
        return src, lengths
    return torch.randn(batch, time, config.input_size, generator=g), lengths
