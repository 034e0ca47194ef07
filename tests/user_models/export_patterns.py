"""Recurrent models as users write them (shaped like public ones, written here), for
tests/test_export_patterns.py. Each factory takes no arguments and seeds its own weights; none of
these modules knows about edgelstm.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.nn.utils.rnn import pack_padded_sequence as pack  # an alias is mapped too


class WordLM(nn.Module):
    """Word-level language model in the layout of PyTorch's word_language_model example:
    ``forward(input [time, batch], hidden=(h, c)) -> (log-probs [time*batch, ntoken], (h, c))``,
    decoder weights tied to the encoder's."""

    def __init__(self, ntoken=50, ninp=16, nlayers=2, dropout=0.2):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, ninp, nlayers, dropout=dropout)
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight  # tied
        self.nlayers, self.nhid = nlayers, ninp

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))


class PackedClassifier(nn.Module):
    """Text classifier of the usual tutorial: embedding, pack_padded_sequence, bidirectional LSTM,
    the last hidden states of both directions, a linear layer."""

    def __init__(self, vocab=30, emb=8, hidden=12, classes=3, enforce_sorted=False):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)
        self.enforce_sorted = enforce_sorted

    def forward(self, text, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(text), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=self.enforce_sorted)
        _, (hidden, _) = self.lstm(packed)
        return self.fc(torch.cat((hidden[-2], hidden[-1]), dim=1))


class PackedMeanPool(PackedClassifier):
    """Sorted batches (enforce_sorted=True); mean of the padded outputs over each sequence's length."""

    def __init__(self):
        super().__init__(enforce_sorted=True)

    def forward(self, text, lengths):
        packed = pack_padded_sequence(self.embedding(text), lengths.cpu(), batch_first=True, enforce_sorted=True)
        out, out_lengths = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        return self.fc(out.sum(1) / out_lengths.unsqueeze(1).to(out.dtype))


class PackedTagger(PackedClassifier):
    """Per-token logits from the padded outputs: as long as the longest sequence of the batch."""

    def forward(self, text, lengths):
        packed = pack(self.embedding(text), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        return self.fc(out)


class Downsampled(nn.Module):
    """Speech-style front end: a stride-2 convolution halves the time axis, the lengths follow
    (ceil(T / 2)), then packed GRU and per-frame logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, kernel_size=3, stride=2, padding=1)
        self.gru = nn.GRU(8, 10, batch_first=True)
        self.out = nn.Linear(10, 5)

    def forward(self, feats, feat_lengths):
        y = torch.relu(self.conv(feats.transpose(1, 2))).transpose(1, 2)
        lengths = torch.div(feat_lengths + 1, 2, rounding_mode="floor")
        packed = pack_padded_sequence(y, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=y.shape[1])
        return self.out(out)


class DownsampledUnpacked(Downsampled):
    """The same front end, the GRU run on the padded tensor (what --lengths-input cannot serve)."""

    def forward(self, feats, feat_lengths):
        y = torch.relu(self.conv(feats.transpose(1, 2))).transpose(1, 2)
        return self.out(self.gru(y)[0])


class AttentionDecoderStep(nn.Module):
    """One step of a captioning / attention decoder (Show, Attend and Tell layout):
    ``forward(token, (h, c), memory) -> (logits, (h, c), alpha)`` with an nn.LSTMCell."""

    def __init__(self, vocab=40, emb=8, hidden=16, attn=12):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.enc_att = nn.Linear(hidden, attn)
        self.dec_att = nn.Linear(hidden, attn)
        self.full_att = nn.Linear(attn, 1)
        self.cell = nn.LSTMCell(emb + hidden, hidden)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, token, state, memory):
        h, c = state
        scores = self.full_att(torch.tanh(self.enc_att(memory) + self.dec_att(h).unsqueeze(1))).squeeze(2)
        alpha = torch.softmax(scores, dim=1)
        context = (memory * alpha.unsqueeze(2)).sum(1)
        h, c = self.cell(torch.cat([self.embedding(token), context], dim=1), (h, c))
        return self.fc(h), (h, c), alpha


class LayerNormLSTMStep(nn.Module):
    """An RNN-T predictor step with a hand-written layer-normalized LSTM (Linear layers only):
    ``forward(token, (h, c)) -> (out, (h, c))``."""

    def __init__(self, vocab=20, emb=8, hidden=12):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.ih = nn.Linear(emb, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.ln_ih = nn.LayerNorm(4 * hidden)
        self.ln_hh = nn.LayerNorm(4 * hidden)
        self.ln_c = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, token, state):
        h, c = state
        gates = self.ln_ih(self.ih(self.embedding(token))) + self.ln_hh(self.hh(h))
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
        return self.out(h), (h, c)


class GRUCellStep(nn.Module):
    """``forward(x, h) -> h``: one step of an nn.GRUCell (state is one tensor: --state h=h_out)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(6, 10)

    def forward(self, x, h):
        return self.cell(x, h)


class CellLoop(nn.Module):
    """A whole sequence through an nn.LSTMCell in a Python loop (refused: export the step)."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(4, 6)

    def forward(self, x):
        h = c = x.new_zeros(x.shape[0], 6)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
            outs.append(h)
        return torch.stack(outs, 1)


class CRNN(nn.Module):
    """Text-line recognizer: conv + pooling over a [batch, 1, 32, width] image, the width becomes
    time (width / 4 steps), a bidirectional LSTM, per-step class logits."""

    def __init__(self, classes=10):
        super().__init__()
        self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                                 nn.MaxPool2d((8, 1)))
        self.rnn = nn.LSTM(16, 12, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(24, classes)

    def forward(self, image):
        features = self.cnn(image).squeeze(2).permute(0, 2, 1)  # [batch, width / 4, 16]
        return self.fc(self.rnn(features)[0])


class GreedyDecoder(nn.Module):
    """Greedy decoding of the seq2seq tutorial: from the encoder's last hidden state, MAX_LEN steps
    of a one-step nn.GRU, feeding the argmax token back; returns tokens and logits."""

    MAX_LEN = 8

    def __init__(self, vocab=200, emb=64, hidden=128, bos=1):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)
        self.bos = bos

    def forward(self, encoder_hidden):
        h = encoder_hidden.unsqueeze(0)
        token = torch.full_like(encoder_hidden[:, 0], self.bos, dtype=torch.int64)
        tokens, logits = [], []
        for _ in range(self.MAX_LEN):
            y, h = self.gru(self.embedding(token).unsqueeze(1), h)
            step = self.out(y[:, 0])
            token = step.argmax(1)
            tokens.append(token)
            logits.append(step)
        return torch.stack(tokens, 1), torch.stack(logits, 1)


class TimeMajorTagger(nn.Module):
    """Time-major ``[time, batch, features]`` tagger: nn.LSTM without batch_first."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 7)
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def _seeded(cls, *args, **kwargs):
    torch.manual_seed(0)
    return cls(*args, **kwargs).eval()


def word_lm():
    return _seeded(WordLM)


def packed_classifier():
    return _seeded(PackedClassifier)


def packed_mean_pool():
    return _seeded(PackedMeanPool)


def packed_tagger():
    return _seeded(PackedTagger)


def downsampled():
    return _seeded(Downsampled)


def downsampled_unpacked():
    return _seeded(DownsampledUnpacked)


def attention_decoder_step():
    return _seeded(AttentionDecoderStep)


def layernorm_lstm_step():
    return _seeded(LayerNormLSTMStep)


def gru_cell_step():
    return _seeded(GRUCellStep)


def cell_loop():
    return _seeded(CellLoop)


def crnn():
    return _seeded(CRNN)


def greedy_decoder():
    return _seeded(GreedyDecoder)


def time_major_tagger():
    return _seeded(TimeMajorTagger)
