"""Output files: nothing is ever half-written, and nothing but a regular file is ever replaced.
Standard library only.

What :func:`atomic_path` does with what is already at the output path:

* nothing, or a regular file: the data goes to a temp file beside it, renamed onto the path only
  when the write succeeded (the old file stays whole until then);
* a symlink: it is followed; the link's final target is written the same way (temp file in the
  target's folder, renamed onto the target), so the link keeps pointing at the new data;
* a character device (``/dev/null``, ``/dev/stdout``) or a named pipe (FIFO): written directly,
  like a shell redirection: there is nothing to replace and a rename would destroy the node;
* a directory, a block device or a socket: refused with :class:`~edgelstm.errors.UsageError`.

Files get the mode the user's umask gives (0644 under umask 022), not ``mkstemp``'s 0600, and
:func:`fix_dir_mode` gives directories made by ``mkdtemp`` theirs (0755 under umask 022).

Temp files are named ``.NAME.edgelstm-tmp.PID.RANDOM``: removed when the block fails, on
Ctrl-C, and on SIGTERM (a handler is installed while a temp file exists, if SIGTERM has its
default action); after SIGKILL a later write to the same path removes the ones whose process
is gone.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from edgelstm.errors import UsageError

TMP_MARK = ".edgelstm-tmp."
_live: set[str] = set()  # temp files of this process, removed on SIGTERM
_lock = threading.Lock()
_previous_handler = None


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _lock:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def fix_dir_mode(path: str | os.PathLike) -> None:
    """Give a directory made by ``tempfile.mkdtemp`` (always 0700) the umask's mode."""
    os.chmod(path, dir_mode())


def _on_sigterm(signum, frame):  # pragma: no cover - exercised in a subprocess by the tests
    for tmp in list(_live):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    signal.signal(signal.SIGTERM, _previous_handler if callable(_previous_handler) else signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _register(tmp: str) -> None:
    global _previous_handler
    with _lock:
        _live.add(tmp)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            _previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)


def _unregister(tmp: str) -> None:
    with _lock:
        _live.discard(tmp)
        if not _live and threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temp files of earlier writes to ``path`` whose process is gone (killed mid-write)."""
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        for tmp in path.parent.glob(f".{glob_escape(path.name)}{TMP_MARK}*"):
            pid_text = tmp.name[len(f".{path.name}{TMP_MARK}"):].split(".", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def resolve_output(path: str | os.PathLike) -> tuple[Path, str]:
    """Where an output to ``path`` goes and how: ``(target, "replace" | "direct")``. Symlinks are
    followed; a directory, block device or socket raises :class:`UsageError`."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = target.stat()
    except FileNotFoundError:
        return target, "replace"
    except NotADirectoryError:
        raise UsageError(str(path), "cannot write: a part of the path is a file, not a folder",
                         expected="a path in a folder", got=str(path)) from None
    if stat.S_ISREG(st.st_mode):
        return target, "replace"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return target, "direct"
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    raise UsageError(str(path), f"output path is {kind}; only regular files are replaced",
                     expected="a file path, a character device or a FIFO", got=kind)


@contextlib.contextmanager
def _named_oserror(path: str | os.PathLike) -> Iterator[None]:
    """An OSError without a file name (a write that hit a full disk) names the output path."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the path to write: a temp file beside ``path`` (followed if a symlink), renamed onto it
    only if the block succeeds; or ``path`` itself for a character device or FIFO (see the module
    docstring)."""
    target, how = resolve_output(path)
    if how == "direct":
        with _named_oserror(path):
            yield target
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TMP_MARK}{os.getpid()}.", suffix="", dir=target.parent)
    except PermissionError:
        if target != Path(path) and target.is_file() and os.access(target, os.W_OK):
            # a link to a writable file in a folder we cannot write: write the file in place
            yield target
            return
        raise
    os.close(fd)
    _register(tmp)
    tmp_path = Path(tmp)
    try:
        with _named_oserror(path):
            yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        _unregister(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def json_safe(v: Any) -> Any:
    """``v`` with non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"`` and NumPy
    scalars as Python numbers: strict JSON (``allow_nan=False``) that every parser reads."""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # a NumPy scalar
        return json_safe(v.item())
    return v
