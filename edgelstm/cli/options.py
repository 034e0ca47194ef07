"""Click options shared by several commands, each a small decorator, and the one ``--json``
convention: ``--json FILE`` writes the command's result as JSON to FILE, ``--json -`` to stdout
(the human-readable lines then go to stderr, so stdout parses as one JSON document). Every
document carries ``"schema": "edgelstm.COMMAND/1"``, documented in docs/SCHEMAS.md."""
from __future__ import annotations

import json
from typing import Any, Callable

import click

json_out = click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                        metavar="FILE",
                        help="Write the result as JSON to FILE; '-' for stdout (other output then goes to stderr).")
device = click.option("--device", default="cpu", show_default=True,
                      help="cpu, cuda, tensorrt, arm, coreml, nnapi, qnn or auto; comma-separated where several are allowed.")
threads = click.option("--threads", type=int, default=None, help="Intra-op threads (default or 0: onnxruntime's).")
overwrite = click.option("--overwrite", is_flag=True, help="Replace an existing output.")
trust_modified = click.option(
    "--trust-modified", is_flag=True,
    help="Load a model whose seal (graph + manifest) is missing or does not match, e.g. edited after "
         "export or sealed by an older edgelstm. Skips the seal check only (with a warning); the manifest is "
         "still validated. quantize never re-seals such a file.")
provider_option = click.option(
    "--provider-option", "provider_option", multiple=True, metavar="DEVICE:KEY=VALUE",
    help="An onnxruntime provider option, e.g. cuda:use_tf32=0 (fp32 matmuls without TF32); repeatable.")

MAX_SEED = 2**32 - 1  # numpy, torch and random all take it; torch refuses seeds >= 2**64


def check_range(option: str, value, lo, hi) -> None:
    """Refuse an option value outside ``lo..hi`` (NaN and infinities included) before any work starts."""
    from edgelstm.errors import UsageError

    if value is not None and not (lo <= value <= hi):
        raise UsageError(option, "value out of range", expected=f"{lo}..{hi}", got=value)


def echo_for(json_path: Any) -> Callable[..., None]:
    """``click.echo`` for the human-readable lines: stderr when the JSON goes to stdout."""
    to_stderr = str(json_path) == "-" if json_path is not None else False

    def echo(message: str = "", **kwargs) -> None:
        click.echo(message, err=to_stderr or kwargs.pop("err", False), **kwargs)

    return echo


def write_json(json_path: Any, schema: str, payload: dict, *, indent: int | None = 2, default=None) -> None:
    """Write ``{"schema": schema, **payload}`` to ``json_path`` (atomically) or stdout for ``-``."""
    from edgelstm.fileio import json_safe

    # strict JSON: NaN/Inf (a diverged output, an int8 error of inf) are written as strings
    body = json_safe({"schema": schema, **{k: v for k, v in payload.items() if k != "schema"}})
    text = json.dumps(body, indent=indent, default=default, allow_nan=False)
    if str(json_path) == "-":
        click.echo(text)
        return
    from edgelstm.fileio import write_text_atomic

    write_text_atomic(json_path, text + "\n")
