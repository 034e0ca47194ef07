"""Click options shared by several commands, each a small decorator."""
from __future__ import annotations

import click

json_out = click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                        help="Write the full result as JSON to this file.")
device = click.option("--device", default="cpu", show_default=True,
                      help="cpu, cuda, tensorrt, arm, coreml, nnapi, qnn or auto; comma-separated where several are allowed.")
threads = click.option("--threads", type=int, default=None, help="Intra-op threads (default: onnxruntime's).")
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
