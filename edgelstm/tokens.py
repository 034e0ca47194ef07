"""Special token ids and the label-padding value: one definition for the whole tree.

A seq2seq export's manifest records ``special_tokens`` (``{"pad": 0, "bos": 1, "eos": 2}``);
these are the ids edgelstm's own models, data sets and exports use, and the defaults a reader
takes when a manifest does not say. ``IGNORE_INDEX`` marks label steps that carry no target
(padding): torch's ``cross_entropy`` ignores it by default, and accuracy leaves it out.

Standard library only, so the torch-free runtime may import it too. Imported by
``edgelstm.data``, ``edgelstm.models`` (which re-export the names), the runtime's seq2seq decoder,
verify and quantize.
"""
from __future__ import annotations

PAD, BOS, EOS = 0, 1, 2  # seq2seq special token ids (docs/DESIGN.md)
SPECIAL_TOKENS = {"pad": PAD, "bos": BOS, "eos": EOS}
IGNORE_INDEX = -100  # label padding, the value torch's cross_entropy ignores by default

__all__ = ["PAD", "BOS", "EOS", "SPECIAL_TOKENS", "IGNORE_INDEX"]
