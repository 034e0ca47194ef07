"""``edgelstm models`` and ``edgelstm datasets``: what can be trained, on what (and a split of a
data set written to ``.npz`` for ``edgelstm run``, ``verify --data`` and ``quantize --calibration``)."""
from __future__ import annotations

import click

from edgelstm.cli import options
from edgelstm.errors import UsageError


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command("models")
@options.json_out
def models_command(json_out):
    """List the model families, their tasks, state tensors and ONNX operator."""
    from edgelstm.models import FAMILIES
    rows = [{"family": f.name, "tasks": list(f.tasks), "state": list(f.state_names), "onnx_op": f.onnx_op,
             "description": f.description} for f in FAMILIES.values()]
    if json_out is not None:
        options.write_json(json_out, "edgelstm.models/1", {"families": rows})
        if json_out == "-":
            return 0
    click.echo(_table([[r["family"], ",".join(r["tasks"]), ",".join(r["state"]), r["onnx_op"], r["description"]]
                       for r in rows], ["family", "tasks", "state", "onnx op", "description"]))
    return 0


@click.command("datasets")
@click.argument("spec", required=False)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for splits / synthetic data (with SPEC; `train --seed` uses the same splits).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="With -o: the split to write (default test).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With -o: at most this many sequences.")
@click.option("-o", "--out", "npz_out", type=click.Path(dir_okay=False), default=None,
              help="Write SPEC's split as .npz (x [N,T,F] raw, unnormalized; y; lengths [N]) or, for one "
                   "sequence (--limit 1), as .csv: a row per time step, a column per feature.")
@options.json_out
def datasets_command(spec: str | None, seed: int, split: str, limit: int | None, npz_out: str | None, json_out):
    """List the bundled data sets, or load SPEC (a name or csv:PATH / npz:PATH / text:PATH) and
    describe it: task, split sizes, shapes, classes. Loading a user file checks it. With -o, write
    one split to a .npz file that `edgelstm run --input`, `verify --data` and `quantize
    --calibration` read."""
    from edgelstm.cli.options import MAX_SEED, check_range
    from edgelstm.data import DATASETS, load_dataset
    check_range("--seed", seed, 0, MAX_SEED)
    if npz_out is None and (split is not None or limit is not None):  # refused, not ignored
        raise UsageError("--split/--limit", "only apply with -o", expected="-o FILE.npz (or .csv)",
                         got=f"--split {split}" if split is not None else f"--limit {limit}")
    split = split or "test"
    echo = options.echo_for(json_out)
    if spec is not None:
        bundle = load_dataset(spec, seed=seed)
        summary = bundle.summary()
        if npz_out is not None:
            summary["written"] = _write_split(bundle, split, limit, npz_out)
            echo(f"wrote {npz_out}: {summary['written']['sequences']} {split} sequences of {spec}")
        if json_out is not None:
            options.write_json(json_out, "edgelstm.dataset/1", summary, default=str)
            if json_out == "-":
                return 0
        if npz_out is None:
            for key, value in summary.items():
                if value is not None:
                    echo(f"{key:>14}: {value}")
        return 0
    if npz_out is not None:
        raise UsageError("-o", "needs a data set to write", expected="edgelstm datasets SPEC -o FILE.npz",
                         got="no SPEC")
    rows = [{"name": d.name, "task": d.task, "kind": d.kind, "family": d.suggested_family, "summary": d.summary}
            for d in DATASETS.values()]
    if json_out is not None:
        options.write_json(json_out, "edgelstm.datasets/1", {"datasets": rows})
        if json_out == "-":
            return 0
    click.echo(_table([[r["name"], r["task"], r["kind"], r["family"], r["summary"]] for r in rows],
                      ["name", "task", "kind", "family", "summary"]))
    click.echo("\nuser data: csv:PATH (sequences per row with a 'label' column, or a time series), "
               "npz:PATH (x [N,T,F], y, lengths), text:PATH (next character). Sources: edgelstm/data/bundled/SOURCES.md")
    return 0


def _write_split(bundle, split: str, limit: int | None, path: str) -> dict:
    import numpy as np

    from edgelstm.fileio import atomic_path

    part = bundle.splits[split]
    if limit is not None:
        part = part.subset(slice(0, limit))
    arrays = {"x": part.x, "y": part.y, "lengths": part.lengths}
    if str(path).lower().endswith(".csv"):
        if len(part) != 1 or part.x.ndim != 3:
            raise UsageError("-o", "a .csv file holds one sequence of frames", expected="--limit 1, or a .npz file",
                             got=f"{len(part)} sequences")
        steps = part.x[0, :int(part.lengths[0])]
        from edgelstm.fileio import write_text_atomic

        header = f"# {bundle.name} {split} sequence 0: {steps.shape[0]} steps x {steps.shape[1]} features\n"
        write_text_atomic(path, header + "".join(",".join(f"{v:.9g}" for v in row) + "\n" for row in steps))
        return {"path": str(path), "split": split, "sequences": 1, "arrays": {"x": {"shape": list(steps.shape)}}}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return {"path": str(path), "split": split, "sequences": len(part),
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()}}


commands = {"models": models_command, "datasets": datasets_command}
