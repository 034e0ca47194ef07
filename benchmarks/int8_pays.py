"""Where does int8 pay? fp32 vs forced int8 for one recurrent node at several sizes.

The measurements behind ``exporters/int8_plan.py``: a 1-layer LSTM or GRU (PyTorch's default
init, ``tests/quantize_graphs.py``) + a linear head, quantized with ``quantize --force-int8``
(every node int8, the GRU through its rewrite), run through ``edgelstm.runtime`` on one thread:
a streaming step at batch 1 and a 256-step sequence at batch 1. Before timing, the int8 outputs
are checked against fp32 (SQNR >= 20 dB on the sequence's logits: a broken int8 file would time
something else). fp32 and int8 are timed in alternating blocks; block medians; ratio int8 / fp32
(< 1: int8 is faster).

    .venv/bin/python benchmarks/int8_pays.py [--sizes 32,64,128,256] [--cells lstm,gru] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from quantize_graphs import build, save  # noqa: E402

from edgelstm import runtime  # noqa: E402
from edgelstm.exporters.quantize import quantize  # noqa: E402
from edgelstm.bench.measure import environment  # noqa: E402

MIN_SQNR_DB = 20.0  # int8 weights and activations: ~40 dB per product; 20 dB says "the same model"


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref - got) ** 2))
    return 200.0 if noise == 0 else 10 * np.log10(float(np.sum(ref ** 2)) / noise)


def _per_call(fn, calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def measure(cell: str, hidden: int, features: int, blocks: int, d: Path) -> dict:
    fp32 = save(build(cell, input_size=features, hidden=hidden, classes=10), d / f"{cell}{hidden}.onnx")
    int8 = d / f"{cell}{hidden}.int8.onnx"
    quantize(fp32, int8, "int8-dynamic", threads=1, evaluate_error=False, force_int8=True)
    models = {k: runtime.load(p, device="cpu", threads=1) for k, p in (("fp32", fp32), ("int8", int8))}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, features)).astype(np.float32)
    frame = x[:, 0]
    ref, got = (models[k].run(x)["logits"] for k in ("fp32", "int8"))
    sqnr = _sqnr_db(ref, got)
    if sqnr < MIN_SQNR_DB:
        raise SystemExit(f"{cell} {hidden}: int8 logits SQNR {sqnr:.1f} dB < {MIN_SQNR_DB} dB: not timing a broken file")
    streams = {k: m.stream(1) for k, m in models.items()}
    times: dict[str, dict[str, list[float]]] = {"step": {"fp32": [], "int8": []}, "sequence": {"fp32": [], "int8": []}}
    for k in models:  # warm-up
        _per_call(lambda: streams[k].step(frame), 50), _per_call(lambda: models[k].run(x), 2)
    for _ in range(blocks):
        for k in ("fp32", "int8"):
            times["step"][k].append(_per_call(lambda: streams[k].step(frame), 300))
            times["sequence"][k].append(_per_call(lambda: models[k].run(x), 5))
    med = {case: {k: float(np.median(v)) for k, v in t.items()} for case, t in times.items()}
    return {"cell": cell, "hidden": hidden, "features": features,
            "weights": (4 if cell == "lstm" else 3) * hidden * (hidden + features),
            "file_ratio": round(int8.stat().st_size / fp32.stat().st_size, 3), "sqnr_db": round(sqnr, 1),
            "step_us": {k: round(v * 1e6, 1) for k, v in med["step"].items()},
            "step_int8_over_fp32": round(med["step"]["int8"] / med["step"]["fp32"], 2),
            "sequence_ms": {k: round(v * 1e3, 2) for k, v in med["sequence"].items()},
            "sequence_int8_over_fp32": round(med["sequence"]["int8"] / med["sequence"]["fp32"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,128,256", help="hidden sizes (features: 40 up to 64, else 128)")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for cell in args.cells.split(","):
            for h in (int(v) for v in args.sizes.split(",")):
                rows.append(measure(cell, h, 40 if h <= 64 else 128, args.blocks, Path(d)))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        from edgelstm.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps({"schema": "edgelstm.bench.int8_pays/1", "rows": rows,
                                                 "env": environment(1)}, indent=1))


if __name__ == "__main__":
    main()
