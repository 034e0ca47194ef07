"""A user's own model, defined outside the package, for the CLI export tests."""
import torch
from torch import nn


class Tagger(nn.Module):
    """Embedding-free tagger: bidirectional GRU over features, then a per-step linear layer."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(6, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(10, 3)

    def forward(self, x):
        y, _ = self.gru(x)
        return self.proj(y)


class TwoStacks(nn.Module):
    """Two recurrent modules in sequence: time-major LSTM then an RNN (relu)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6)
        self.rnn = nn.RNN(6, 3, nonlinearity="relu")

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.rnn(y)
        return y


def build():
    torch.manual_seed(0)
    return Tagger()


def build_two():
    torch.manual_seed(0)
    return TwoStacks()


def build_projected():
    return nn.Sequential(nn.LSTM(4, 6, proj_size=2, batch_first=True))


class NoRecurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


def build_linear():
    return NoRecurrent()


def build_broken():
    raise RuntimeError("factory failed on purpose")


def build_not_module():
    return 42
