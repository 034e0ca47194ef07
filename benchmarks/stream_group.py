"""Many streams in one call: ``model.streams(n).step`` vs n separate streams stepped one by one.

Two sizes, fp32, one intra-op thread, built with ``tests/graphs.py`` (needs onnx):
* keyword spotting: 1-layer LSTM, 40 features, hidden 64, 12 classes (per-call overhead dominates);
* 2x256: 2-layer LSTM, 128 features, hidden 256, 10 classes (arithmetic dominates).

For each n, both engines step the same frames; their outputs are compared before any timing
(the group must equal the separate streams to ``GROUP_TOL``). Then they are timed in alternating
blocks (machine noise hits both alike) and the block medians are reported as aggregate steps per
second (stream-steps, i.e. n per group call) with the ratio group / sequential. For the 2x256
size the floor of one batch-n step is measured too (``edgelstm.bench.floor.measure_floor``: its matrix
products in BLAS and one read of the weights), and the group step is given as a multiple of it.

    .venv/bin/python benchmarks/stream_group.py [--ns 1,8,64] [--blocks 7] [--json OUT]
"""
from __future__ import annotations

import os

# one thread everywhere (the floor's BLAS included), set before NumPy loads its thread pool
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402

from edgelstm import runtime  # noqa: E402
from edgelstm.bench.floor import file_facts, measure_floor  # noqa: E402
from edgelstm.bench.measure import environment  # noqa: E402

# group rows vs batch-1 streams: same fp32 recurrence, different product shapes (see tests/test_group.py)
GROUP_TOL = 1e-5

SIZES = {
    "kws-1x64": RecurrentSpec(cell="lstm", layers=1, input_size=40, hidden=64, classes=12),
    "lstm-2x256": RecurrentSpec(cell="lstm", layers=2, input_size=128, hidden=256, classes=10),
}


def _check(model, frames: np.ndarray) -> float:
    n = frames.shape[1]
    group, singles = model.streams(n), [model.stream(1) for _ in range(n)]
    worst = 0.0
    for t in range(frames.shape[0]):
        g = group.step(frames[t])["logits"]
        s = np.concatenate([st.step(frames[t, i:i + 1])["logits"] for i, st in enumerate(singles)])
        worst = max(worst, float(np.abs(g - s).max()))
    if worst > GROUP_TOL:
        raise SystemExit(f"stream group differs from separate streams by {worst:.3g} > {GROUP_TOL}")
    return worst


def _block(fn, steps: int) -> float:
    t0 = time.perf_counter()
    fn(steps)
    return time.perf_counter() - t0


def bench_size(name: str, spec: RecurrentSpec, ns: list[int], blocks: int, budget_s: float, d: Path) -> list[dict]:
    path = save(build_recurrent(spec), d / f"{name}.onnx")
    model = runtime.load(path, device="cpu", threads=1)
    facts = file_facts(path)
    rows = []
    for n in ns:
        rng = np.random.default_rng(n)
        frames = rng.standard_normal((64, n, spec.input_size)).astype(np.float32)
        worst = _check(model, frames[:16])
        group, singles = model.streams(n), [model.stream(1) for _ in range(n)]
        rows_f = [[np.ascontiguousarray(frames[t % 64, i:i + 1]) for i in range(n)] for t in range(64)]

        def grouped(steps):
            for t in range(steps):
                group.step(frames[t % 64])

        def sequential(steps):
            for t in range(steps):
                fr = rows_f[t % 64]
                for i, st in enumerate(singles):
                    st.step(fr[i])

        # steps per block: about budget_s / (2 * blocks) of sequential work
        probe = _block(sequential, 5) / 5
        steps = max(5, int(budget_s / (2 * blocks) / max(probe, 1e-7)))
        grouped(steps), sequential(steps)  # warm-up
        tg, ts = [], []
        for _ in range(blocks):
            tg.append(_block(grouped, steps) / steps)
            ts.append(_block(sequential, steps) / steps)
        g_call, s_call = float(np.median(tg)), float(np.median(ts))
        row = {"size": name, "n": n, "group_call_us": round(g_call * 1e6, 2),
               "sequential_per_stream_step_us": round(s_call / n * 1e6, 2),
               "group_stream_steps_per_s": round(n / g_call), "sequential_stream_steps_per_s": round(n / s_call),
               "group_over_sequential": round(s_call / g_call, 2), "max_abs_diff": worst, "steps_per_block": steps}
        if name == "lstm-2x256":
            fl = measure_floor(facts, batch=n, time_steps=1, per_step_head=False)
            row["floor_batch_step_us"] = round(fl.floor_s * 1e6, 2)
            row["group_x_floor"] = round(g_call / fl.floor_s, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", default="1,8,64", help="group sizes, comma-separated")
    ap.add_argument("--blocks", type=int, default=7, help="alternating blocks per engine")
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of sequential work per (size, n)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ns = [int(v) for v in args.ns.split(",")]
    with tempfile.TemporaryDirectory() as d:
        rows = [r for name, spec in SIZES.items() for r in bench_size(name, spec, ns, args.blocks, args.budget, Path(d))]
    result = {"schema": "edgelstm.bench.stream_group/1", "threads": 1, "rows": rows, "env": environment(1)}
    if args.json:
        from edgelstm.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
