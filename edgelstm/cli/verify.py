"""``edgelstm verify``: check an exported (and quantized) model against PyTorch and independent
oracles. Exit code 0 when every check passed, 1 when one failed; anything that kept it from
judging exits with the code of its error class (README's exit-code table: 2 usage, 8 model file...)."""
from __future__ import annotations

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
def verify_cmd(model, reference, model_spec, checkpoint, against, device, provider_option, data, run_data,
               data_limit, steps, atol, min_snr, checks, oracles, seed, json_out, plot, quiet, trust_modified) -> int:
    """Verify MODEL.onnx: outputs, task agreement, streaming parity, long-horizon drift, batch
    invariance and state round-trip, on every requested device and for every --against file.

    A seq2seq export is verified as its encoder / decoder-step pair: give OUT.onnx (the stem),
    OUT.encoder.onnx or OUT.decoder_step.onnx (and the same for --against)."""
    try:
        return _verify(model, reference, model_spec, checkpoint, against, device, data, run_data, data_limit, steps,
                       atol, min_snr, checks, oracles, seed, json_out, plot, quiet, trust_modified, provider_option)
    except EdgeLSTMError as e:
        # 1 means "the model failed"; an error that kept verify from judging keeps its own code
        if e.exit_code == 1:
            e.exit_code = 2
        raise
    except OSError as e:  # an unwritable --json / --plot path
        raise UsageError(str(e.filename or "output"), "cannot write", expected="a writable path",
                         got=e.strerror or str(e)) from None


def _verify(model, reference, model_spec, checkpoint, against, device, data, run_data, data_limit, steps,
            atol, min_snr, checks, oracles, seed, json_out, plot, quiet, trust_modified, provider_option=()) -> int:
    from edgelstm.runtime.providers import parse_provider_options
    from edgelstm.verify.core import verify

    options.check_range("--seed", seed, 0, options.MAX_SEED)
    options.check_range("--steps", steps, 0, 10_000_000)
    if checkpoint and not model_spec:
        raise UsageError("--checkpoint", "only used with --model FILE.py:FACTORY", expected="--model", got="--checkpoint alone")
    devices = [d.strip() for d in device.split(",") if d.strip()]
    if not devices:
        raise UsageError("--device", "no device given", expected="e.g. cpu or cpu,cuda", got=device)
    if not quiet:  # the checks take a while (the drift check alone streams --steps steps): say so first
        others = f" and {len(against)} other file(s)" if against else ""
        click.echo(f"verifying {model}{others} on {','.join(devices)}: {checks} "
                   f"(drift: {steps} steps)...", err=True)
    result = verify(model, reference=reference, model_spec=model_spec, checkpoint=checkpoint, against=against,
                    devices=devices, data=data, steps=steps, atol=atol, min_snr=min_snr, seed=seed,
                    checks=[c.strip() for c in checks.split(",") if c.strip()],
                    oracles=[o.strip() for o in oracles.split(",") if o.strip()], run_data=run_data,
                    data_limit=data_limit, trust_modified=trust_modified,
                    provider_options=parse_provider_options(provider_option))
    if json_out:
        options.write_json(json_out, "edgelstm.verify/1", result.to_dict())
    text = result.table()
    options.echo_for(json_out)(text.splitlines()[-1] if quiet else text)
    if plot:  # after the report: a plot that cannot be drawn (no drift run) must not hide it
        if any(c.check == "drift" and c.curve for c in result.checks):
            result.plot(plot)
        else:
            click.echo(f"note: --plot: no PNG written to {plot}: the drift check did not run "
                       "(seq2seq pair, --steps 0, or a model that cannot stream)", err=True)
    return 0 if result.passed else 1


commands = {"verify": verify_cmd}
