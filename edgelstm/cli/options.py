"""Click options shared by several commands, each a small decorator."""
from __future__ import annotations

import click

json_out = click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
                        help="Write the full result as JSON to this file.")
device = click.option("--device", default="cpu", show_default=True,
                      help="cpu, cuda, tensorrt, arm, coreml, nnapi, qnn or auto; comma-separated where several are allowed.")
threads = click.option("--threads", type=int, default=None, help="Intra-op threads (default: onnxruntime's).")
overwrite = click.option("--overwrite", is_flag=True, help="Replace an existing output.")
provider_option = click.option(
    "--provider-option", "provider_option", multiple=True, metavar="DEVICE:KEY=VALUE",
    help="An onnxruntime provider option, e.g. cuda:use_tf32=0 (fp32 matmuls without TF32); repeatable.")
