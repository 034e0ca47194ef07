"""The ``edgelstm`` command. Each subcommand lives in its own module and is imported lazily,
so ``edgelstm run`` on a device never imports torch.

Errors: every :class:`~edgelstm.errors.EdgeLSTMError` becomes one line on stderr and its
``exit_code``; click usage errors exit 2. No traceback reaches the user (set
``EDGELSTM_DEBUG=1`` to see one).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from edgelstm import __version__
from edgelstm.errors import EdgeLSTMError

# command name -> module under edgelstm.cli exposing ``command`` (a click.Command)
COMMANDS: dict[str, str] = {
    "models": "info",
    "datasets": "info",
    "train": "train",
    "demo": "demo",
    "export": "export",
    "quantize": "quantize",
    "run": "run",
    "verify": "verify",
    "bench": "bench",
    "bench-report": "bench",
    "inspect": "inspect",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        mod_name = COMMANDS.get(name)
        if mod_name is None:
            return None
        try:
            mod = importlib.import_module(f"edgelstm.cli.{mod_name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("edgelstm.cli"):
                return None  # command not built yet
            raise click.ClickException(
                f"{name} | needs the optional dependency {e.name!r}; "
                f"install it with: pip install 'edgelstm[export,train]'") from None
        return getattr(mod, "commands")[name]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgelstm")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Recurrent models from PyTorch to the edge: train, export, quantize, run, verify, bench."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    try:
        rv = cli.main(args=argv, prog_name="edgelstm", standalone_mode=False)
    except EdgeLSTMError as e:
        if os.environ.get("EDGELSTM_DEBUG"):
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # a path that cannot be read or written: one line, never a traceback
        if os.environ.get("EDGELSTM_DEBUG"):
            raise
        where = e.filename if e.filename is not None else "file"
        click.echo(f"error: {where} | {e.strerror or e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
