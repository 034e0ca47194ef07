"""The emulated ARM64 device: a Debian arm64 userland run by qemu user-mode emulation.

Built once and cached outside the repository (``$EDGELSTM_ARM_CACHE``, default
``/var/cache/edgelstm-arm`` as root, else ``~/.cache/edgelstm-arm``):

* ``rootfs-<suite>-arm64/``  Debian minbase + python3 (unpacked on the host, no emulation);
* ``wheels-cp<XY>-aarch64/`` aarch64 wheels of onnxruntime, numpy, click and their deps;
* ``rootfs/.../opt/deps-<key>/`` those wheels installed for the guest (``pip --target``).

Every run installs the freshly built edgelstm wheel (``--no-deps``) into its own guest folder
and checks that its declared dependencies are satisfied by what is installed, so the guest has
what ``pip install edgelstm`` gives a device: the runtime, the CLI, numpy, onnxruntime, click,
and no torch.

Guest paths: qemu ``-L ROOTFS`` resolves an absolute path inside the rootfs when it exists
there, else on the host. System files (``/usr/bin/python3.11``, ``/opt/deps-*``, the installed
wheel) are named by guest paths; job files (models, inputs, outputs) by their host paths, because
a file the guest *creates* under a guest path would otherwise be created on the host. Job folders
live under ``<rootfs>/edgelstm-arm`` and are removed after the run.

Pitfalls handled here (measured, see benchmarks/arm/README.md):

* onnxruntime's CPU detection (cpuinfo) misreads the host's x86 ``/proc/cpuinfo``: an ARM
  description of the emulated core is written into ``<rootfs>/proc/cpuinfo`` and ``/sys``;
* qemu's default ``max`` core (SVE2 + SME) gives wrong int8 results with onnxruntime 1.32
  (see docs/ARM.md); the default core is ``neoverse-n1`` (Graviton2, Ampere Altra).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("edgelstm.arm")

GUEST_DIR = "/edgelstm-arm"  # where guest-visible work files live, as the guest names it
DEFAULT_CPU = "neoverse-n1"
DEFAULT_SUITE = "bookworm"  # Debian 12: python3.11, glibc 2.36 (manylinux_2_28 wheels run)


class ArmSetupError(RuntimeError):
    """The emulated environment could not be built or started (exit code 2 of test_arm.sh)."""


class ArmUnavailable(RuntimeError):
    """This machine cannot emulate ARM at all: the caller prints one loud SKIP line."""


def default_cache() -> Path:
    env = os.environ.get("EDGELSTM_ARM_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/edgelstm-arm")
    return Path.home() / ".cache" / "edgelstm-arm"


def _run(cmd: list[str], *, what: str, log_file: Path | None = None, env: dict | None = None,
         timeout: float = 900) -> subprocess.CompletedProcess:
    log.debug("$ %s", " ".join(map(str, cmd)))
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if log_file is not None:
        log_file.write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
        raise ArmSetupError(f"{what} | failed with exit code {p.returncode}\n{tail}")
    return p


def qemu_binary() -> str:
    """``$EDGELSTM_ARM_QEMU`` (e.g. a newer static qemu-aarch64) or Debian's qemu-aarch64-static."""
    return os.environ.get("EDGELSTM_ARM_QEMU") or "qemu-aarch64-static"


def qemu_version() -> str:
    p = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True)
    return p.stdout.splitlines()[0] if p.returncode == 0 and p.stdout else "unknown"


def check_host() -> None:
    """Raise ArmUnavailable naming the missing piece when this host cannot emulate ARM64."""
    import platform
    if platform.machine() not in ("x86_64", "AMD64"):
        raise ArmUnavailable(f"host is {platform.machine()}, this harness emulates ARM64 on x86_64")
    have_qemu = shutil.which(qemu_binary()) is not None
    have_deboot = shutil.which("debootstrap") is not None
    if have_qemu and have_deboot:
        return
    if os.geteuid() != 0:
        raise ArmUnavailable("qemu-aarch64-static/debootstrap are missing and we are not root to apt-get them")
    if shutil.which("apt-get") is None:
        raise ArmUnavailable("qemu-aarch64-static/debootstrap are missing and there is no apt-get")
    log.info("installing qemu-user-static debootstrap debian-archive-keyring with apt-get")
    try:
        _run(["apt-get", "update", "-qq"], what="apt-get update", timeout=600)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-user-static",
              "debootstrap", "debian-archive-keyring"], what="apt-get install qemu-user-static", env=env,
             timeout=900)
    except (ArmSetupError, subprocess.TimeoutExpired) as e:
        raise ArmUnavailable(f"cannot install qemu-user-static/debootstrap (no package access?): {e}") from None


def _debian_mirror() -> str:
    if os.environ.get("EDGELSTM_ARM_MIRROR"):
        return os.environ["EDGELSTM_ARM_MIRROR"]
    text = ""
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file():
            text += p.read_text(errors="replace") + "\n"
    for m in re.finditer(r"(?:^URIs:|^deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, re.M):
        uri = m.group(1).rstrip("/")
        if uri.endswith("/debian"):
            return uri
    return "http://deb.debian.org/debian"


@dataclasses.dataclass
class ArmEnv:
    cache: Path
    cpu: str = DEFAULT_CPU
    suite: str = DEFAULT_SUITE
    ncpu: int = 2
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def rootfs(self) -> Path:
        return self.cache / f"rootfs-{self.suite}-arm64"

    def host_path(self, guest_path: str) -> Path:
        return self.rootfs / guest_path.lstrip("/")

    # ------------------------------------------------------------------ rootfs
    def ensure_rootfs(self) -> None:
        t0 = time.perf_counter()
        r = self.rootfs
        stamp = r / ".edgelstm-rootfs-ok"
        if stamp.exists():
            log.info("rootfs: cached %s", r)
        else:
            mirror = _debian_mirror()
            log.info("rootfs: debootstrap --foreign %s arm64 from %s (download + unpack, no emulation)",
                     self.suite, mirror)
            if r.exists():
                shutil.rmtree(r)
            self.cache.mkdir(parents=True, exist_ok=True)
            try:
                _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
                      "--include=python3,libstdc++6", self.suite, r, mirror],
                     what="debootstrap arm64", log_file=self.cache / "debootstrap.log", timeout=1200)
            except (ArmSetupError, subprocess.TimeoutExpired) as e:
                text = (self.cache / "debootstrap.log").read_text(errors="replace") if (self.cache / "debootstrap.log").exists() else ""
                if re.search(r"Failed getting release file|Temporary failure resolving|Could not resolve|"
                             r"Connection (refused|timed out)|Network is unreachable", text):
                    raise ArmUnavailable(f"no package access: debootstrap cannot reach {mirror} "
                                         f"(log: {self.cache / 'debootstrap.log'})") from None
                raise ArmSetupError(str(e)) from None
            # Stage 1 unpacks only the 'required' set. Unpack the rest (python3...) with the
            # host's dpkg-deb: maintainer scripts are not needed to run python.
            debpaths = dict(line.split(None, 1) for line in (r / "debootstrap/debpaths").read_text().splitlines()
                            if line.strip())
            for pkg in (r / "debootstrap/base").read_text().split():
                deb = r / debpaths[pkg].strip().lstrip("/")
                tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
                subprocess.run(["tar", "-x", "-C", str(r), "--keep-directory-symlink"], stdin=tar.stdout,
                               check=True)
                if tar.wait() != 0:
                    raise ArmSetupError(f"dpkg-deb {deb} | cannot unpack")
            for deb in (r / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            if (r / "proc").is_symlink():
                (r / "proc").unlink()
            for d in ("proc", "sys/devices/system/cpu", GUEST_DIR.lstrip("/"), "opt"):
                (r / d).mkdir(parents=True, exist_ok=True)
            stamp.touch()
        if not (r / "usr/bin/python3").exists():
            raise ArmSetupError(f"{r} | rootfs has no /usr/bin/python3; delete it to rebuild")
        self.timings["rootfs_s"] = time.perf_counter() - t0

    @property
    def guest_python(self) -> str:
        target = os.readlink(self.rootfs / "usr/bin/python3")  # "python3.11"
        return f"/usr/bin/{Path(target).name}"

    @property
    def py_version(self) -> str:
        return Path(self.guest_python).name.removeprefix("python")

    @property
    def glibc_minor(self) -> int:
        """glibc 2.<minor> of the rootfs (from debootstrap's package list): the manylinux tags it runs."""
        m = re.search(r"libc6_2\.(\d+)", (self.rootfs / "debootstrap/debpaths").read_text())
        if m is None:
            raise ArmSetupError(f"{self.rootfs} | no libc6 in debootstrap/debpaths; delete the rootfs to rebuild")
        return int(m.group(1))

    def pip_platform_args(self) -> list[str]:
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.py_version,
                "--platform", "manylinux2014_aarch64"]
        for minor in range(17, self.glibc_minor + 1):
            args += ["--platform", f"manylinux_2_{minor}_aarch64"]
        return args

    # ------------------------------------------------------------------ guest cpu description
    def ensure_cpuinfo(self) -> None:
        """Describe the emulated core to the guest (cpuinfo lib in onnxruntime reads these)."""
        r = self.rootfs
        stamp = r / "proc" / f".cpuinfo-{self.cpu}-{self.ncpu}"
        if stamp.exists() and (r / "proc/cpuinfo").exists():
            return
        probe = self.host_path(f"{GUEST_DIR}/cpuprobe.py")
        shutil.copy(Path(__file__).with_name("cpuprobe.py"), probe)
        p = self.run_guest([self.guest_python, f"{GUEST_DIR}/cpuprobe.py", str(self.ncpu)], timeout=120)
        if p.returncode != 0:
            raise ArmSetupError(f"cpu probe under QEMU_CPU={self.cpu} | failed: {p.stderr.strip()[-500:]}")
        for old in (r / "proc").glob(".cpuinfo-*"):
            old.unlink()
        (r / "proc/cpuinfo").write_text(p.stdout)
        cpu_dir = r / "sys/devices/system/cpu"
        for f in ("possible", "present", "online"):
            (cpu_dir / f).write_text(f"0-{self.ncpu - 1}\n")
        stamp.touch()

    # ------------------------------------------------------------------ wheels
    def ensure_deps(self, host_python: str, requirements: list[str]) -> str:
        """Install ``requirements`` (pinned) for the guest; return the guest folder holding them."""
        t0 = time.perf_counter()
        key = hashlib.sha256(" ".join(sorted(requirements)).encode()).hexdigest()[:12]
        guest_site = f"/opt/deps-{key}"
        site = self.host_path(guest_site)
        wheels = self.cache / f"wheels-cp{self.py_version.replace('.', '')}-aarch64"
        if (site / ".ok").exists():
            log.info("guest deps: cached %s (%s)", guest_site, " ".join(requirements))
        else:
            wheels.mkdir(parents=True, exist_ok=True)
            log.info("guest deps: pip download %s for aarch64 cp%s", " ".join(requirements), self.py_version)
            try:
                _run([host_python, "-m", "pip", "download", "-q", *self.pip_platform_args(), "-d", wheels,
                      *requirements], what="pip download aarch64 wheels", timeout=900)
            except (ArmSetupError, subprocess.TimeoutExpired) as e:
                if re.search(r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
                             r"Network is unreachable|timed out", str(e)):
                    raise ArmUnavailable(f"no package access: cannot download aarch64 wheels ({e})") from None
                raise
            if site.exists():
                shutil.rmtree(site)
            _run([host_python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
                  *self.pip_platform_args(), "--target", site, *requirements],
                 what="pip install --target (aarch64 wheels)", timeout=900)
            (site / ".ok").write_text("\n".join(requirements) + "\n")
        self.timings["deps_s"] = time.perf_counter() - t0
        return guest_site

    def install_wheel(self, host_python: str, wheel: Path, run_id: str) -> str:
        """Install the edgelstm wheel (no deps) into a fresh guest folder; return its guest path."""
        guest_site = f"{GUEST_DIR}/{run_id}/site"
        site = self.host_path(guest_site)
        if site.exists():
            shutil.rmtree(site)
        _run([host_python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *self.pip_platform_args(),
              "--target", site, wheel], what=f"pip install {wheel.name} for the guest")
        # pip --target writes console scripts with the HOST python's shebang: point it at the guest's.
        script = site / "bin" / "edgelstm"
        if script.exists():
            lines = script.read_text().splitlines(keepends=True)
            lines[0] = f"#!{self.guest_python}\n"
            script.write_text("".join(lines))
        return guest_site

    # ------------------------------------------------------------------ running
    def run_guest(self, argv: list[str], *, env: dict | None = None, timeout: float = 900,
                  cpu: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` (guest paths) under qemu-aarch64 with the rootfs as ``/``; a clean env."""
        genv = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": cpu or self.cpu}
        genv.update(env or {})
        cmd = [qemu_binary(), "-L", str(self.rootfs), str(self.host_path(argv[0])), *argv[1:]]
        log.debug("guest$ %s", " ".join(argv))
        return subprocess.run(cmd, capture_output=True, text=True, env=genv, timeout=timeout)


def build_wheel(repo: Path, out_dir: Path, host_python: str) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the tracked + untracked-not-ignored files.

    Building from a copy leaves no build/ or egg-info in the working tree that other
    processes use, and packs exactly what a clean clone would.
    """
    files = subprocess.run(["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    with tempfile.TemporaryDirectory(prefix="edgelstm-src-") as tmp:
        src = Path(tmp) / "src"
        for f in filter(None, files):
            s = repo / f
            if s.is_file():
                d = src / f
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, d)
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("edgelstm-*.whl"):
            old.unlink()
        _run([host_python, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out_dir, src],
             what="pip wheel --no-deps (edgelstm)", timeout=600)
    wheels = sorted(out_dir.glob("edgelstm-*.whl"))
    if len(wheels) != 1:
        raise ArmSetupError(f"{out_dir} | expected one edgelstm wheel, found {[w.name for w in wheels]}")
    return wheels[0]


if __name__ == "__main__":  # manual use: python armenv.py -> build/refresh the cached env
    logging.basicConfig(level=logging.INFO, format="[arm %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    check_host()
    env = ArmEnv(default_cache())
    env.ensure_rootfs()
    env.ensure_cpuinfo()
    site = env.ensure_deps(sys.executable, ["onnxruntime==1.32.0", "numpy==2.4.6", "click==8.5.1"])
    p = env.run_guest([env.guest_python, "-c", "import platform, onnxruntime, numpy; "
                       "print(platform.machine(), onnxruntime.__version__, numpy.__version__, "
                       "onnxruntime.get_available_providers())"], env={"PYTHONPATH": site})
    sys.stdout.write(p.stdout + p.stderr)
    sys.stdout.write(f"{env.timings}\n")
