"""``edgelstm verify``: check an exported (and quantized) model against PyTorch and independent
oracles. Exit code 0 when every check passed, 1 when one failed; anything that kept it from
judging exits with the code of its error class (README's exit-code table: 2 usage, 8 model file...)."""
from __future__ import annotations

from dataclasses import dataclass

import click

from edgelstm.cli import options
from edgelstm.errors import EdgeLSTMError, UsageError


@click.command("verify")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--reference", "reference", type=click.Path(file_okay=False), default=None,
              help="Run directory of the PyTorch original (from edgelstm train).")
@click.option("--model", "model_spec", default=None,
              help="The PyTorch original as FILE.py:FACTORY or package.module:FACTORY (instead of --reference).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights for --model (.safetensors, .pt, .pth; never unpickled).")
@click.option("--against", multiple=True, type=click.Path(dir_okay=False),
              help="Another file of the same model (int8, fp16...) to verify too; repeatable.")
@options.device
@options.provider_option
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help=".npz with arrays named after the graph inputs (x, lengths...) and optional labels y.")
@click.option("--run-data/--no-run-data", "run_data", default=True, show_default=True,
              help="With --reference RUN_DIR, also verify on the run's held-out test split (accuracy vs labels).")
@click.option("--data-limit", "data_limit", type=click.IntRange(min=1), default=256, show_default=True,
              help="Use at most this many sequences of the run's test split.")
@click.option("--steps", type=int, default=10_000, show_default=True,
              help="Length of the long-horizon drift sequence (0 skips the drift check).")
@click.option("--atol", multiple=True,
              help="Absolute tolerance, per output (h_out:1e-3) or for all (1e-4); repeatable.")
@click.option("--min-snr", "min_snr", multiple=True,
              help="Minimum SNR in dB, per output (y:25) or for all (30); repeatable.")
@click.option("--checks", default=",".join(("outputs", "task", "streaming", "drift", "batch_invariance", "state_roundtrip")),
              show_default=True, help="Comma-separated subset of the checks to run.")
@click.option("--oracles", default="reference,numpy", show_default=True,
              help="Extra fp32 oracles: reference (onnx.reference), numpy (edgelstm.reference cells); '' for none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@options.json_out
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="PNG of drift error vs time step.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the verdict line.")
@options.trust_modified
def verify_cmd(**params) -> int:
    """Verify MODEL.onnx: outputs, task agreement, streaming parity, long-horizon drift, batch
    invariance and state round-trip, on every requested device and for every --against file.

    A seq2seq export is verified as its encoder / decoder-step pair: give OUT.onnx (the stem),
    OUT.encoder.onnx or OUT.decoder_step.onnx (and the same for --against)."""
    args = VerifyArgs(**params)
    try:
        return _verify(args)
    except EdgeLSTMError as e:
        # 1 means "the model failed"; an error that kept verify from judging keeps its own code
        if e.exit_code == 1:
            e.exit_code = 2
        raise
    except OSError as e:  # an unwritable --json / --plot path
        raise UsageError(str(e.filename or "output"), "cannot write", expected="a writable path",
                         got=e.strerror or str(e)) from None


@dataclass(frozen=True)
class VerifyArgs:
    """The command line of ``edgelstm verify`` as click parsed it (one field per option)."""

    model: str
    reference: str | None
    model_spec: str | None
    checkpoint: str | None
    against: tuple[str, ...]
    device: str
    provider_option: tuple[str, ...]
    data: str | None
    run_data: bool
    data_limit: int
    steps: int
    atol: tuple[str, ...]
    min_snr: tuple[str, ...]
    checks: str
    oracles: str
    seed: int
    json_out: str | None
    plot: str | None
    quiet: bool
    trust_modified: bool

    @property
    def devices(self) -> list[str]:
        return [d.strip() for d in self.device.split(",") if d.strip()]

    def to_options(self):
        """The library's :class:`~edgelstm.verify.options.VerifyOptions` for these arguments."""
        from edgelstm.runtime.providers import parse_provider_options
        from edgelstm.verify.options import VerifyOptions

        return VerifyOptions(model_spec=self.model_spec, checkpoint=self.checkpoint, against=self.against,
                             devices=tuple(self.devices), data=self.data, steps=self.steps, atol=self.atol,
                             min_snr=self.min_snr, seed=self.seed,
                             checks=tuple(c.strip() for c in self.checks.split(",") if c.strip()),
                             oracles=tuple(o.strip() for o in self.oracles.split(",") if o.strip()),
                             run_data=self.run_data, data_limit=self.data_limit,
                             trust_modified=self.trust_modified,
                             provider_options=parse_provider_options(self.provider_option))


def _verify(args: VerifyArgs) -> int:
    from edgelstm.verify.core import verify

    options.check_range("--seed", args.seed, 0, options.MAX_SEED)
    options.check_range("--steps", args.steps, 0, 10_000_000)
    if args.checkpoint and not args.model_spec:
        raise UsageError("--checkpoint", "only used with --model FILE.py:FACTORY", expected="--model", got="--checkpoint alone")
    devices = args.devices
    if not devices:
        raise UsageError("--device", "no device given", expected="e.g. cpu or cpu,cuda", got=args.device)
    opts = args.to_options()
    if not args.quiet:  # the checks take a while (the drift check alone streams --steps steps): say so first
        others = f" and {len(args.against)} other file(s)" if args.against else ""
        click.echo(f"verifying {args.model}{others} on {','.join(devices)}: {args.checks} "
                   f"(drift: {args.steps} steps)...", err=True)
    result = verify(args.model, opts, reference=args.reference)
    if args.json_out:
        options.write_json(args.json_out, "edgelstm.verify/1", result.to_dict())
    text = result.table()
    options.echo_for(args.json_out)(text.splitlines()[-1] if args.quiet else text)
    if args.plot:  # after the report: a plot that cannot be drawn (no drift run) must not hide it
        if any(c.check == "drift" and c.curve for c in result.checks):
            result.plot(args.plot)
        else:
            click.echo(f"note: --plot: no PNG written to {args.plot}: the drift check did not run "
                       "(seq2seq pair, --steps 0, or a model that cannot stream)", err=True)
    return 0 if result.passed else 1


commands = {"verify": verify_cmd}
