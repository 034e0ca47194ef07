"""Every registered command loads; a command whose module is missing, or does not define it,
is an error naming the module, never a command that silently disappears from ``edgelstm``."""
from __future__ import annotations

import re

import click
import pytest

import edgelstm.cli as cli_pkg
from clitools import run_cli


@pytest.mark.parametrize("name", sorted(cli_pkg.COMMANDS))
def test_every_registered_command_loads(name):
    cmd = cli_pkg.cli.get_command(click.Context(cli_pkg.cli), name)
    assert isinstance(cmd, click.Command) and cmd.name == name


@pytest.mark.parametrize("module, message", [
    ("no_such_module", "error: edgelstm.cli.no_such_module | the module of the 'ghost' command is missing; "
                       "expected a complete edgelstm install, got no module named 'edgelstm.cli.no_such_module'"),
    ("options", "error: edgelstm.cli.options | the module does not define the 'ghost' command; "
                "expected commands['ghost'], a click command, got NoneType"),
], ids=["missing-module", "no-command"])
def test_a_broken_command_module_is_an_error(monkeypatch, capsys, module, message):
    monkeypatch.setitem(cli_pkg.COMMANDS, "ghost", module)
    code, out, err = run_cli(["ghost"], capsys)
    assert code == 1 and out == ""
    assert err.strip() == message, err
    # and --help says so instead of listing the other commands without it
    code, _, err = run_cli(["--help"], capsys)
    assert code == 1 and re.search(r"'ghost' command", err)
