"""PyTorch eager on the same cases and inputs as the ONNX models (``edgelstm bench --torch``).

Imports the standard library, ``edgelstm.errors``, ``edgelstm.extras`` and the modules beside it;
torch and ``edgelstm.checkpoint`` only inside :func:`bench_torch`, after
:func:`edgelstm.extras.require` has checked the ``export`` extra (a device install without it gets
:class:`~edgelstm.errors.MissingExtraError`). Imported by :mod:`.suite`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from edgelstm.bench.cases import result_row
from edgelstm.bench.measure import LatencyStats, first_call, measure, peak_rss_mb
from edgelstm.errors import CheckpointError, UsageError
from edgelstm.extras import require


def bench_torch(run_dir: str, feeds_for: Callable[[Any], dict], graph_role: str, cases: Sequence[Any],
                settings: Any, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time PyTorch eager on the same cases and inputs as the ONNX models (``--torch``).

    With ``--device cuda`` (or ``tensorrt``) the model and inputs live on the GPU (PyTorch's cuDNN
    LSTM/GRU kernels; TF32 as ``torch.backends.cudnn.allow_tf32`` says, on by default like
    onnxruntime's ``use_tf32``) and each timed call ends with ``torch.cuda.synchronize()``: an
    asynchronous launch alone would time nothing. Without CUDA in this torch it is a usage error."""
    require("export", "bench --torch")
    import torch

    try:
        from edgelstm.checkpoint import load_run
    except ImportError as e:
        raise UsageError("--torch", "edgelstm.checkpoint is not available in this installation", got=str(e)) from None
    if not Path(run_dir).is_dir():
        raise CheckpointError(str(run_dir), "run directory not found", expected="a directory from edgelstm train",
                              got=str(run_dir))
    model, _config = load_run(run_dir)
    model.eval()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    gpu = settings.device in ("cuda", "tensorrt")
    if gpu and not torch.cuda.is_available():
        raise UsageError("--torch", f"--device {settings.device} times PyTorch on the GPU, but this torch has no CUDA",
                         expected="a CUDA build of torch with a visible GPU",
                         got=f"torch {torch.__version__}, cuda available: False")
    dev = torch.device("cuda" if gpu else "cpu")
    model.to(dev)
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    label = (f"torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
             f"tf32={torch.backends.cudnn.allow_tf32}") if gpu else f"torch {torch.__version__}"
    rows = []
    for case in cases:
        np_feeds = feeds_for(case)
        t = {k: torch.from_numpy(v.copy()).to(dev) for k, v in np_feeds.items()}
        lengths = t.get("lengths")
        if lengths is not None:
            lengths = lengths.to(torch.int64)
        if graph_role == "decoder_step":
            state = {"h": t["h_in"], "c": t["c_in"]}

            def call(state=state, t=t) -> None:
                _, state["h"], state["c"], _ = model.decode_step(t["token"], state["h"], state["c"], t["memory"],
                                                                 t["src_lengths"].to(torch.int64))
        elif graph_role == "encoder":
            def call(t=t) -> None:
                model.encode(t["src"], t["src_lengths"].to(torch.int64))
        elif case.mode == "stream":
            st = {"s": tuple(t[k] for k in ("h_in", "c_in") if k in t)}

            def call(st=st, t=t, lengths=lengths) -> None:
                _, st["s"] = model(t["x"], lengths, st["s"])
        else:
            init = tuple(t[k] for k in ("h_in", "c_in") if k in t)

            def call(t=t, lengths=lengths, init=init) -> None:
                model(t["x"], lengths, init)

        def timed(call=call) -> None:
            call()
            sync()

        with torch.inference_mode():
            first = first_call(timed)
            samples = measure(timed, warmup=settings.warmup, runs=settings.runs, duration=settings.duration,
                                   progress=progress, label=f"pytorch {case.key}")
        stats = LatencyStats.from_samples(samples)
        if progress:
            progress(f"pytorch: {case.key} p50 {stats.p50 * 1e6:.1f} us, p99 {stats.p99 * 1e6:.1f} us")
        steps = 1 if graph_role == "decoder_step" else case.time
        rows.append(result_row(
            name="pytorch", backend="pytorch-eager", case=case, stats=stats, settings=settings,
            steps_per_call=steps, model=str(run_dir), precision="fp32", family=None, graph=graph_role,
            providers=[label], file_bytes=None, parameters=sum(p.numel() for p in model.parameters()),
            first_call_s=first, rss_peak_mb=peak_rss_mb(), floor=None, x_floor=None))
    return rows
