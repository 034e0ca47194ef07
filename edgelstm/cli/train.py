"""``edgelstm train``: train one model on a bundled data set or a user file, write a run directory."""
from __future__ import annotations

from dataclasses import dataclass

import click

from edgelstm.cli import options
from edgelstm.cli.options import MAX_SEED, check_range
from edgelstm.cli.options import overwrite as overwrite_option
from edgelstm.errors import UnknownChoiceError


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
def train_command(**params) -> int:
    """Train a model and write OUT/model.safetensors, config.json, metrics.json, history.json."""
    args = TrainArgs(**params)
    from edgelstm.models.config import FAMILY_NAMES

    if args.family not in FAMILY_NAMES:
        raise UnknownChoiceError("--family", "unknown model family", expected=list(FAMILY_NAMES), got=args.family)
    for option, value, lo, hi in (("--seed", args.seed, 0, MAX_SEED), ("--hidden", args.hidden_size, 1, 65_536),
                                  ("--layers", args.num_layers, 1, 64), ("--epochs", args.epochs, 1, 1_000_000),
                                  ("--patience", args.patience, 0, 1_000_000),
                                  ("--batch-size", args.batch_size, 1, 65_536),
                                  ("--lr", args.lr, 1e-12, 1e3), ("--dropout", args.dropout, 0.0, 0.99),
                                  ("--threads", args.threads, 1, 1024)):
        check_range(option, value, lo, hi)  # before any work: a huge --hidden must not exhaust the machine
    from edgelstm.training.run import check_out_dir
    check_out_dir(args.out_dir, args.overwrite)  # before loading torch or data: fail fast
    import torch

    from edgelstm.training import TrainConfig, train_run
    if args.threads is not None:  # check_range above refused anything below 1
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(family=args.family, hidden_size=args.hidden_size, num_layers=args.num_layers,
                      epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device,
                      patience=args.patience, dropout=args.dropout, bidirectional=args.bidirectional,
                      score=args.score)
    result, out = train_run(args.dataset, cfg, args.out_dir, overwrite=args.overwrite, progress=not args.quiet)
    m = result.metrics
    metric = m["metric"]
    if args.json_out is not None:
        options.write_json(args.json_out, "edgelstm.train/1", {"run_dir": str(out), "family": args.family,
                                                               "dataset": args.dataset, "metrics": m}, default=str)
    options.echo_for(args.json_out)(
        f"{args.family} on {args.dataset}: test {metric} {m[f'test_{metric}']:.4f} (val {m[f'val_{metric}']:.4f}, "
        f"best epoch {m['best_epoch']}/{m['epochs_run']}, {m['parameters']} parameters, "
        f"{m['train_seconds']:.1f} s) -> {out}")
    return 0


@dataclass(frozen=True)
class TrainArgs:
    """The command line of ``edgelstm train`` as click parsed it (one field per option)."""

    family: str
    dataset: str
    out_dir: str
    hidden_size: int
    num_layers: int
    epochs: int
    patience: int
    lr: float
    batch_size: int
    dropout: float
    bidirectional: bool
    score: str
    seed: int
    device: str
    threads: int | None
    quiet: bool
    overwrite: bool
    json_out: str | None


commands = {"train": train_command}
