"""Hostile inputs, part 2: output paths. Writing an output never destroys what is at the path:
a symlink is followed (its target written), a FIFO or character device is written directly and
stays what it was, a directory is refused in one line; files get the umask's mode; temp files
vanish on SIGINT / SIGTERM and stale ones (a killed writer) are removed by the next write.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, build_recurrent, save  # noqa: E402

from edgelstm.cli import main  # noqa: E402
from edgelstm.fileio import TMP_MARK, atomic_path, remove_stale_temps, write_text_atomic  # noqa: E402


def cli(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-io")
    save(build_recurrent(RecurrentSpec(labels=["a", "b", "c"])), d / "m.onnx")
    np.savez(d / "x.npz", x=np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32))
    return d


def _run_json(capsys, model: Path, out: Path) -> tuple[int, str, str]:
    return cli(capsys, "run", model / "m.onnx", "--input", model / "x.npz", "--json", out)


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TMP_MARK in p.name]


def test_symlink_is_followed_and_kept(capsys, model, tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, err = _run_json(capsys, model, link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["labels"] and not _temps(tmp_path / "real") and not _temps(tmp_path)


def test_dangling_symlink_creates_its_target(capsys, model, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "new.json")
    assert _run_json(capsys, model, link)[0] == 0
    assert link.is_symlink() and json.loads((tmp_path / "new.json").read_text())["labels"]


def test_fifo_is_written_directly(capsys, model, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, _, err = _run_json(capsys, model, fifo)
    reader.join(timeout=30)
    assert code == 0, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and json.loads(got[0])["labels"]


def test_character_device_is_written_directly(capsys, model, tmp_path):
    dev = tmp_path / "null"
    try:
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the /dev/null device
    except PermissionError:
        pytest.skip("os.mknod of a character device needs root (CAP_MKNOD)")
    code, _, err = _run_json(capsys, model, dev)
    assert code == 0, err
    assert stat.S_ISCHR(dev.lstat().st_mode) and os.major(dev.lstat().st_rdev) == 1 and not _temps(tmp_path)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_full_device_fails_in_one_line_and_stays_a_device(capsys, model):
    """The node the hostile pass saw replaced by a regular file (as root): now written directly,
    so a full disk is one line (exit 2) and /dev/full is still a character device."""
    code, _, err = _run_json(capsys, model, Path("/dev/full"))
    assert code == 2 and err.count("\n") == 1 and "error: /dev/full | No space left on device" in err, err
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_socket_path_is_refused_in_one_line(capsys, model, tmp_path):
    import socket

    path = tmp_path / "out.json"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        code, _, err = _run_json(capsys, model, path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"error: {path} | output path is a socket; only regular files are replaced" in err, err
    assert stat.S_ISSOCK(path.lstat().st_mode)


def test_directory_is_never_replaced(tmp_path):
    from edgelstm.errors import UsageError

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("x")
    with pytest.raises(UsageError, match=r"d \| output path is a directory; only regular files are replaced"):
        write_text_atomic(tmp_path / "d", "{}")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    with pytest.raises(UsageError, match=r"link \| output path is a directory"):
        write_text_atomic(tmp_path / "link", "{}")
    assert (tmp_path / "d" / "keep").read_text() == "x"


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _writes(model: Path, out: Path) -> dict[str, list]:
    """Each writing command -> (argv, the files it writes)."""
    m, x = model / "m.onnx", model / "x.npz"
    return {
        "run": (["run", m, "--input", x, "--json", out / "r.json", "--out", out / "r.npz"], ["r.json", "r.npz"]),
        "inspect": (["inspect", m, "--device", "cpu", "--json", out / "i.json"], ["i.json"]),
        "bench": (["bench", m, "--runs", "2", "--warmup", "0", "--no-floor", "--quiet", "--json", out / "b.json",
                   "--csv", out / "b.csv"], ["b.json", "b.csv"]),
        "quantize": (["quantize", m, "-o", out / "q.onnx", "--mode", "int8-dynamic", "--json", out / "q.json"],
                     ["q.onnx", "q.json"]),
        "verify": (["verify", m, "--steps", "0", "-q", "--oracles", "numpy", "--json", out / "v.json"], ["v.json"]),
    }


@pytest.mark.parametrize("command", ["run", "inspect", "bench", "quantize", "verify", "bench-report"])
def test_outputs_get_the_umask_mode(capsys, umask022, model, tmp_path, command):
    if command == "bench-report":
        assert cli(capsys, *_writes(model, tmp_path)["bench"][0])[0] == 0
        args, files = ["bench-report", tmp_path / "b.json", "--out", tmp_path / "rep.md"], ["rep.md"]
    else:
        args, files = _writes(model, tmp_path)[command]
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    for f in files:
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o644, f


def test_run_directory_and_export_get_the_umask_mode(umask022, tmp_path, capsys):
    from tiny import TINY, make_tiny

    from edgelstm.checkpoint import RunConfig, save_run

    run = save_run(tmp_path / "run", make_tiny("gru-1x4"), RunConfig.for_model(TINY["gru-1x4"]), {})
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in run.iterdir()} == {0o644}
    code, _, err = cli(capsys, "export", run, "-o", tmp_path / "e.onnx", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert {stat.S_IMODE((tmp_path / f).stat().st_mode) for f in ("e.onnx", "e.json")} == {0o644}


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_temp_files_are_removed_on_signals(tmp_path, how):
    out = tmp_path / "out.json"
    code = (f"import os, signal\nfrom edgelstm.fileio import atomic_path\n"
            f"with atomic_path({str(out)!r}) as tmp:\n"
            f"    tmp.write_bytes(b'half')\n"
            f"    os.kill(os.getpid(), signal.{how})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == -getattr(signal, how), r.stderr  # killed by the signal, after the cleanup
    assert not out.exists() and _temps(tmp_path) == []


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.json{TMP_MARK}{dead}.abc123"
    alive = tmp_path / f".out.json{TMP_MARK}{os.getppid()}.def456"  # a running process: left alone
    other = tmp_path / f".other.json{TMP_MARK}{dead}.ghi789"          # another output's temp: left alone
    for p in (stale, alive, other):
        p.write_text("half")
    write_text_atomic(tmp_path / "out.json", "{}")
    assert not stale.exists() and alive.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "other.json") == [other]


def test_failed_write_leaves_the_old_file(tmp_path):
    out = tmp_path / "out.json"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert out.read_text() == "old" and _temps(tmp_path) == []
