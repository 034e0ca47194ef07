"""The ``edgelstm`` command. Each subcommand lives in its own module and is imported lazily,
so ``edgelstm run`` on a device never imports torch. A command whose module is missing, or does
not define it, is an error naming the module (never a command that silently disappears).

Imports click and ``edgelstm.errors``/``edgelstm.extras``; its command modules (``edgelstm.cli.*``)
import the library; no library module imports ``edgelstm.cli``.

Errors: every :class:`~edgelstm.errors.EdgeLSTMError` becomes one line on stderr and its
``exit_code``; click usage errors exit 2. No traceback reaches the user (set
``EDGELSTM_DEBUG=1`` to see one). A command (or option) whose extra is not installed
(:mod:`edgelstm.extras`) ends, before any work, in one line naming the extra (exit 6); ``--help``
marks those commands. A closed stdout (``edgelstm run ... --json - | head -1``) ends quietly.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys

import click

from edgelstm import __version__
from edgelstm.errors import EdgeLSTMError, MissingExtraError
from edgelstm.extras import COMMAND_EXTRAS, OPTION_EXTRAS, extra_for_module, installed, require

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
    "env": "env",
}


def _needs_label(name: str) -> str:
    """``(needs edgelstm[train]) `` before a command's help line; ``MISSING`` when not installed."""
    extras = COMMAND_EXTRAS.get(name, ())
    if not extras:
        return ""
    state = "" if all(installed(e) for e in extras) else ", MISSING"
    return f"(needs edgelstm[{','.join(extras)}]{state}) "


def _check_extras(name: str, cmd: click.Command) -> None:
    """Wrap ``cmd``'s callback (once) so that missing extras fail after parsing (``--help`` still
    works) and before any work: the command's own extras, then those of the options given."""
    callback = cmd.callback
    if callback is None or getattr(callback, "_edgelstm_checked", False):
        return

    def checked(*args, **kwargs):
        if COMMAND_EXTRAS.get(name):
            require(COMMAND_EXTRAS[name], name)
        for (command, option), extra in OPTION_EXTRAS.items():
            if command != name:
                continue
            param = next((p for p in cmd.params if option in getattr(p, "opts", ())), None)
            if param is not None and kwargs.get(param.name):
                require(extra, f"{name} {option}")
        return callback(*args, **kwargs)

    checked._edgelstm_checked = True  # type: ignore[attr-defined]
    checked.__doc__ = callback.__doc__
    cmd.callback = checked


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        mod_name = COMMANDS.get(name)
        if mod_name is None:
            return None
        module = f"edgelstm.cli.{mod_name}"
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("edgelstm.cli"):  # a broken install, never "no such command"
                raise EdgeLSTMError(module, f"the module of the {name!r} command is missing",
                                    expected="a complete edgelstm install", got=f"no module named {e.name!r}") from None
            raise _missing_extra(name, e) from None
        cmd = getattr(mod, "commands", {}).get(name)
        if not isinstance(cmd, click.Command):
            raise EdgeLSTMError(module, f"the module does not define the {name!r} command",
                                expected=f"commands[{name!r}], a click command", got=type(cmd).__name__)
        _check_extras(name, cmd)
        return cmd

    def format_commands(self, ctx, formatter):
        rows = []
        limit = formatter.width - 6 - max(map(len, COMMANDS))
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                label = _needs_label(name)
                rows.append((name, label + cmd.get_short_help_str(max(20, limit - len(label)))))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
        formatter.write_paragraph()
        formatter.write_text('(needs edgelstm[X]): the command needs that extra, pip install "edgelstm[X]"; '
                             "the others run on a device install (numpy, onnxruntime, click). "
                             "`edgelstm env` lists what is installed and what each command and option needs.")


def _missing_extra(name: str, e: ModuleNotFoundError) -> EdgeLSTMError:
    """An import of an optional dependency that failed anyway (a code path the table missed)."""
    extra = extra_for_module(e.name)
    if extra is None:
        return EdgeLSTMError(name, "a required module is missing", got=f"no module named {e.name!r}")
    return MissingExtraError(name, extra, missing=[str(e.name)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgelstm")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Recurrent models from PyTorch to the edge: train, export, quantize, run, verify, bench."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    try:
        try:
            rv = cli.main(args=argv, prog_name="edgelstm", standalone_mode=False)
        except ModuleNotFoundError as e:
            if os.environ.get("EDGELSTM_DEBUG") or extra_for_module(e.name) is None:
                raise
            args = sys.argv[1:] if argv is None else argv
            raise _missing_extra(next((a for a in args if a in COMMANDS), "edgelstm"), e) from None
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, like a well-behaved filter
        _silence_stdout()
        sys.exit(0)
    except SystemExit:
        # click turns a broken pipe into a silent exit 1 after wrapping stdout; a reader that stops
        # early (`edgelstm run ... | head -1`) got what it asked for: exit 0, like the case above
        if type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
            _silence_stdout()
            sys.exit(0)
        raise
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


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
