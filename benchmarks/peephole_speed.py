"""PeepholeLSTM vs nn.LSTM: one training step (forward + backward + Adam), one thread.

    .venv/bin/python benchmarks/peephole_speed.py [--batch 64] [--time 8] [--hidden 64] [--layers 1]

Prints the median step time of each and the ratio. Warm-up steps first, then timed steps;
medians, not means (the machine is shared).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from edgelstm.models import PeepholeLSTM


def step_times(layer: nn.Module, x: torch.Tensor, warmup: int, runs: int) -> list[float]:
    opt = torch.optim.Adam(layer.parameters(), lr=1e-3)
    out = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        y, _ = layer(x)
        loss = y.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--time", type=int, default=8)
    ap.add_argument("--input", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=200)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.time, a.input)
    kw = dict(input_size=a.input, hidden_size=a.hidden, num_layers=a.layers, batch_first=True)
    res = {}
    for name, layer in (("nn.LSTM", nn.LSTM(**kw)), ("PeepholeLSTM", PeepholeLSTM(**kw))):
        res[name] = statistics.median(step_times(layer, x, a.warmup, a.runs))
        print(f"{name:13s} median training step {res[name] * 1e3:7.3f} ms")
    print(f"PeepholeLSTM / nn.LSTM = {res['PeepholeLSTM'] / res['nn.LSTM']:.2f}x "
          f"(batch {a.batch}, time {a.time}, hidden {a.hidden}, layers {a.layers}, 1 thread)")


if __name__ == "__main__":
    main()
