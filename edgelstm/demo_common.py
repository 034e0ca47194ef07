"""What every demo stage after training shares: which rows a stage works on, and how a failure
in one row is recorded without stopping the demo.

Imports the standard library and ``edgelstm.errors`` only. Imported by
:mod:`edgelstm.demo_stages` and :mod:`edgelstm.demo_verify` (which import nothing of each other's
but through here, so there is no cycle).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from edgelstm.errors import EdgeLSTMError

log = logging.getLogger(__name__)


def stage_rows(ctx, needs: str | None = None) -> Iterator[dict[str, Any]]:
    """The main rows (one model per family) that have ``needs`` and no error from an earlier stage."""
    for row in ctx.main_rows():
        if needs is not None and needs not in row:
            continue
        if any(k.startswith("error:") for k in row):
            continue
        yield row


def guard(row: dict, stage: str, fn: Callable[[], None]) -> None:
    """Run ``fn``; an :class:`EdgeLSTMError` is recorded as ``row["error:<stage>"]`` and the demo
    goes on (the CLI exits non-zero at the end)."""
    try:
        fn()
    except EdgeLSTMError as e:
        log.error("%s %s/%s failed: %s", stage, row["family"], row["dataset"], e)
        row[f"error:{stage}"] = f"{type(e).__name__}: {e}"
