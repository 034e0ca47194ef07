"""One unit for sizes everywhere: binary prefixes (B, KiB, MiB, GiB). Standard library only, so
the runtime, the exporters and the CLI share it."""
from __future__ import annotations


def format_size(n: float) -> str:
    """``82144`` -> ``"80.2 KiB"``; bytes below 1 KiB are shown whole (``"512 B"``)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
