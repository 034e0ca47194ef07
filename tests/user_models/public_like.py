"""Users' own models shaped like the recurrent models of well-known public repositories (written
here, tiny sizes), for the "every graph through every command" tests (tests/test_public_like.py).

Each factory seeds torch so a ``verify --model`` run rebuilds the weights export saw.
"""
import torch
from torch import nn

VOCAB = 13


class WordLM(nn.Module):
    """Word-level language model: embedding, 2-layer GRU, decoder tied to the embedding.
    Time-major ``tokens int64 [time, batch]`` and the hidden state as a forward argument."""

    def __init__(self, vocab=VOCAB, size=8):
        super().__init__()
        self.encoder = nn.Embedding(vocab, size)
        self.rnn = nn.GRU(size, size, num_layers=2)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight  # tied weights

    def forward(self, tokens, hidden):
        emb = self.encoder(tokens)                 # [T, B, E]
        out, hidden = self.rnn(emb, hidden)        # [T, B, H], [2, B, H]
        return self.decoder(out), hidden           # [T, B, V]


class BiClassifier(nn.Module):
    """Sentiment-like classifier: ids + lengths (no PackedSequence), bidirectional LSTM, the
    last valid step of the forward direction and the first of the backward one."""

    def __init__(self, vocab=VOCAB, size=6, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, size)
        self.lstm = nn.LSTM(size, size, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * size, classes)

    def forward(self, ids, lengths):
        y, _ = self.lstm(self.embed(ids))          # [B, T, 2H]
        h = y.shape[-1] // 2
        idx = (lengths.long() - 1).clamp(min=0)
        last = y[torch.arange(y.shape[0]), idx, :h]
        first = y[:, 0, h:]
        return self.out(torch.cat([last, first], dim=-1))


class CRNN(nn.Module):
    """Handwriting-like: conv front end over an image ``[batch, 1, H, W]``, columns as time,
    bidirectional LSTM, per-column class scores ``[batch, W', classes]``."""

    def __init__(self, height=8, classes=5):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d((2, 1)))
        self.lstm = nn.LSTM(4 * (height // 2), 6, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, classes)

    def forward(self, image):
        f = self.conv(image)                       # [B, C, H/2, W]
        b, c, h, w = f.shape
        seq = f.permute(0, 3, 1, 2).reshape(b, w, c * h)
        y, _ = self.lstm(seq)
        return self.fc(y)


class Forecaster(nn.Module):
    """Channels-first forecaster: ``series [batch, vars, time]`` -> next value of every variable."""

    def __init__(self, variables=3, size=7):
        super().__init__()
        self.lstm = nn.LSTM(variables, size, batch_first=True)
        self.head = nn.Linear(size, variables)

    def forward(self, series):
        y, _ = self.lstm(series.transpose(1, 2))   # [B, T, H]
        return self.head(y[:, -1])


class SpeakerEncoder(nn.Module):
    """Speaker-encoder-like: 3-layer LSTM over mel frames ``x``, the last hidden state projected
    and L2-normalized (an embedding per utterance)."""

    def __init__(self, mels=5, size=8, embed=4):
        super().__init__()
        self.lstm = nn.LSTM(mels, size, num_layers=3, batch_first=True)
        self.linear = nn.Linear(size, embed)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        e = torch.relu(self.linear(h[-1]))
        return e / (e.norm(dim=1, keepdim=True) + 1e-5)


def _seeded(cls):
    def factory():
        torch.manual_seed(0)
        return cls()
    factory.__name__ = f"build_{cls.__name__.lower()}"
    return factory


build_lm = _seeded(WordLM)
build_classifier = _seeded(BiClassifier)
build_crnn = _seeded(CRNN)
build_forecaster = _seeded(Forecaster)
build_speaker = _seeded(SpeakerEncoder)
