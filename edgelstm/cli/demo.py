"""``edgelstm demo``: train one model per family on bundled data and print one summary table."""
from __future__ import annotations

import click

from edgelstm.cli import options
from edgelstm.errors import VerificationError


@click.command("demo")
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the runs and report.md / report.json (runs inside are replaced).")
@click.option("--quick", is_flag=True, help="A smoke run: 2 epochs on a few sequences per family (seconds).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@options.json_out
def demo_command(out_dir: str, quick: bool, quiet: bool, json_out):
    """Train lstm (digits), peephole vs lstm (timing), gru (sine, airline), attention (dates).
    Minutes on a small machine; --quick runs the same stages on tiny settings in seconds."""
    from edgelstm.demo import failures, report_payload, run_demo
    ctx = run_demo(out_dir, quick=quick, progress=not quiet, echo=options.echo_for(json_out))
    if json_out is not None:
        options.write_json(json_out, "edgelstm.demo/1", report_payload(ctx), default=str)
    bad = failures(ctx)
    if bad:
        raise VerificationError("demo", f"{len(bad)} problem(s): " + "; ".join(bad))
    return 0


commands = {"demo": demo_command}
