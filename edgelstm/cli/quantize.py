"""``edgelstm quantize IN.onnx -o OUT.onnx --mode int8-dynamic|int8-static|fp16``.

The command's options become one frozen :class:`QuantizeCommand`, which gives the library's typed
options (:class:`~edgelstm.exporters.quant_options.QuantizeOptions`, ``QuantizeJob``). Imports
click, :mod:`edgelstm.cli.options` and (when run) :mod:`edgelstm.exporters.quantize`.
"""
from __future__ import annotations

from dataclasses import dataclass

import click

from edgelstm.cli import options


@dataclass(frozen=True)
class QuantizeCommand:
    """The ``quantize`` command's options, as click parsed them."""

    model: str
    output: str
    mode: str
    calibration: str | None
    per_channel: bool
    method: str | None
    recurrent: str | None
    gru: str
    target: str
    keep_io_types: bool | None
    samples: int
    force_int8: bool
    accept_error: bool
    threads: int | None
    overwrite: bool
    json_out: str | None
    trust_modified: bool

    def options(self):
        from edgelstm.exporters.quant_options import QuantizeOptions

        return QuantizeOptions(mode=self.mode, per_channel=self.per_channel, method=self.method, target=self.target,
                               keep_io_types=self.keep_io_types, recurrent=self.recurrent, gru=self.gru,
                               calibration_samples=self.samples,
                               threads=1 if self.threads is None else self.threads,  # 0: onnxruntime's default
                               force_int8=self.force_int8, accept_error=self.accept_error)

    def job(self):
        from edgelstm.exporters.quant_options import QuantizeJob

        return QuantizeJob(calibration=self.calibration, overwrite=self.overwrite,
                           trust_modified=self.trust_modified)


@click.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--mode", required=True, help="int8-dynamic, int8-static or fp16.")
@click.option("--calibration", type=click.Path(), default=None,
              help="DATA.npz keyed by graph input names (x, lengths; y = labels) or a run directory. "
                   "Required for int8-static; otherwise used to measure the error.")
@click.option("--per-channel", is_flag=True, help="int8: one scale per output channel.")
@click.option("--method", default=None, help="int8-static calibration: minmax (default), entropy, percentile.")
@click.option("--recurrent", default=None,
              help="int8-static: what LSTM/GRU weights get: int8-dynamic (default) or float.")
@click.option("--gru", type=click.Choice(["int8", "float"]), default="int8", show_default=True,
              help="int8 modes: rewrite GRU nodes so their weights become int8, or leave them float.")
@click.option("--target", default="cpu", show_default=True,
              help="cpu or gpu. fp16 on cpu keeps recurrent nodes computing in fp32.")
@click.option("--keep-io-types/--fp16-io", default=None,
              help="fp16: keep graph inputs/outputs float32 (default) or make them float16.")
@click.option("--force-int8", is_flag=True,
              help="int8 modes: quantize every node the mode can take, also where int8 is slower than float "
                   "(by default a node is kept float where int8 does not pay; the output lists each decision).")
@click.option("--accept-error", is_flag=True,
              help="Write the output even when it is far off the float model (SQNR below 10 dB, accuracy down "
                   "more than 0.05, RMSE up more than 25%); without it such a model exits 1 and nothing is written.")
@click.option("--samples", type=int, default=512, show_default=True,
              help="Sequences used to calibrate and measure the error.")
@click.option("--threads", type=int, default=None,
              help="Intra-op threads for the error evaluation (default 1, so int8 results compare; 0: onnxruntime's default).")
@options.overwrite
@options.json_out
@options.trust_modified
def quantize_cmd(**given):
    """Quantize an exported model; print sizes and the error against the float model."""
    cmd = QuantizeCommand(**given)
    from edgelstm.exporters.quantize import quantize_model

    report = quantize_model(cmd.model, cmd.output, cmd.options(), cmd.job())
    if cmd.json_out:
        options.write_json(cmd.json_out, "edgelstm.quantize/1", report.to_dict())
    echo = options.echo_for(cmd.json_out)
    for line in report.lines():
        echo(line)


commands = {"quantize": quantize_cmd}
