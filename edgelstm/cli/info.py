"""``edgelstm models`` and ``edgelstm datasets``: what can be trained, on what."""
from __future__ import annotations

import json

import click


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_command(as_json: bool):
    """List the model families, their tasks, state tensors and ONNX operator."""
    from edgelstm.models import FAMILIES
    rows = [{"family": f.name, "tasks": list(f.tasks), "state": list(f.state_names), "onnx_op": f.onnx_op,
             "description": f.description} for f in FAMILIES.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    click.echo(_table([[r["family"], ",".join(r["tasks"]), ",".join(r["state"]), r["onnx_op"], r["description"]]
                       for r in rows], ["family", "tasks", "state", "onnx op", "description"]))
    return 0


@click.command("datasets")
@click.argument("spec", required=False)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits / synthetic data (with SPEC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets_command(spec: str | None, seed: int, as_json: bool):
    """List the bundled data sets, or load SPEC (a name or csv:PATH / npz:PATH / text:PATH) and
    describe it: task, split sizes, shapes, classes. Loading a user file checks it."""
    from edgelstm.cli.options import MAX_SEED, check_range
    from edgelstm.data import DATASETS, load_dataset
    check_range("--seed", seed, 0, MAX_SEED)
    if spec is not None:
        summary = load_dataset(spec, seed=seed).summary()
        if as_json:
            click.echo(json.dumps(summary, indent=2))
            return 0
        for key, value in summary.items():
            if value is not None:
                click.echo(f"{key:>14}: {value}")
        return 0
    rows = [{"name": d.name, "task": d.task, "kind": d.kind, "family": d.suggested_family, "summary": d.summary}
            for d in DATASETS.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    click.echo(_table([[r["name"], r["task"], r["kind"], r["family"], r["summary"]] for r in rows],
                      ["name", "task", "kind", "family", "summary"]))
    click.echo("\nuser data: csv:PATH (sequences per row with a 'label' column, or a time series), "
               "npz:PATH (x [N,T,F], y, lengths), text:PATH (next character). Sources: edgelstm/data/bundled/SOURCES.md")
    return 0


commands = {"models": models_command, "datasets": datasets_command}
