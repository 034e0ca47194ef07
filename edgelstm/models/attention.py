"""The ``attention`` family: an LSTM encoder-decoder with attention over the encoder states
(``Seq2Seq``), and an LSTM with attention pooling for sequence classification
(``AttentionClassifier``).

Scores (``ModelConfig.score``):

* ``general`` (Luong et al. 2015): ``score(h_t, m_s) = h_t^T W_a m_s``;
* ``bahdanau`` (additive, Bahdanau et al. 2015): ``score(h_t, m_s) = v^T tanh(W_q h_t + W_k m_s)``,
  computed from the current decoder state (so one decoder step needs no extra state).

Decoder (no input feeding, so a step's whole state is ``(h, c)``)::

    y_t      = LSTM(embed(token_{t-1}), (h, c))          top-layer output [b, H]
    a_t      = softmax(score(y_t, memory) masked to the source length)
    context  = a_t @ memory
    logits_t = out(tanh(W_c [context; y_t]))

Token ids: pad=0, bos=1, eos=2 (:mod:`edgelstm.tokens`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from edgelstm.errors import InputError
from edgelstm.models.config import ModelConfig
from edgelstm.models.peephole import _checking
from edgelstm.models.sequence import check_inputs, make_rnn, run_rnn
from edgelstm.tokens import BOS, EOS, PAD

__all__ = ["Attention", "Seq2Seq", "AttentionClassifier"]


class Attention(nn.Module):
    """Scores ``query [b, t, H]`` against ``memory [b, s, K]``; returns context and weights."""

    def __init__(self, query_size: int, memory_size: int, score: str) -> None:
        super().__init__()
        self.score = score
        if score == "general":
            self.W_a = nn.Linear(memory_size, query_size, bias=False)
        else:  # bahdanau
            self.W_q = nn.Linear(query_size, query_size, bias=False)
            self.W_k = nn.Linear(memory_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)

    def forward(self, query: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``mask [b, s]`` bool, True at valid source steps. Returns ``context [b, t, K]``, ``weights [b, t, s]``."""
        if self.score == "general":
            scores = torch.bmm(query, self.W_a(memory).transpose(1, 2))                   # [b, t, s]
        else:
            keys = self.W_k(memory).unsqueeze(1)                                           # [b, 1, s, H]
            scores = self.v(torch.tanh(self.W_q(query).unsqueeze(2) + keys)).squeeze(-1)  # [b, t, s]
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights, memory), weights


def _source_mask(lengths: Tensor | None, batch: int, steps: int, device) -> Tensor:
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


class Seq2Seq(nn.Module):
    """LSTM encoder-decoder with attention: teacher forcing in ``forward``, greedy decoding in ``greedy``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        if config.task != "seq2seq":
            raise InputError("Seq2Seq task", "wrong task", expected="seq2seq", got=config.task)
        self.config = config
        V, E, H, L = config.vocab_size, config.emb_size, config.hidden_size, config.num_layers
        drop = config.dropout if L > 1 else 0.0
        self.src_embed = nn.Embedding(V, E, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(V, E, padding_idx=PAD)
        self.encoder = nn.LSTM(E, H, L, batch_first=True, dropout=drop)
        self.decoder = nn.LSTM(E, H, L, batch_first=True, dropout=drop)
        self.attention = Attention(H, H, config.score)
        self.combine = nn.Linear(2 * H, H, bias=False)   # Luong's W_c over [context; y]
        self.out = nn.Linear(H, V)

    # ------------------------------------------------------------------ checks
    def _tokens(self, name: str, t: Tensor, rank: int) -> None:
        if not isinstance(t, Tensor) or t.dim() != rank or t.is_floating_point():
            raise InputError(f"Seq2Seq {name}", "wrong rank or dtype",
                             expected=f"an integer tensor with {rank} dims",
                             got=f"{t.dtype} {list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__)
        if _checking() and t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.config.vocab_size):
            raise InputError(f"Seq2Seq {name}", "token id out of range",
                             expected=f"0..{self.config.vocab_size - 1}", got=[int(t.min()), int(t.max())])

    def _lengths(self, src: Tensor, src_lengths) -> Tensor | None:
        if src_lengths is None:
            return None
        dummy = src.new_zeros(src.shape[0], src.shape[1], 1, dtype=torch.float32)
        return check_inputs("Seq2Seq src", dummy, src_lengths, None, features=1, n_state=2, state_shape=(0, 0))

    # ------------------------------------------------------------------ API
    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``src [b, s]`` int -> ``memory [b, s, H]`` (zero past each length), ``h``, ``c [L, b, H]``."""
        self._tokens("src", src, 2)
        lengths = self._lengths(src, src_lengths)
        memory, (h, c) = run_rnn(self.encoder, self.src_embed(src), lengths, None)
        return memory, h, c

    def _readout(self, y: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        context, weights = self.attention(y, memory, mask)                 # [b, t, H], [b, t, s]
        return self.out(torch.tanh(self.combine(torch.cat([context, y], -1)))), weights

    def forward(self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: ``tgt_in [b, t]`` (bos + target[:-1]) -> ``logits [b, t, vocab]``."""
        self._tokens("tgt_in", tgt_in, 2)
        memory, h, c = self.encode(src, src_lengths)
        mask = _source_mask(src_lengths, src.shape[0], src.shape[1], src.device)
        y, _ = self.decoder(self.tgt_embed(tgt_in), (h, c))                # [b, t, H]
        logits, _ = self._readout(y, memory, mask)
        return logits

    def decode_step(self, token: Tensor, h: Tensor, c: Tensor, memory: Tensor,
                    src_lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One decoder step: ``token [b]`` -> ``logits [b, vocab]``, ``h``, ``c``, ``attention [b, s]``."""
        self._tokens("token", token, 1)
        mask = _source_mask(src_lengths, memory.shape[0], memory.shape[1], memory.device)
        y, (h, c) = self.decoder(self.tgt_embed(token).unsqueeze(1), (h, c))  # y [b, 1, H]
        logits, weights = self._readout(y, memory, mask)
        return logits[:, 0], h, c, weights[:, 0]

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor | None = None, max_len: int | None = None) -> Tensor:
        """Greedy decoding -> ``tokens [b, n]`` int64, ``n <= max_len``: eos included, pad after it."""
        max_len = self.config.max_len if max_len is None else max_len
        if not isinstance(max_len, int) or max_len < 1:
            raise InputError("Seq2Seq max_len", "must be a positive integer", expected=">= 1", got=max_len)
        memory, h, c = self.encode(src, src_lengths)
        b = src.shape[0]
        token = torch.full((b,), BOS, dtype=torch.int64, device=src.device)
        done = torch.zeros(b, dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, h, c, _ = self.decode_step(token, h, c, memory, src_lengths)
            token = logits.argmax(-1).masked_fill(done, PAD)
            out.append(token)
            done = done | (token == EOS)
            if bool(done.all()):
                break
        return torch.stack(out, 1) if out else torch.zeros(b, 0, dtype=torch.int64, device=src.device)


class AttentionClassifier(nn.Module):
    """LSTM over features + attention pooling over its (valid) hidden states + linear head.

    Same interface as :class:`~edgelstm.models.SequenceModel` with ``task="classify"``:
    ``forward(x, lengths, state) -> (logits [b, classes], (h, c))``. Not streamable: the pooling
    reads the whole sequence. The query is a learned vector ``q``; with ``general`` the score is
    ``q^T W_a y_t``, with ``bahdanau`` it is ``v^T tanh(W_q q + W_k y_t)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        if config.task != "classify":
            raise InputError("AttentionClassifier task", "wrong task", expected="classify", got=config.task)
        self.config = config
        width = config.hidden_size * config.directions
        self.rnn = make_rnn(config)
        self.query = nn.Parameter(torch.randn(width) / width ** 0.5)
        self.attention = Attention(width, width, config.score)
        self.head = nn.Linear(width, config.num_outputs)

    state_names = ("h", "c")

    def pool(self, x: Tensor, lengths: Tensor | None = None, state=None):
        """-> ``logits [b, classes]``, ``(h, c)``, attention ``weights [b, t]``."""
        c = self.config
        lengths = check_inputs("AttentionClassifier", x, lengths, state, features=c.input_size, n_state=2,
                               state_shape=(c.num_layers * c.directions, c.hidden_size))
        hx = None if state is None else (state[0], state[1])
        y, (h, cell) = run_rnn(self.rnn, x, lengths, hx)                   # [b, t, D*H]
        mask = _source_mask(lengths, x.shape[0], x.shape[1], x.device)
        query = self.query.expand(x.shape[0], 1, -1)                       # [b, 1, D*H]
        context, weights = self.attention(query, y, mask)                  # [b, 1, D*H], [b, 1, t]
        return self.head(context[:, 0]), (h, cell), weights[:, 0]

    def forward(self, x: Tensor, lengths: Tensor | None = None, state=None):
        logits, state_out, _ = self.pool(x, lengths, state)
        return logits, state_out
