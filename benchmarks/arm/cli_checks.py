"""The ``edgelstm`` command line on the emulated device, as a user there would run it.

The guest runs the console script that ``pip`` installed with the wheel (its shebang pointed at
the guest's python), so this is the CLI of ``pip install edgelstm`` on an ARM64 board:

* ``edgelstm run MODEL --input IN.npz --device arm --threads T --out OUT.npz`` (whole sequences),
  and the same with ``--stream`` (one step at a time, carried state); the same commands run on
  x86 with ``--device cpu`` and the two ``OUT.npz`` are compared with the row's tolerance;
* ``edgelstm run ENCODER --text ...`` for seq2seq: the decoded texts must be identical;
* ``edgelstm verify FP32 --against INT8 --device arm`` (no torch there: the NumPy reference
  cells are the oracle): must pass on ARM, as it does on x86;
* ``edgelstm bench`` of every recurrent model, relabelled as emulated (a latency under qemu says
  nothing about a real board; it shows the bench runs there).
"""
from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np

import compare

log = logging.getLogger("edgelstm.arm")


class Sides:
    """Runs one ``edgelstm`` command on x86 (host venv) or on ARM (guest console script)."""

    def __init__(self, env, host_python: str, pkg_site: str, guest_env: dict, threads: int,
                 verify_site: str | None = None):
        self.env, self.host_python, self.pkg_site = env, host_python, pkg_site
        self.guest_env, self.threads = guest_env, threads
        self.verify_site = verify_site  # deps + onnx: `edgelstm verify` reads graphs with onnx

    def x86(self, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([self.host_python, "-m", "edgelstm", *args], capture_output=True, text=True,
                              timeout=timeout, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(self.threads),
                                                    "PYTHONWARNINGS": "ignore"})

    def arm(self, args: list[str], timeout: float = 600, extra_site: str | None = None) -> subprocess.CompletedProcess:
        env = dict(self.guest_env)
        if extra_site:
            env["PYTHONPATH"] = f"{self.pkg_site}:{extra_site}"
        return self.env.run_guest([self.env.guest_python, f"{self.pkg_site}/bin/edgelstm", *args],
                                  env=env, timeout=timeout)


def _last_line(p: subprocess.CompletedProcess) -> str:
    lines = (p.stdout + p.stderr).strip().splitlines()
    return lines[-1] if lines else f"exit {p.returncode}"


def _ok_or(p: subprocess.CompletedProcess, what: str) -> str:
    return "" if p.returncode == 0 else f"{what}: exit {p.returncode}: {_last_line(p)}"


def run_checks(sides: Sides, job: Path, specs, rows: dict) -> list[dict]:
    """Add CLI comparisons to ``rows`` (spec name -> compare.Row); return the other checks."""
    out_dir = job / "cli"
    out_dir.mkdir(exist_ok=True)
    checks: list[dict] = []
    t = str(sides.threads)
    for s in specs:
        row = rows[s.name]
        key = compare.precision_key(s.precision)
        if s.kind == "seq2seq":
            texts = _seq2seq_texts(job / s.inputs, job / s.files["encoder"])
            outs = {}
            for side, dev in (("x86", "cpu"), ("arm", "arm")):
                j = out_dir / f"{side}-{s.name}-text.json"
                args = ["run", str(job / s.files["encoder"]), *sum((["--text", x] for x in texts), []),
                        "--device", dev, "--threads", t, "--json", str(j)]
                p = sides.x86(args) if side == "x86" else sides.arm(args)
                err = _ok_or(p, f"edgelstm run (seq2seq) on {side}")
                if err:
                    row.error = row.error or err
                    break
                outs[side] = json.loads(j.read_text())
            if len(outs) == 2:
                same = _texts(outs["x86"]) == _texts(outs["arm"])
                row.arm_vs_x86.append(compare.Stat("cli run --text (decoded tokens)", 0.0 if same else np.inf, 1.0,
                                                   np.inf if same else -np.inf, same,
                                                   "" if same else f"x86 {_texts(outs['x86'])} != arm {_texts(outs['arm'])}"))
            continue
        # --stream takes no per-sequence lengths (a stream has no end): full-length data for it
        stream_in = out_dir / f"{s.name}-stream-input.npz"
        np.savez(stream_in, x=np.load(job / s.inputs)["x"])
        for mode, extra, data in (("run", [], job / s.inputs), ("run --stream", ["--stream"], stream_in)):
            res = {}
            for side, dev in (("x86", "cpu"), ("arm", "arm")):
                o = out_dir / f"{side}-{s.name}-{'stream' if extra else 'run'}.npz"
                args = ["run", str(job / s.files["model"]), "--input", str(data), "--device", dev,
                        "--threads", t, "--out", str(o), *extra]
                p = sides.x86(args) if side == "x86" else sides.arm(args)
                err = _ok_or(p, f"edgelstm {mode} on {side}")
                if err:
                    row.error = row.error or err
                    break
                res[side] = dict(np.load(o))
            if len(res) == 2:
                for st in compare.compare_outputs(res["x86"], res["arm"], compare.ARM_VS_X86[key]):
                    st.key = f"cli {mode}: {st.key}"
                    row.arm_vs_x86.append(st)

    # verify: every fp32 recurrent model against its int8 twin, on ARM (and on x86 for the record)
    by_family: dict[str, dict[str, object]] = {}
    for s in specs:  # every family; a seq2seq pair is verified from its encoder file (the pair)
        by_family.setdefault(s.family, {})[compare.precision_key(s.precision)] = s

    def main_file(spec) -> Path:
        return job / (spec.files["model"] if "model" in spec.files else spec.files["encoder"])

    for family, d in sorted(by_family.items()):
        if "fp32" not in d:
            continue
        fp32 = d["fp32"]
        args_base = ["verify", str(main_file(fp32)), "--oracles", "numpy", "--steps", "300", "-q"]
        if "int8" in d:
            args_base += ["--against", str(main_file(d["int8"]))]
        verdict = {}
        for side, dev in (("x86", "cpu"), ("arm", "arm")):
            j = out_dir / f"{side}-verify-{family}.json"
            t0 = time.perf_counter()
            args = [*args_base, "--device", dev, "--json", str(j)]
            p = sides.x86(args) if side == "x86" else sides.arm(args, extra_site=sides.verify_site)
            verdict[side] = {"exit": p.returncode, "line": _last_line(p), "s": round(time.perf_counter() - t0, 1),
                             "verdict": _verdict(j)}
        # on ARM verify must pass (exit 0) and reach the same verdict, check by check, as on x86:
        # a model that fails verification on both sides is a failure, not a match
        same = verdict["arm"]["verdict"] is not None and verdict["arm"]["verdict"] == verdict["x86"]["verdict"]
        ok = same and verdict["arm"]["exit"] == 0
        checks.append({"what": f"edgelstm verify {family} fp32" + (" --against int8" if "int8" in d else "")
                       + " --device arm: passes, same verdict as x86", "ok": ok,
                       "detail": f"ARM: {verdict['arm']['line']} | x86: {verdict['x86']['line']}"
                       + ("" if same else f" | verdicts differ: ARM {verdict['arm']['verdict']} "
                                          f"x86 {verdict['x86']['verdict']}")})

    # bench: every recurrent model, streaming steps, on ARM; figures labelled as emulated
    models = [str(job / s.files["model"]) for s in specs if s.kind != "seq2seq"]
    j = out_dir / "arm-bench.json"
    p = sides.arm(["bench", *models, "--device", "arm", "--threads", t, "--runs", "30", "--warmup", "3",
                   "--no-floor", "--quiet", "--json", str(j)])
    detail = _last_line(p)
    if p.returncode == 0 and j.exists():
        report = json.loads(j.read_text())
        envd = report.setdefault("environment", {})
        envd["machine"] = f"EMULATED arm64 (qemu {sides.env.cpu})"
        envd["emulated"] = True
        envd["note"] = "qemu user-mode emulation on x86_64: latencies say nothing about a real ARM board"
        dst = Path(__file__).resolve().parent / "results" / "bench_arm_emulated.json"
        tmp = dst.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(dst)
        n = len(report.get("results", []))
        detail = f"{n} cases timed under emulation -> benchmarks/arm/results/{dst.name} (labelled EMULATED)"
    checks.append({"what": "edgelstm bench --device arm (ARM, emulated figures)", "ok": p.returncode == 0,
                   "detail": detail})
    return checks


def _verdict(json_path: Path):
    """(passed, sorted failed check names) from a verify JSON file; None when there is none."""
    if not json_path.exists():
        return None
    d = json.loads(json_path.read_text())
    checks = d.get("checks") or d.get("results") or []
    # the candidate's name carries the device (ort:cpu[...] / ort:arm[...]): compared without it
    failed = sorted(f"{c.get('check')}/{c.get('output', '')}/{c.get('case', '')}"
                    for c in checks if isinstance(c, dict) and c.get("passed") is False)
    return [bool(d.get("passed")), failed]


def _seq2seq_texts(inputs_npz: Path, encoder: Path) -> list[str]:
    """The job's source token ids as strings (the manifest's vocabulary), for ``--text``."""
    from models_x86 import read_manifest
    vocab = (read_manifest(encoder) or {}).get("vocab") or []
    z = np.load(inputs_npz)
    texts = []
    for row, n in zip(z["src"], z["src_lengths"]):
        toks = [vocab[int(i)] for i in row[:n]]
        texts.append("".join(toks) if all(len(t) == 1 for t in toks) else " ".join(toks))
    return texts


def _texts(result: dict):
    for k in ("tokens", "texts", "outputs"):
        if k in result:
            return result[k]
    return result
