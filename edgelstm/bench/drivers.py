"""The two ONNX drivers: a bare ``InferenceSession.run`` loop, and the runtime's public API.

:func:`bench_onnx` times what onnxruntime itself costs for a graph (the state carried from
``*_out`` to ``*_in`` by hand); :func:`bench_runtime` times what an application calling
:mod:`edgelstm.runtime` pays, input checks included. Both return one result row per case.

Imports numpy, onnxruntime (through ``edgelstm.runtime``), the standard library,
``edgelstm.errors``, ``edgelstm.manifest``, ``edgelstm.runtime`` and the modules beside it.
Imported by :mod:`.suite` and ``benchmarks/``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgelstm.bench.cases import Case, Settings, result_row
from edgelstm.bench.feeds import build_feeds, provider_plan, state_pairs
from edgelstm.bench.floor import case_floor, file_facts
from edgelstm.bench.measure import LatencyStats, first_call, measure, peak_rss_mb, rss_mb
from edgelstm.errors import InputError, ModelFileError, UsageError
from edgelstm.manifest import Manifest
from edgelstm.runtime.graphfacts import GraphFacts
from edgelstm.runtime.integrity import graph_digest, read_model_bytes
from edgelstm.runtime.interface import pair_stem

DECODE_TOKENS_PER_CALL = 16  # decoder_step through the runtime: one timed call decodes this many tokens
Progress = Callable[[str], None] | None


@dataclass
class _Loaded:
    """One file as the rows report it: what was read before timing, and when timing began."""

    path: Path
    name: str
    facts: GraphFacts
    digest: str  # names the model across machines and file renames
    manifest: Manifest | None
    graph: str
    create_s: float
    rss0: float | None
    first_inference_s: float | None = None

    def row(self, case: Case, samples: np.ndarray, settings: Settings, *, steps_per_call: int,
            first_call_s: float, providers: list[str], **extra: Any) -> dict[str, Any]:
        if self.first_inference_s is None:
            self.first_inference_s = first_call_s
        stats = LatencyStats.from_samples(samples)
        m = self.manifest
        floor = case_floor(self.facts, batch=case.batch, time_steps=steps_per_call,
                           task=m.task if m else None) if settings.floor else None
        rss_now = rss_mb()
        row = result_row(
            name=self.name, backend="onnxruntime", case=case, stats=stats, settings=settings,
            steps_per_call=steps_per_call, frame_rate_hz=m.frame_rate_hz if m else None, **extra,
            model=str(self.path), precision=m.precision if m else self.facts.precision,
            family=m.family if m else None, graph=self.graph, providers=providers,
            file_bytes=self.path.stat().st_size, parameters=self.facts.parameters,
            weight_bytes=self.facts.weight_bytes, session_create_s=self.create_s,
            first_inference_s=self.first_inference_s, first_call_s=first_call_s, rss_peak_mb=peak_rss_mb(),
            rss_delta_mb=(rss_now - self.rss0) if (rss_now is not None and self.rss0 is not None) else None,
            floor=floor, x_floor=(stats.p50 / floor["floor_s"]) if floor else None)
        row["graph_sha256"] = self.digest
        return row


def _report(progress: Progress, name: str, case: Case, row: dict) -> None:
    if progress:
        lat = row["latency_s"]
        progress(f"{name}: {case.key} p50 {lat['p50'] * 1e6:.1f} us, p99 {lat['p99'] * 1e6:.1f} us")


def bench_onnx(path: str | os.PathLike, cases: Sequence[Case], settings: Settings, *,
               name: str | None = None, progress: Progress = None) -> list[dict[str, Any]]:
    """Benchmark one ONNX file over ``cases`` with a bare session; one result row per case."""
    from edgelstm.runtime import LoadOptions, Model
    from edgelstm.runtime.session import create_session, session_options

    path = Path(path)
    # the runtime's own load: the seal, the manifest's schema and its agreement with the graph,
    # so bench refuses exactly what run refuses (one small CPU session, before the timed one)
    manifest = Model(*read_model_bytes(path), LoadOptions(device="cpu", threads=1,
                                                          trust_modified=settings.trust_modified)).manifest
    plan = provider_plan(settings.device, settings.provider_options)
    facts = file_facts(path)
    so = session_options(settings.threads, inter_threads=1 if settings.threads else None, record_placement=False)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    sess = create_session(path, plan, so)
    f = _Loaded(path, name or path.stem, facts, graph_digest(path.read_bytes()), manifest,
                manifest.graph if manifest is not None else "model", time.perf_counter() - t0, rss0)
    pairs = state_pairs(sess, manifest)
    out_names = [o.name for o in sess.get_outputs()]
    out_index = {n: i for i, n in enumerate(out_names)}
    rows = []
    for case in cases:
        if case.mode == "stream":
            if not pairs:
                raise UsageError(f"{path.name} --mode stream", "model has no state inputs to carry",
                                 expected="inputs named *_in with matching *_out (or manifest states)",
                                 got=[i.name for i in sess.get_inputs()])
            if manifest is not None and not manifest.streamable and f.graph != "decoder_step":
                raise UsageError(f"{path.name} --mode stream", "manifest marks the model as not streamable",
                                 expected="--mode sequence", got="stream")
        feeds = build_feeds(sess, manifest, batch=case.batch, time_steps=case.time, seed=settings.seed)
        initial = {k: list(v.shape) for k, v in feeds.items()}

        if case.mode == "stream":
            def call(feeds=feeds) -> None:
                outs = sess.run(out_names, feeds)
                for si, so in pairs:
                    feeds[si] = outs[out_index[so]]
        else:
            def call(feeds=feeds) -> None:
                sess.run(out_names, feeds)

        try:
            first_call_s = first_call(call)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputError(f"{path.name} {case.key}", "onnxruntime rejected the generated inputs",
                             expected=initial, got=str(e).splitlines()[0]) from None
        samples = measure(call, warmup=settings.warmup, runs=settings.runs, duration=settings.duration,
                          progress=progress, label=f"{f.name} {case.key}")
        rows.append(f.row(case, samples, settings, steps_per_call=1 if f.graph == "decoder_step" else case.time,
                          first_call_s=first_call_s, providers=sess.get_providers()))
        _report(progress, f.name, case, rows[-1])
    del sess
    return rows


def bench_runtime(path: str | os.PathLike, cases: Sequence[Case], settings: Settings, *,
                  name: str | None = None, progress: Progress = None) -> list[dict[str, Any]]:
    """Benchmark one exported file through :mod:`edgelstm.runtime`, the way an application calls it.

    Unlike :func:`bench_onnx` (bare ``InferenceSession.run``), each call is the runtime's public path
    with its input checks: ``stream`` with ``time`` 1 is ``model.stream(batch).step(frame)``,
    ``stream`` with ``time`` > 1 is ``Stream.feed(chunk)``, ``sequence`` is ``model.run(x)`` (zero
    state). A seq2seq ``*.decoder_step.onnx`` is timed per token of ``Seq2SeqModel.decode_steps``
    (:data:`DECODE_TOKENS_PER_CALL` tokens per call, ``time`` = source length, memory from
    ``encode_source``), a ``*.encoder.onnx`` as ``model.encoder.run`` on ``[batch, time]`` token
    ids. Rows carry ``api`` naming the call.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(str(path), "model file not found", expected="an existing .onnx file", got=str(path))
    facts = file_facts(path)
    digest = graph_digest(path.read_bytes())
    rss0 = rss_mb()
    t0 = time.perf_counter()
    loaded, model, role = _load(path, settings)
    create_s = time.perf_counter() - t0
    f = _Loaded(path, name or path.stem, facts, digest, model.manifest, role, create_s, rss0)
    rng = np.random.default_rng(settings.seed)
    rows = []
    for case in cases:
        call, api, steps_per_call = _runtime_call(loaded, model, role, case, rng)
        first_call_s = first_call(call)
        samples = measure(call, warmup=settings.warmup, runs=settings.runs, duration=settings.duration,
                          progress=progress, label=f"{f.name} {case.key}")
        if role == "decoder_step":
            samples = samples / DECODE_TOKENS_PER_CALL  # per token: one decoder step (first_call_s: whole call)
        rows.append(f.row(case, samples, settings, steps_per_call=steps_per_call, first_call_s=first_call_s,
                          providers=list(model.providers), api=f"edgelstm.runtime {api}"))
        _report(progress, f.name, case, rows[-1])
    return rows


def _load(path: Path, settings: Settings):
    """``(loaded, timed model, role)``: the file through :func:`edgelstm.runtime.load`; for a
    seq2seq pair the timed model is the graph ``path`` names (encoder or decoder step)."""
    from edgelstm.runtime import Seq2SeqModel, load

    provider_plan(settings.device, settings.provider_options)  # refuses options for unused providers
    loaded = load(path, device=settings.device, threads=settings.threads, fallback=False,
                  provider_options=settings.provider_options or None, trust_modified=settings.trust_modified)
    if not isinstance(loaded, Seq2SeqModel):
        return loaded, loaded, "model"
    role = "decoder_step" if pair_stem(path.name)[1] == "decoder_step" else "encoder"
    return loaded, (loaded.decoder if role == "decoder_step" else loaded.encoder), role


def paired_ratio(base: str | os.PathLike, other: str | os.PathLike, case: Case, settings: Settings, *,
                 blocks: int = 9, block_s: float = 0.05) -> dict[str, Any]:
    """``other``'s time per call over ``base``'s on one case, through the runtime, in alternating
    blocks (ABBA order, so drift and a neighbour's load hit both alike); the ratio is the median of
    the per-block ratios, robust where two separately timed medians are not (on the shared VM
    the same graph timed twice minutes apart differed by up to 1.6x). Both files get the same
    inputs; what they compute is checked by the suite's own verification, not here."""
    calls = []
    for path in (base, other):
        loaded, model, role = _load(Path(path), settings)
        call, _, _ = _runtime_call(loaded, model, role, case, np.random.default_rng(settings.seed))
        call()  # the first call allocates: outside the blocks
        calls.append(call)
    t0 = time.perf_counter()
    calls[0]()
    n = max(1, int(block_s / max(time.perf_counter() - t0, 1e-7)))  # calls per block

    def block(call) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - start) / n

    times: list[list[float]] = [[], []]
    for b in range(blocks):
        order = (0, 1, 1, 0) if b % 2 == 0 else (1, 0, 0, 1)
        got: list[list[float]] = [[], []]
        for i in order:
            got[i].append(block(calls[i]))
        for i in (0, 1):
            times[i].append(sum(got[i]) / 2)
    ratios = [o / a for a, o in zip(*times)]
    return {"ratio": float(np.median(ratios)), "base_s": float(np.median(times[0])),
            "other_s": float(np.median(times[1])), "blocks": blocks, "calls_per_block": n,
            "ratio_range": [float(min(ratios)), float(max(ratios))]}


def _runtime_call(loaded, model, role: str, case: Case, rng: np.random.Generator
                  ) -> tuple[Callable[[], object], str, int]:
    """The timed call of one case through the runtime: ``(call, api name, steps per call)``."""
    if role in ("decoder_step", "encoder"):
        src = rng.integers(3, max(4, len(loaded.vocab or []) or 16), size=(case.batch, case.time)).astype(np.int64)
        if role == "encoder":
            inputs = {"src": src, "src_lengths": np.full(case.batch, case.time)}
            return (lambda: model.run(inputs=inputs)), "encoder.run", case.time
        encoded = loaded.encode_source(src)
        return ((lambda: loaded.decode_steps(encoded, DECODE_TOKENS_PER_CALL, stop_at_eos=False)),
                f"Seq2SeqModel.decode_steps (per token, {DECODE_TOKENS_PER_CALL} per call)", 1)
    if case.mode == "stream":
        if not model.streamable:
            raise UsageError(f"{model.path.name} --mode stream", "model is not streamable",
                             expected="--mode sequence", got="stream")
        stream = model.stream(case.batch)
        features = model.features or 1
        if case.time == 1:
            frame = rng.standard_normal((case.batch, features)).astype(np.float32)
            return (lambda: stream.step(frame)), "Stream.step", 1
        chunk = rng.standard_normal((case.batch, case.time, features)).astype(np.float32)
        return (lambda: stream.feed(chunk)), "Stream.feed", case.time
    x = rng.standard_normal((case.batch, case.time, model.features or 1)).astype(np.float32)
    return (lambda: model.run(x)), "Model.run", case.time
