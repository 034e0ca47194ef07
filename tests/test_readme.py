"""README.md runs as written: its shell and Python blocks, in order, in one scratch directory.

A block directly preceded by ``<!-- readme: skip (REASON) -->`` is not run (the reason must be
given). Every other fenced block must be ``sh`` or ``python``. Shell blocks run with ``bash -e``
and this venv's ``bin`` first on PATH (what ``. .venv/bin/activate`` gives); Python blocks run with
this interpreter. The commands are the README's; only sizes change, through :data:`REWRITES`, so
the whole README runs in about a minute on a small machine.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SKIP = re.compile(r"^<!-- readme: skip \((?P<reason>[^)]+)\) -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")

# The rewrite table: (README text, what the test runs instead). Sizes and run lengths only.
REWRITES = [
    ("--hidden 64 ", "--hidden 8 --epochs 1 "),                # one epoch of a tiny model: seconds
    ("edgelstm verify ", "edgelstm verify --steps 100 --data-limit 32 "),   # drift 100 steps, 32 sequences
    ("edgelstm bench ", "edgelstm bench --runs 5 --warmup 1 --no-floor "),  # a few timed calls
    ("nn.LSTM(8, 32, ", "nn.LSTM(8, 4, "),                     # the user-model export example
    ("nn.Linear(32, 4)", "nn.Linear(4, 4)"),
]


@dataclass
class Block:
    line: int        # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, for a skipped block


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.match(prev.strip())
        blocks.append(Block(i + 1, m["lang"], "\n".join(lines[i + 1:j]) + "\n", skip["reason"] if skip else None))
        i = j + 1
    return blocks


def rewrite(code: str) -> str:
    for old, new in REWRITES:
        code = code.replace(old, new)
    return code


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_blocks_are_tagged_and_rewrites_apply():
    assert {b.lang for b in BLOCKS} <= {"sh", "python"}, [(b.line, b.lang) for b in BLOCKS]
    run = "".join(b.code for b in BLOCKS if b.skip is None)
    unused = [old for old, _ in REWRITES if old not in run]
    assert not unused, f"rewrite entries that match nothing in README.md: {unused}"
    assert sum(b.skip is None for b in BLOCKS) >= 4  # the pipeline, the user export, the runtime, the apps


def test_readme_runs_in_order(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    env.pop("EDGELSTM_DEBUG", None)
    for block in BLOCKS:
        if block.skip is not None:
            continue
        code = rewrite(block.code)
        cmd = ["bash", "-e", "-o", "pipefail", "-c", code] if block.lang == "sh" else [sys.executable, "-c", code]
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"README.md line {block.line} ({block.lang}) failed:\n{code}\n{r.stdout[-3000:]}" \
                                  f"\n{r.stderr[-3000:]}"
    # what the blocks promise to leave behind
    for name in ("lstm.onnx", "lstm.int8.onnx", "data.npz", "verify.json", "drift.png", "out.json", "laptop.json",
                 "devices.md", "devices.png", "my.onnx", "frames.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
