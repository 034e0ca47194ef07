"""Model families: registry coverage, the forward interface, lengths semantics, streaming, seq2seq."""
from __future__ import annotations

import re

import pytest
import torch

from edgelstm.errors import InputError, UnknownChoiceError, UsageError
from edgelstm.models import (EOS, FAMILIES, PAD, AttentionClassifier, ModelConfig, PeepholeLSTM, Seq2Seq,
                             SequenceModel, build_model)
from tiny import TINY, make_tiny, tiny_batch

torch.set_num_threads(1)

SEQ = sorted(n for n, c in TINY.items() if c.task != "seq2seq")
S2S = sorted(n for n, c in TINY.items() if c.task == "seq2seq")
UNI = sorted(n for n in SEQ if not TINY[n].bidirectional)
# float32 throughout; the compared computations differ only in batching/summation order over
# <= 7 steps of O(1) values, which stays far below 1e-5 (DESIGN's fp32 bound)
ATOL = 1e-5


def test_every_family_has_a_tiny_model():
    covered = {c.family for c in TINY.values()}
    assert set(FAMILIES) <= covered, f"families without a tiny model in tests/tiny.py: {set(FAMILIES) - covered}"
    for name, fam in FAMILIES.items():
        tasks = {c.task for c in TINY.values() if c.family == name}
        assert tasks <= set(fam.tasks)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_builds_with_expected_class(name):
    model = make_tiny(name)
    cfg = TINY[name]
    want = {"lstm": SequenceModel, "peephole": SequenceModel, "gru": SequenceModel}.get(cfg.family)
    if cfg.family == "attention":
        want = Seq2Seq if cfg.task == "seq2seq" else AttentionClassifier
    assert type(model) is want and model.config == cfg
    if cfg.family == "peephole":
        assert isinstance(model.rnn, PeepholeLSTM)
    torch.testing.assert_close(make_tiny(name, seed=7).state_dict(), make_tiny(name, seed=7).state_dict())


@pytest.mark.parametrize("name", SEQ)
def test_forward_shapes(name):
    cfg = TINY[name]
    model = make_tiny(name).eval()
    x, lengths = tiny_batch(cfg, batch=3, time=5)
    out, state = model(x, lengths)
    n_state = 1 if cfg.family == "gru" else 2
    assert len(state) == n_state
    for s in state:
        assert s.shape == (cfg.num_layers * cfg.directions, 3, cfg.hidden_size)
    if cfg.task == "classify":
        assert out.shape == (3, cfg.num_outputs)
    else:
        assert out.shape == (3, 5, cfg.num_outputs)


@pytest.mark.parametrize("name", SEQ)
def test_lengths_equal_truncated_sequences(name):
    """A padded batch with lengths gives, per sequence, what that sequence alone gives."""
    cfg = TINY[name]
    model = make_tiny(name).eval()
    x, lengths = tiny_batch(cfg, batch=3, time=6)
    with torch.no_grad():
        out, state = model(x, lengths)
        noisy = x.clone()
        for b, L in enumerate(lengths.tolist()):
            noisy[b, L:] = 100.0                              # padding content must not matter
        out_noisy, state_noisy = model(noisy, lengths)
        for b, L in enumerate(lengths.tolist()):
            alone, state_alone = model(x[b:b + 1, :L])
            if cfg.task == "classify":
                torch.testing.assert_close(out[b], alone[0], atol=ATOL, rtol=0)
                torch.testing.assert_close(out_noisy[b], alone[0], atol=ATOL, rtol=0)
            else:
                torch.testing.assert_close(out[b, :L], alone[0], atol=ATOL, rtol=0)
            for s, s_noisy, s_alone in zip(state, state_noisy, state_alone):
                torch.testing.assert_close(s[:, b], s_alone[:, 0], atol=ATOL, rtol=0)
                torch.testing.assert_close(s_noisy[:, b], s_alone[:, 0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", [n for n in UNI if TINY[n].task != "classify"])
def test_streaming_in_chunks_equals_whole_sequence(name):
    cfg = TINY[name]
    model = make_tiny(name).eval()
    x, _ = tiny_batch(cfg, batch=2, time=7, ragged=False)
    with torch.no_grad():
        whole, state_whole = model(x)
        first, state = model(x[:, :3])
        second, state = model(x[:, 3:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, atol=ATOL, rtol=0)
    for a, b in zip(state, state_whole):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_parameter_gets_a_gradient(name):
    cfg = TINY[name]
    model = make_tiny(name).train()
    x, lengths = tiny_batch(cfg, batch=3, time=5, ragged=False)
    if cfg.task == "seq2seq":
        out = model(x, lengths, torch.randint(1, cfg.vocab_size, (3, 4)))
    else:
        out, _ = model(x, lengths)
    out.pow(2).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    # padding_idx rows aside, every embedding and weight must learn
    assert dead == [], dead


@pytest.mark.parametrize("name", S2S)
def test_seq2seq_decode_step_equals_teacher_forcing(name):
    cfg = TINY[name]
    model = make_tiny(name).eval()
    src, src_lengths = tiny_batch(cfg, batch=3, time=6)
    tgt_in = torch.tensor([[1, 4, 5, 6], [1, 3, 3, 0], [1, 8, 2, 0]])
    with torch.no_grad():
        logits = model(src, src_lengths, tgt_in)
        memory, h, c = model.encode(src, src_lengths)
        assert memory.shape == (3, 6, cfg.hidden_size) and h.shape == (cfg.num_layers, 3, cfg.hidden_size)
        assert torch.all(memory[1, src_lengths[1]:] == 0)
        for t in range(tgt_in.shape[1]):
            step, h, c, attn = model.decode_step(tgt_in[:, t], h, c, memory, src_lengths)
            torch.testing.assert_close(step, logits[:, t], atol=ATOL, rtol=0)
            torch.testing.assert_close(attn.sum(-1), torch.ones(3), atol=1e-6, rtol=0)
            assert torch.all(attn[2, src_lengths[2]:] == 0)       # no attention on padding
    assert logits.shape == (3, 4, cfg.vocab_size)


@pytest.mark.parametrize("name", S2S)
def test_seq2seq_greedy(name):
    cfg = TINY[name]
    model = make_tiny(name).eval()
    src, src_lengths = tiny_batch(cfg, batch=4, time=5)
    tokens = model.greedy(src, src_lengths)
    assert tokens.dtype == torch.int64 and tokens.shape[0] == 4 and 1 <= tokens.shape[1] <= cfg.max_len
    for row in tokens.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
    # greedy = argmax of the teacher-forced logits fed with its own output
    tgt_in = torch.cat([torch.ones(4, 1, dtype=torch.int64), tokens[:, :-1]], 1)
    with torch.no_grad():
        logits = model(src, src_lengths, tgt_in)
    first = logits[:, 0].argmax(-1)
    assert torch.equal(first, tokens[:, 0])
    assert model.greedy(src, src_lengths, max_len=2).shape[1] <= 2


def test_config_round_trip():
    for cfg in TINY.values():
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert build_model(TINY["gru-1x4"].to_dict()).config == TINY["gru-1x4"]


@pytest.mark.parametrize("kw,err,match", [
    (dict(family="transformer"), UnknownChoiceError, r"model family \| unknown family"),
    (dict(family="lstm", task="translate"), UnknownChoiceError, "task | unknown task"),
    (dict(family="lstm", hidden_size=0), UsageError, r"ModelConfig.hidden_size \| must be an integer; expected >= 1, got 0"),
    (dict(family="gru", task="forecast", bidirectional=True), UsageError, "a forecaster cannot read the future"),
    (dict(family="lstm", task="seq2seq", vocab_size=9, emb_size=4, max_len=3), UsageError,
     "seq2seq needs the attention family"),
    (dict(family="attention", task="seq2seq", emb_size=4, max_len=3, input_size=0), UsageError,
     r"ModelConfig.vocab_size \| must be an integer; expected >= 4, got nothing"),
    (dict(family="attention", task="label"), UsageError, "seq2seq or attention-pooled classification"),
    (dict(family="lstm", dropout=1.0), UsageError, r"ModelConfig.dropout \| out of range"),
    (dict(family="attention", task="classify", score="dot"), UnknownChoiceError, "unknown attention score"),
], ids=["family", "task", "hidden", "bi-forecast", "s2s-family", "s2s-vocab", "attention-task", "dropout", "score"])
def test_bad_configs(kw, err, match):
    kw = {"input_size": 3, **kw}
    with pytest.raises(err, match=match):
        build_model(ModelConfig(**kw))


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(UsageError, match=r"unknown model config keys.*got \['hiden_size'\]"):
        ModelConfig.from_dict({"family": "lstm", "input_size": 3, "hiden_size": 4})


@pytest.mark.parametrize("call,match", [
    (lambda m: m(torch.zeros(2, 5)), r"SequenceModel x \| wrong rank"),
    (lambda m: m(torch.zeros(2, 5, 4)), "wrong feature size; expected 3, got 4"),
    (lambda m: m(torch.zeros(2, 5, 3), state=(torch.zeros(1, 2, 4),)), "wrong number of state tensors; expected \\(h, c\\), got 1"),
    (lambda m: m(torch.zeros(2, 5, 3), state=(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))),
     r"state h \| wrong shape; expected \[1, 2, 4\], got \[1, 2, 5\]"),
    (lambda m: m(torch.zeros(2, 5, 3), torch.tensor([5, 6])), r"length out of range; expected 1..5, got \[5, 6\]"),
    (lambda m: m(torch.zeros(2, 5, 3), torch.tensor([5.0, 2.0])), r"lengths \| wrong dtype"),
], ids=["rank", "features", "state-count", "state-shape", "length-range", "length-dtype"])
def test_bad_inputs(call, match):
    with pytest.raises(InputError, match=match):
        call(make_tiny("lstm-1x4"))


def test_seq2seq_bad_tokens():
    model = make_tiny("attention-s2s-1x8")
    with pytest.raises(InputError, match=r"Seq2Seq src \| token id out of range; expected 0..8, got \[0, 9\]"):
        model.encode(torch.tensor([[0, 9]]))
    with pytest.raises(InputError, match=re.escape("src | wrong rank or dtype")):
        model.encode(torch.zeros(1, 3))
