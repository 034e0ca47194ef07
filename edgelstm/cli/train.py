"""``edgelstm train``: train one model on a bundled data set or a user file, write a run directory."""
from __future__ import annotations

import click

from edgelstm.cli import options
from edgelstm.cli.options import MAX_SEED, check_range
from edgelstm.cli.options import overwrite as overwrite_option
from edgelstm.errors import UnknownChoiceError

FAMILY_CHOICES = ("lstm", "peephole", "gru", "attention")


@click.command("train")
@click.option("--family", required=True, help="lstm, peephole, gru or attention.")
@click.option("--dataset", required=True,
              help="digits, airline, sunspots, sine, timing, dates, or csv:PATH, npz:PATH, text:PATH "
                   "(see `edgelstm datasets`).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--hidden", "hidden_size", type=int, default=64, show_default=True, help="Hidden units per direction.")
@click.option("--layers", "num_layers", type=int, default=1, show_default=True, help="Stacked recurrent layers.")
@click.option("--epochs", type=int, default=30, show_default=True, help="Maximum epochs (early stopping may end sooner).")
@click.option("--patience", type=int, default=8, show_default=True, help="Epochs without validation gain before stopping.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--dropout", type=float, default=0.0, show_default=True, help="Dropout between stacked layers.")
@click.option("--bidirectional", is_flag=True, help="Bidirectional recurrent layers (not for forecasting).")
@click.option("--score", default="general", show_default=True, help="Attention score: general or bahdanau.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights, splits and batch order.")
@click.option("--device", default="cpu", show_default=True, help="Training device: cpu or cuda.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (fix it for bit-identical reruns).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@overwrite_option
@options.json_out
def train_command(family, dataset, out_dir, hidden_size, num_layers, epochs, patience, lr, batch_size, dropout,
                  bidirectional, score, seed, device, threads, quiet, overwrite, json_out):
    """Train a model and write OUT/model.safetensors, config.json, metrics.json, history.json."""
    if family not in FAMILY_CHOICES:
        raise UnknownChoiceError("--family", "unknown model family", expected=list(FAMILY_CHOICES), got=family)
    for option, value, lo, hi in (("--seed", seed, 0, MAX_SEED), ("--hidden", hidden_size, 1, 65_536),
                                  ("--layers", num_layers, 1, 64), ("--epochs", epochs, 1, 1_000_000),
                                  ("--patience", patience, 0, 1_000_000), ("--batch-size", batch_size, 1, 65_536),
                                  ("--lr", lr, 1e-12, 1e3), ("--dropout", dropout, 0.0, 0.99),
                                  ("--threads", threads, 1, 1024)):
        check_range(option, value, lo, hi)  # before any work: a huge --hidden must not exhaust the machine
    from edgelstm.training.run import check_out_dir
    check_out_dir(out_dir, overwrite)  # before loading torch or data: fail fast
    import torch

    from edgelstm.training import TrainConfig, train_run
    if threads is not None:
        if threads < 1:
            from edgelstm.errors import UsageError
            raise UsageError("--threads", "must be a positive integer", expected=">= 1", got=threads)
        torch.set_num_threads(threads)
    cfg = TrainConfig(family=family, hidden_size=hidden_size, num_layers=num_layers, epochs=epochs, lr=lr,
                      batch_size=batch_size, seed=seed, device=device, patience=patience, dropout=dropout,
                      bidirectional=bidirectional, score=score)
    result, out = train_run(dataset, cfg, out_dir, overwrite=overwrite, progress=not quiet)
    m = result.metrics
    metric = m["metric"]
    if json_out is not None:
        options.write_json(json_out, "edgelstm.train/1", {"run_dir": str(out), "family": family, "dataset": dataset,
                                                          "metrics": m}, default=str)
    options.echo_for(json_out)(f"{family} on {dataset}: test {metric} {m[f'test_{metric}']:.4f} (val {m[f'val_{metric}']:.4f}, "
               f"best epoch {m['best_epoch']}/{m['epochs_run']}, {m['parameters']} parameters, "
               f"{m['train_seconds']:.1f} s) -> {out}")
    return 0


commands = {"train": train_command}
