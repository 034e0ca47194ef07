"""``edgelstm export``: a run directory or a user's own nn.Module -> checked ONNX + manifest.

The command's options become one frozen :class:`ExportCommand`; a user module's become the
library's :class:`~edgelstm.exporters.plan.ExportOptions`. Imports click, :mod:`edgelstm.cli.options`,
the torch-free :mod:`edgelstm.manifest` / :mod:`edgelstm.stats` (defaults for ``--help``) and, when
run, :mod:`edgelstm.exporters`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

from edgelstm.cli import options
from edgelstm.errors import UsageError
from edgelstm.manifest import DEFAULT_OPSET  # torch-free: `edgelstm export --help` stays light
from edgelstm.stats import FP32_RTOL_SCALE



@dataclass(frozen=True)
class ExportCommand:
    """The ``export`` command's options, as click parsed them."""

    run_dir: str | None
    output: str
    model_ref: str | None
    checkpoint: str | None
    inputs: tuple[str, ...]
    output_names: tuple[str, ...]
    states: tuple[str, ...]
    min_sizes: tuple[str, ...]
    example_sizes: tuple[str, ...]
    lengths_input: str | None
    expose_state: bool
    opset: int
    atol: float
    no_verify: bool
    json_out: str | None
    overwrite: bool


@click.command("export")
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Output OUT.onnx (seq2seq writes OUT.encoder.onnx and OUT.decoder_step.onnx).")
@click.option("--model", "model_ref", default=None, metavar="FILE.py:FACTORY",
              help="Your own nn.Module: FILE.py:FACTORY or package.module:FACTORY (FACTORY() returns it).")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="Weights for --model: .safetensors or .pt/.pth (loaded with weights_only=True).")
@click.option("--input", "inputs", multiple=True, metavar="NAME:DTYPE[DIM,...]",
              help="A forward argument, in order (repeat). Dims: integers or names; named dims (batch, "
                   "time, ...) are dynamic axes. Example: x:float32[batch,time,8]. A tuple argument: "
                   "'hidden=(h:float32[2,batch,200],c:float32[2,batch,200])' (its parts are the graph inputs "
                   "h and c; nesting allowed); an output tuple of the same shapes becomes h_out, c_out and "
                   "the pairs are state inputs/outputs.")
@click.option("--output-name", "output_names", multiple=True, metavar="NAME",
              help="Name of each model output, in order (repeat); a tuple output as NAME=(a,b). "
                   "Default: y, or y0, y1, ... (and IN_out for an output paired with a tuple argument IN).")
@click.option("--state", "states", multiple=True, metavar="IN=OUT",
              help="Declare input IN a state fed back from output OUT (repeat), e.g. h=h_out for a step "
                   "module that takes and returns one tensor.")
@click.option("--min-size", "min_sizes", multiple=True, metavar="NAME=N",
              help="Every parity case feeds named axis NAME at least N (repeat), e.g. width=16 for a conv "
                   "front end. Default 1.")
@click.option("--example-size", "example_sizes", multiple=True, metavar="NAME=N",
              help="Size of named axis NAME in the traced example (repeat). Default: batch 2, others 6 "
                   "(at least the --min-size).")
@click.option("--lengths-input", default=None, metavar="NAME",
              help="The --input holding valid lengths: a forward that packs (pack_padded_sequence) gets "
                   "ONNX sequence_lens from the lengths it packs with (transformed or not); otherwise they are "
                   "wired to every recurrent node's sequence_lens.")
@click.option("--expose-state", is_flag=True,
              help="Add h_in/c_in inputs and h_out/c_out outputs for each recurrent module (streaming). "
                   "Needs a named batch and a named time axis in the data input (x, else the first "
                   "non-lengths input), in any order; only [batch,time,...] is marked streamable for run.")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help=f"ONNX opset (14..20). {DEFAULT_OPSET} covers every op emitted and runs on onnxruntime >= 1.11.")
@click.option("--atol", type=float, default=FP32_RTOL_SCALE, show_default=True,
              help="Parity rule: max |onnx - torch| <= ATOL * max(1, max|torch|), checked at several "
                   "batch sizes and time lengths.")
@click.option("--no-verify", is_flag=True, help="Skip the numeric comparison with PyTorch (graph checks still run).")
@options.json_out
@options.overwrite
def export_cmd(**given):
    """Export RUN_DIR, or --model with --input specs, to ONNX with fused recurrent nodes.

    \b
    Examples:
      edgelstm export runs/lstm -o lstm.onnx
      edgelstm export --model my_model.py:build --checkpoint w.safetensors \\
          --input x:float32[batch,time,8] -o my.onnx
      edgelstm export --model lm.py:build --input 'input:int64[time,batch]' \\
          --input 'hidden=(h:float32[2,batch,200],c:float32[2,batch,200])' -o lm.onnx
    """
    cmd = ExportCommand(**given)
    options.check_range("--atol", cmd.atol, 1e-12, 1e6)  # NaN and inf fail too
    run_dir, model_ref, inputs, lengths_input, expose_state = (cmd.run_dir, cmd.model_ref, cmd.inputs,
                                                               cmd.lengths_input, cmd.expose_state)
    if run_dir and model_ref:
        raise UsageError("export", "give either RUN_DIR or --model, not both", expected="one source",
                         got=f"{run_dir} and --model {model_ref}")
    if not run_dir and not model_ref:
        raise UsageError("export", "nothing to export", expected="RUN_DIR or --model FILE.py:FACTORY", got="neither")
    if run_dir:
        extra = [n for n, v in (("--checkpoint", cmd.checkpoint), ("--input", inputs),
                                ("--output-name", cmd.output_names), ("--state", cmd.states),
                                ("--min-size", cmd.min_sizes), ("--example-size", cmd.example_sizes),
                                ("--lengths-input", lengths_input), ("--expose-state", expose_state)) if v]
        if extra:
            raise UsageError("export RUN_DIR", "options that only apply to --model", expected="none of them",
                             got=extra)
    else:
        if not inputs:
            raise UsageError("--input", "required with --model", expected="NAME:DTYPE[DIM,...] per forward input",
                             got="none")
    out = Path(cmd.output)
    targets = [out]
    from edgelstm.exporters.spec import (check_specs, check_streaming_layout, leaves, parse_argument,  # noqa: PLC0415
                                         parse_output_name, parse_sizes, parse_states)

    args = [parse_argument(t) for t in inputs]  # torch-free: bad specs fail before torch loads
    specs = leaves(args)
    names = [n for t in cmd.output_names for n in parse_output_name(t)]
    pairs = parse_states(cmd.states)
    mins, examples = parse_sizes(cmd.min_sizes, "--min-size"), parse_sizes(cmd.example_sizes, "--example-size")
    if model_ref:
        check_specs(specs)
        if expose_state:
            check_streaming_layout(specs, lengths_input)
        if lengths_input and any(sp.name == lengths_input for sp in specs):
            check_streaming_layout(specs, lengths_input, option="--lengths-input")
    if run_dir and _is_seq2seq(run_dir):
        from edgelstm.runtime.interface import pair_paths

        targets = list(pair_paths(out))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not cmd.overwrite:
        raise UsageError("-o", "output exists", expected="a new path, or --overwrite", got=existing)

    if run_dir:
        from edgelstm.exporters.runs import export_run  # noqa: PLC0415

        report = export_run(run_dir, out, opset=cmd.opset, verify=not cmd.no_verify, atol_scale=cmd.atol)
    else:
        from edgelstm.exporters.core import export  # noqa: PLC0415
        from edgelstm.exporters.plan import ExportOptions  # noqa: PLC0415
        from edgelstm.exporters.usermodel import build_user_model, load_user_checkpoint  # noqa: PLC0415

        model = build_user_model(model_ref)
        sha = load_user_checkpoint(model, cmd.checkpoint) if cmd.checkpoint else None
        report = export(model, None, out, ExportOptions(
            inputs=args, output_names=names or None, opset=cmd.opset, verify=not cmd.no_verify, atol_scale=cmd.atol,
            lengths_input=lengths_input, expose_state=expose_state, checkpoint_sha256=sha, states=pairs,
            min_sizes=mins, example_sizes=examples))
    if cmd.json_out:
        options.write_json(cmd.json_out, "edgelstm.export/1", report.to_dict(), default=str)
    options.echo_for(cmd.json_out)(report.summary())


def _is_seq2seq(run_dir: str) -> bool:
    path = Path(run_dir) / "config.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # export_run reports the problem with the run directory itself
    return isinstance(d, dict) and d.get("task") == "seq2seq"


commands = {"export": export_cmd}
