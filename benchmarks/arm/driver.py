"""``make test-arm``: run every family's exported fp32 and int8 models on an emulated ARM64 device.

1. builds the edgelstm wheel (``pip wheel --no-deps``) from the working tree;
2. installs it with its aarch64 dependencies (numpy, onnxruntime, click; no torch) into a cached
   Debian arm64 userland run by qemu user-mode emulation (see armenv.py);
3. makes the models on x86 (train tiny models, ``edgelstm export``, ``edgelstm quantize``; or
   takes a directory of exported models), computes the x86 references with onnxruntime and a
   fixed thread count, runs the same models on the ARM side through the torch-free runtime and
   the ``edgelstm`` CLI, whole sequences and streaming;
4. prints one table, family x precision: max |ARM - x86|, streaming parity on ARM, pass/fail.

Exit status: 0 all pass, 1 a comparison failed, 2 set-up error, 0 with a loud SKIPPED line when
this machine cannot emulate ARM (3 instead when EDGELSTM_ARM_REQUIRE=1).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import armenv  # noqa: E402
import cli_checks as cli_checks_mod  # noqa: E402
import compare  # noqa: E402
import models_x86  # noqa: E402
from pipeline import PipelineError  # noqa: E402

log = logging.getLogger("edgelstm.arm")


def pinned_versions() -> dict[str, str]:
    """The versions the x86 side runs (the guest gets the same ones)."""
    from importlib.metadata import version
    return {name: version(name) for name in ("onnxruntime", "numpy", "click")}


def run_side(cmd: list[str], *, what: str, env_runner=None, env: dict | None = None, timeout: float = 900):
    """Run guest_check on one side; return (env_info, {model: info})."""
    t0 = time.perf_counter()
    if env_runner is None:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    else:
        p = env_runner(cmd, env=env, timeout=timeout)
    if p.returncode != 0:
        raise armenv.ArmSetupError(f"{what} | guest_check failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    info, results = {}, {}
    for line in p.stdout.splitlines():
        if line.startswith("ENV_JSON "):
            info = json.loads(line[len("ENV_JSON "):])
        elif line.startswith("RESULT_JSON "):
            r = json.loads(line[len("RESULT_JSON "):])
            results[r["name"]] = r
    info["wall_s"] = round(time.perf_counter() - t0, 2)
    return info, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=("pipeline", "torch", "dir"), default=os.environ.get("EDGELSTM_ARM_SOURCE", "pipeline"),
                    help="pipeline: train+export+quantize with the edgelstm CLI (default); torch: tiny "
                         "torch.onnx.export models (environment smoke test); dir: --models DIR")
    ap.add_argument("--models", type=Path, help="directory of exported .onnx models (with --source dir)")
    ap.add_argument("--cpu", default=os.environ.get("QEMU_CPU", armenv.DEFAULT_CPU), help="emulated core (QEMU_CPU)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("EDGELSTM_ARM_THREADS", "1")),
                    help="intra-op threads, the same on both sides")
    ap.add_argument("--cache", type=Path, default=armenv.default_cache())
    ap.add_argument("--json", type=Path, default=HERE / "results" / "arm_check.json")
    ap.add_argument("--keep", action="store_true", help="keep the job folder in the rootfs")
    ap.add_argument("--no-cli", action="store_true", help="skip the edgelstm CLI stage (run/verify/bench)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="[arm %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        log.info("   %s: %.1f s", name, timings[name])

    def skipped(e: Exception) -> int:
        bar = "!" * 100
        click.echo(f"{bar}\n!!! test-arm SKIPPED (NOT a pass): this machine cannot emulate ARM64: {e}\n{bar}")
        return 3 if os.environ.get("EDGELSTM_ARM_REQUIRE") == "1" else 0

    try:
        armenv.check_host()
    except armenv.ArmUnavailable as e:
        return skipped(e)

    # one run at a time per cache: runs share the rootfs and its /proc/cpuinfo (per emulated core)
    import fcntl
    a.cache.mkdir(parents=True, exist_ok=True)
    lock = open(a.cache / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("waiting for another test-arm run using %s", a.cache)
        fcntl.flock(lock, fcntl.LOCK_EX)

    host_py = sys.executable
    env = armenv.ArmEnv(a.cache, cpu=a.cpu, ncpu=os.cpu_count() or 2)
    if a.cpu == "max" or a.cpu.startswith("max,"):
        log.warning("QEMU_CPU=%s: SVE/SME core, see docs/ARM.md: int8 results are expected to be wrong "
                    "unless sme=off", a.cpu)
    run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    job_guest = f"{armenv.GUEST_DIR}/{run_id}"
    job = env.host_path(job_guest)
    try:
        t0 = time.perf_counter()
        env.ensure_rootfs()
        env.ensure_cpuinfo()
        versions = pinned_versions()
        deps_site = env.ensure_deps(host_py, [f"{k}=={v}" for k, v in versions.items()])
        # `edgelstm verify` reads graphs with onnx, which `pip install edgelstm` does not bring:
        # a second folder with onnx added, used for the verify step only (run/bench go without it)
        from importlib.metadata import version as _version
        verify_site = None if a.no_cli else env.ensure_deps(
            host_py, [f"{k}=={v}" for k, v in versions.items()] + [f"onnx=={_version('onnx')}"])
        stage("arm environment (cached after the first run)", t0)

        t0 = time.perf_counter()
        wheel = armenv.build_wheel(REPO, a.cache / "dist", host_py)
        pkg_site = env.install_wheel(host_py, wheel, run_id)
        stage(f"build + install {wheel.name}", t0)
        guest_env = {"PYTHONPATH": f"{pkg_site}:{deps_site}", "PYTHONDONTWRITEBYTECODE": "1",
                     "OMP_NUM_THREADS": str(a.threads)}

        t0 = time.perf_counter()
        job.mkdir(parents=True, exist_ok=True)
        specs, make_errors = models_x86.make_models(a.source, job, models_dir=a.models, host_python=host_py, cache=a.cache)
        (job / "job.json").write_text(json.dumps({"models": [s.job_entry() for s in specs]}, indent=1))
        shutil.copy(HERE / "guest_check.py", job / "guest_check.py")
        stage(f"models on x86 ({a.source}): {len(specs)}", t0)

        t0 = time.perf_counter()
        x86_info, x86_res = run_side([host_py, str(job / "guest_check.py"), str(job / "job.json"), str(job / "x86"),
                                      "--threads", str(a.threads), "--device", "cpu"], what="x86 reference",
                                     env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
        stage("x86 references", t0)
        t0 = time.perf_counter()
        # Job files are named by their HOST path: qemu -L resolves a path inside the rootfs only
        # when it exists there, so a file the guest creates under a guest path would land on the host.
        arm_info, arm_res = run_side([env.guest_python, str(job / "guest_check.py"), str(job / "job.json"),
                                      str(job / "arm"), "--threads", str(a.threads), "--device", "arm"],
                                     what=f"ARM run (QEMU_CPU={a.cpu})", env_runner=env.run_guest, env=guest_env)
        stage(f"ARM runs under qemu ({a.cpu})", t0)

        rows = []
        for s in specs:
            key = compare.precision_key(s.precision)
            row = compare.Row(s.family, s.precision, parity_applicable=s.streamable)
            err = arm_res.get(s.name, {}).get("error") or x86_res.get(s.name, {}).get("error")
            if s.name not in arm_res:
                err = "no ARM result"
            if err:
                row.error = err
            else:
                ref = dict(np.load(job / "x86" / f"{s.name}.npz"))
                got = dict(np.load(job / "arm" / f"{s.name}.npz"))
                row.arm_vs_x86 = compare.compare_outputs(ref, got, compare.ARM_VS_X86[key])
                if s.streamable:
                    row.parity = compare.streaming_parity(got, compare.STREAM_PARITY[key])
            rows.append(row)

        t0 = time.perf_counter()
        sides = cli_checks_mod.Sides(env, host_py, pkg_site, guest_env, a.threads, verify_site=verify_site)
        cli_checks = [] if a.no_cli else cli_checks_mod.run_checks(sides, job, specs,
                                                                   {s.name: r for s, r in zip(specs, rows)})
        stage("edgelstm CLI on both sides (run, run --stream, verify, bench)", t0)
        for (family, precision), err in sorted(make_errors.items()):  # models the x86 pipeline could not make
            rows.append(compare.Row(family, precision, error=f"not made on x86: {err}"))
        order = {f: i for i, f in enumerate(("lstm", "peephole", "gru", "attention"))}
        rows.sort(key=lambda r: (order.get(r.family, 99), r.family, r.precision))
    except armenv.ArmUnavailable as e:  # e.g. no package access to build the environment
        return skipped(e)
    except (armenv.ArmSetupError, PipelineError, ValueError) as e:
        log.error("%s", e)
        click.echo(f"test-arm: ERROR (set-up): {str(e).splitlines()[0]}")
        return 2
    finally:
        if not a.keep and job.exists():
            shutil.rmtree(job, ignore_errors=True)

    table = compare.format_table(rows)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    ok = all(r.passed for r in rows) and all(c["ok"] for c in cli_checks) and rows
    click.echo()
    click.echo(f"ARM64 (emulated: qemu-aarch64 {a.cpu}, Debian {env.suite}, python {arm_info.get('python')}) vs "
          f"x86_64, onnxruntime {arm_info.get('onnxruntime')} / {x86_info.get('onnxruntime')}, "
          f"intra-op threads {a.threads} on both sides; torch importable on ARM: {arm_info.get('torch_importable')}")
    plan = arm_info.get("plan", {})
    click.echo(f"device='arm' on the ARM side: picks {plan.get('providers')} (primary {plan.get('primary')}, "
          f"fell back: {plan.get('fell_back')}, is_arm_machine: {plan.get('is_arm_machine')})"
          + (f" [{plan['error']}]" if "error" in plan else ""))
    try:  # the same device name on x86, for contrast: not an ARM machine -> falls back, with a warning
        import warnings

        from edgelstm.runtime.providers import plan_providers
        rt_log = logging.getLogger("edgelstm.runtime")
        level, rt_log.level = rt_log.level, logging.ERROR  # the fallback warning is expected here
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xplan = plan_providers("arm", fallback=True)
        finally:
            rt_log.setLevel(level)
        click.echo(f"device='arm' on x86 for contrast: providers {xplan.providers}, fell back: {xplan.fell_back} "
              f"(with fallback=False / --no-fallback it raises ProviderUnavailableError)")
    except ImportError as e:
        click.echo(f"device='arm' on x86: edgelstm.runtime not importable ({e})")
    click.echo(table)
    for r in rows:
        for f in r.failures():
            click.echo(f"  FAIL {r.family}/{r.precision}: {f}")
    for c in cli_checks:
        click.echo(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['what']}: {c['detail']}")
    click.echo("timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    result = {"ok": bool(ok), "qemu_cpu": a.cpu, "threads": a.threads, "source": a.source, "x86": x86_info,
              "arm": arm_info, "rows": [r.to_dict() for r in rows], "cli": cli_checks, "timings": timings,
              "tolerances": {"arm_vs_x86": {k: vars(v) for k, v in compare.ARM_VS_X86.items()},
                             "stream_parity": {k: {**vars(v), "rel_atol": str(v.rel_atol)} for k, v in compare.STREAM_PARITY.items()}}}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, a.json)
    click.echo(f"test-arm: {'PASS' if ok else 'FAIL'} ({sum(r.passed for r in rows)}/{len(rows)} family x precision "
          f"rows; details {a.json.relative_to(REPO) if a.json.is_relative_to(REPO) else a.json})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
