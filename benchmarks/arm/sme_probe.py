"""Which part is wrong when int8 models run under qemu's ``max`` core (SVE2 + SME)?

Runs small probe graphs on x86 and on the emulated ARM64 guest under several emulated cores and
onnxruntime session configurations, and prints where the outputs diverge:

* ``matmulinteger``  one ``MatMulInteger`` (uint8 x int8 -> int32): integer arithmetic is exact,
  so the ground truth is numpy's int64 product, independent of any machine;
* ``dq_matmul``      ``DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul`` (what
  ``quantize_dynamic`` emits for a MatMul); onnxruntime fuses it into ``DynamicQuantizeMatMul``
  unless graph optimizations are off; ground truth: numpy of the ONNX spec, exact in int64;
* ``lstm_int8`` / ``gru_int8``  tiny torch-exported models after ``quantize_dynamic`` (per-node:
  every node output is exposed as a graph output, which also prevents fusions, so it is run
  with optimizations off to see the kernels node by node).

Configurations: ``default``; ``no_kleidiai`` (session config ``mlas.disable_kleidiai=1``);
``no_opt`` (``ORT_DISABLE_ALL``: no fusion into DynamicQuantizeMatMul / MatMulIntegerToFloat).
Cores: neoverse-n1, max, ``max,sme=off``, ``max,sve=off``.

Usage: .venv/bin/python benchmarks/arm/sme_probe.py [--cpus neoverse-n1,max,...]
Findings are written up in benchmarks/arm/README.md and docs/ARM.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import armenv  # noqa: E402
import models_x86  # noqa: E402

CONFIGS = {"default": {}, "no_kleidiai": {"config": {"mlas.disable_kleidiai": "1"}}, "no_opt": {"opt": "none"}}
CPUS = ["neoverse-n1", "max", "max,sme=off", "max,sve=off"]


def dq_numpy(x: np.ndarray):
    """ONNX DynamicQuantizeLinear, in float32 as the spec says (range includes 0)."""
    lo, hi = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((hi - lo) / 255.0)
    zp = np.uint8(np.clip(np.rint(np.float32(-lo) / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.uint8)
    return q, scale, zp


def make_probes(job: Path) -> tuple[list[dict], dict]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    truth, floats = {}, {}  # exact integer results / unquantized float results
    models = []
    M, K, N = 5, 64, 48
    a = rng.integers(0, 256, (M, K)).astype(np.uint8)
    b = rng.integers(-128, 128, (K, N)).astype(np.int8)
    azp = np.uint8(117)
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B", "azp"], ["Y"])], "mmi",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [M, K])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [M, N])],
        [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(azp), "azp")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), job / "matmulinteger.onnx")
    np.savez(job / "matmulinteger.npz", A=a)
    truth["matmulinteger"] = {"Y": ((a.astype(np.int64) - int(azp)) @ b.astype(np.int64)).astype(np.int32)}
    models.append({"name": "matmulinteger", "model": "matmulinteger.onnx", "inputs": "matmulinteger.npz"})

    x = rng.standard_normal((M, K)).astype(np.float32)
    bscale = np.float32(0.02)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["X"], ["Xq", "Xs", "Xzp"]),
             helper.make_node("MatMulInteger", ["Xq", "B", "Xzp"], ["Yi"]),
             helper.make_node("Cast", ["Yi"], ["Yf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["Xs", "Bs"], ["S"]),
             helper.make_node("Mul", ["Yf", "S"], ["Y"])]
    g = helper.make_graph(nodes, "dqmm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])],
                          [numpy_helper.from_array(b, "B"), numpy_helper.from_array(np.array(bscale), "Bs")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), job / "dq_matmul.onnx")
    np.savez(job / "dq_matmul.npz", X=x)
    q, s, zp = dq_numpy(x)
    yi = (q.astype(np.int64) - int(zp)) @ b.astype(np.int64)
    truth["dq_matmul"] = {"Y": yi.astype(np.float32) * (s * bscale)}
    floats["dq_matmul"] = {"Y": x.astype(np.float64) @ (b.astype(np.float64) * float(bscale))}
    models.append({"name": "dq_matmul", "model": "dq_matmul.onnx", "inputs": "dq_matmul.npz"})

    tiny = job / "tiny"
    tiny.mkdir()
    import onnxruntime as ort
    for spec in models_x86.torch_models(tiny):
        if not spec.precision.startswith("int8"):
            continue
        m = onnx.load(str(tiny / spec.files["model"]))
        fp32 = ort.InferenceSession(str(tiny / f"{spec.family}-fp32.onnx"), providers=["CPUExecutionProvider"])
        # final outputs, optimizations on (what a user runs)
        name = f"{spec.family}_int8"
        onnx.save(m, job / f"{name}.onnx")
        inp = dict(np.load(tiny / spec.inputs))
        feeds = {"x": inp["x"], "h_in": np.zeros((2, 3, 16), np.float32)}
        if spec.family == "lstm":
            feeds["c_in"] = np.zeros((2, 3, 16), np.float32)
        np.savez(job / f"{name}.npz", **feeds)
        floats[name] = {"y": fp32.run(["y"], feeds)[0]}  # the unquantized model: quantization error
        models.append({"name": name, "model": f"{name}.onnx", "inputs": f"{name}.npz"})
        # every node output exposed (per-node dump)
        have = {o.name for o in m.graph.output}
        order = []
        for node in m.graph.node:
            for o in node.output:
                if o and o not in have:
                    m.graph.output.append(helper.make_empty_tensor_value_info(o))
                    order.append((o, node.op_type))
        onnx.save(m, job / f"{name}_nodes.onnx")
        (job / f"{name}_nodes.order.json").write_text(json.dumps(order))
        models.append({"name": f"{name}_nodes", "model": f"{name}_nodes.onnx", "inputs": f"{name}.npz"})
    return models, truth, floats


def run(cmd, runner=None, env=None):
    p = runner(cmd, env=env) if runner else subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise armenv.ArmSetupError(f"probe | failed:\n{p.stderr[-2000:]}")
    return [json.loads(l[len("PROBE_JSON "):]) for l in p.stdout.splitlines() if l.startswith("PROBE_JSON ")]


def maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((got.astype(np.float64) - ref) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref.astype(np.float64) ** 2)) / noise)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", default=",".join(CPUS).replace("max,sme=off", "max;sme=off").replace("max,sve=off", "max;sve=off"),
                    help="';'-free list: cores separated by ',' with qemu options joined by ';' (max;sme=off)")
    ap.add_argument("--json", type=Path, default=None,
                    help="result file (default: results/sme_probe_qemu<MAJOR>.json)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="[probe %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    cpus = [c.replace(";", ",") for c in a.cpus.split(",")]
    armenv.check_host()
    env = armenv.ArmEnv(armenv.default_cache())
    env.ensure_rootfs()
    from importlib.metadata import version
    site = env.ensure_deps(sys.executable, [f"{n}=={version(n)}" for n in ("onnxruntime", "numpy", "click")])
    job = env.host_path(f"{armenv.GUEST_DIR}/probe-{time.strftime('%H%M%S')}")
    job.mkdir(parents=True)
    try:
        models, truth, floats = make_probes(job)
        (job / "job.json").write_text(json.dumps({"models": models, "configs": CONFIGS}))
        shutil.copy(HERE / "probe_guest.py", job)
        sides = {"x86": None}
        (job / "x86").mkdir()
        run([sys.executable, str(job / "probe_guest.py"), str(job / "job.json"), str(job / "x86")])
        for cpu in cpus:
            env.cpu = cpu
            env.ensure_cpuinfo()  # the guest's /proc/cpuinfo must describe the emulated core
            out = job / cpu.replace(",", "_").replace("=", "-")
            out.mkdir()
            t0 = time.perf_counter()
            run([env.guest_python, str(job / "probe_guest.py"), str(job / "job.json"), str(out)],
                runner=env.run_guest, env={"PYTHONPATH": site})
            logging.info("%s: %.1f s", cpu, time.perf_counter() - t0)
            sides[cpu] = out
        report = []
        for m in models:
            for label in CONFIGS:
                x86 = dict(np.load(job / "x86" / f"{m['name']}__{label}.npz"))
                for cpu in ["x86", *cpus]:
                    got = x86 if cpu == "x86" else dict(np.load(sides[cpu] / f"{m['name']}__{label}.npz"))
                    row = {"model": m["name"], "config": label, "cpu": cpu}
                    if not got:
                        row["error"] = "no outputs (session failed)"
                        report.append(row)
                        continue
                    if m["name"] in truth:
                        row["vs_exact"] = max(maxdiff(got[k], v) for k, v in truth[m["name"]].items())
                    if m["name"] in floats:  # SQNR against the unquantized computation
                        row["sqnr_vs_float_db"] = min(sqnr(v, got[k]) for k, v in floats[m["name"]].items())
                    if cpu != "x86":
                        row["vs_x86"] = max(maxdiff(got[k], x86[k]) for k in x86)
                        if m["name"].endswith("_nodes"):
                            order = json.loads((job / f"{m['name']}.order.json").read_text())
                            for o, op in order:
                                if o in got and maxdiff(got[o], x86[o]) > 1e-4:
                                    row["first_divergent_node_output"] = f"{o} ({op}): {maxdiff(got[o], x86[o]):.3g}"
                                    break
                    report.append(row)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    click.echo(armenv.qemu_version())
    click.echo(f"{'model':<18} {'config':<12} {'cpu':<13} {'vs exact':>10} {'vs x86':>10} {'SQNR/float':>10}  first divergent node")
    for r in report:
        click.echo(f"{r['model']:<18} {r['config']:<12} {r['cpu']:<13} {r.get('vs_exact', float('nan')):>10.3g} "
              f"{r.get('vs_x86', float('nan')):>10.3g} {r.get('sqnr_vs_float_db', float('nan')):>10.1f}  "
              f"{r.get('first_divergent_node_output', r.get('error', ''))}")
    if a.json is None:
        major = "".join(c for c in armenv.qemu_version().split("version")[-1].strip().split(".")[0] if c.isdigit())
        a.json = HERE / "results" / f"sme_probe_qemu{major or 'unknown'}.json"
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps({"onnxruntime": version("onnxruntime"),
                                  "qemu": armenv.qemu_version(),
                                  "rows": report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
