"""The training loop: one function for every family and task.

Deterministic for a given seed (weights, batch order and dropout all derive from it; on CPU
the result also depends on torch's thread count, which the CLI fixes). Adam, gradient-norm
clipping, learning rate halved when validation stalls, early stopping on the validation metric
with the best weights kept (the learning rate halves after patience/2 stale epochs).

Inputs are normalized with the bundle's train-split mean/std (saved in the run's config so the
runtime applies the same on the way in). Regression / forecast targets are normalized during
training only: at the end the target scale is folded into the head (``W' = diag(std) W``,
``b' = std * b + mean``), so the saved model predicts in the data's own units.
"""
from __future__ import annotations

import copy
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgelstm.data.bundle import DatasetBundle, Split, valid_step_mask
from edgelstm.errors import UsageError
from edgelstm.models import ModelConfig, build_model
from edgelstm.tokens import BOS, IGNORE_INDEX, PAD
from edgelstm.training import metrics as M

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (saved in the run's config.json under ``"training"``)."""

    family: str                    # lstm | peephole | gru | attention
    hidden_size: int = 64          # recurrent state width per direction
    num_layers: int = 1            # stacked recurrent layers
    epochs: int = 30               # upper bound; early stopping usually ends sooner
    lr: float = 3e-3               # Adam learning rate
    batch_size: int = 64
    seed: int = 0                  # weights, batch order, dropout
    device: str = "cpu"            # cpu | cuda
    patience: int = 8              # epochs without validation improvement before stopping
    clip_norm: float = 1.0         # gradient-norm clipping (recurrent nets explode without it)
    weight_decay: float = 0.0
    dropout: float = 0.0           # between stacked layers
    bidirectional: bool = False
    emb_size: int = 32             # seq2seq token embedding width
    score: str = "general"         # attention score (general | bahdanau)
    stop_at: float | None = None   # stop as soon as the validation metric reaches this (e.g. 1.0)
    max_train: int | None = None   # use only the first N training sequences (smoke runs)

    def validate(self) -> "TrainConfig":
        for name in ("hidden_size", "num_layers", "epochs", "batch_size", "patience", "emb_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UsageError(f"--{name.replace('_', '-')}", "must be a positive integer", expected=">= 1", got=v)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise UsageError("--lr", "must be a positive number", expected="> 0", got=self.lr)
        if not (isinstance(self.clip_norm, (int, float)) and self.clip_norm > 0):
            raise UsageError("clip_norm", "must be a positive number", expected="> 0", got=self.clip_norm)
        if self.max_train is not None and (not isinstance(self.max_train, int) or self.max_train < 1):
            raise UsageError("max_train", "must be a positive integer", expected=">= 1", got=self.max_train)
        resolve_device(self.device)
        return self


@dataclass
class TrainResult:
    model: nn.Module                        # best weights, eval mode, on CPU, outputs in data units
    model_config: ModelConfig
    metrics: dict[str, float]               # val_* and test_* of the best epoch, plus figures
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    from edgelstm.errors import UnknownChoiceError
    if name not in ("cpu", "cuda"):
        raise UnknownChoiceError("--device", "unknown training device", expected=["cpu", "cuda"], got=name)
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device", "CUDA is not available to torch here", expected="cpu",
                         got=f"cuda (torch {torch.__version__})")
    return torch.device(name)


def model_config_for(bundle: DatasetBundle, cfg: TrainConfig) -> ModelConfig:
    """The model that fits this data set and family (typed errors for impossible pairs)."""
    if bundle.task == "seq2seq":
        if cfg.family != "attention":
            raise UsageError("--family", f"data set {bundle.name!r} is seq2seq and needs the attention family",
                             expected="attention", got=cfg.family)
        return ModelConfig(family="attention", hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                           dropout=cfg.dropout, task="seq2seq", vocab_size=len(bundle.vocab), emb_size=cfg.emb_size,
                           score=cfg.score, max_len=bundle.max_len, num_outputs=len(bundle.vocab)).validate()
    if cfg.family == "attention" and bundle.task != "classify":
        raise UsageError("--family", f"attention handles seq2seq or classify data; {bundle.name!r} is {bundle.task}",
                         expected=["lstm", "peephole", "gru"], got="attention")
    return ModelConfig(family=cfg.family, input_size=bundle.num_features, hidden_size=cfg.hidden_size,
                       num_layers=cfg.num_layers, bidirectional=cfg.bidirectional, dropout=cfg.dropout,
                       task=bundle.task, num_outputs=bundle.num_outputs, score=cfg.score).validate()


# ---------------------------------------------------------------------------- tensors
class _Prepared:
    """A split as tensors, inputs normalized, targets in training units, loss weights per step."""

    def __init__(self, bundle: DatasetBundle, split: Split, device: torch.device) -> None:
        task = bundle.task
        self.n = len(split)
        self.lengths = torch.as_tensor(split.lengths, dtype=torch.int64)
        if task == "seq2seq":
            self.x = torch.as_tensor(split.x, dtype=torch.int64)
            y = torch.as_tensor(split.y, dtype=torch.int64)
            self.tgt_in = torch.cat([torch.full((self.n, 1), BOS, dtype=torch.int64), y[:, :-1]], 1)
            self.y = y.masked_fill(y == PAD, IGNORE_INDEX)
            self.y_raw = split.y
        else:
            x = split.x
            if bundle.normalization is not None:
                x = bundle.normalization.apply(x)
            valid = valid_step_mask(split.lengths, split.x.shape[1])
            x = np.where(valid[..., None], x, 0.0).astype(np.float32)
            self.x = torch.as_tensor(x)
            keep = valid if split.mask is None else valid & split.mask
            self.keep = torch.as_tensor(keep)
            if task in ("regress", "forecast"):
                y = split.y
                if bundle.target_normalization is not None:
                    y = bundle.target_normalization.apply(y)
                self.y = torch.as_tensor(np.asarray(y, dtype=np.float32))
            elif task == "label":
                self.y = torch.as_tensor(np.where(keep, split.y, IGNORE_INDEX).astype(np.int64))
            else:
                self.y = torch.as_tensor(split.y, dtype=torch.int64)
        self.device = device

    def batch(self, idx: np.ndarray) -> dict[str, torch.Tensor]:
        ix = torch.as_tensor(idx)
        lengths = self.lengths[ix]
        t = int(lengths.max())  # trim padding no sequence in this batch uses
        out = {"lengths": lengths}
        if hasattr(self, "tgt_in"):
            out.update(x=self.x[ix, :t], tgt_in=self.tgt_in[ix], y=self.y[ix])
        else:
            y = self.y[ix]
            out.update(x=self.x[ix, :t], y=y[:, :t] if y.dim() > 1 else y, keep=self.keep[ix, :t])
        return {k: v.to(self.device) for k, v in out.items()}


def class_weights(bundle: DatasetBundle) -> torch.Tensor | None:
    """Per-class loss weights for event labelling (metric ``event_f1``): rare events would
    otherwise be learnt as "never". Inverse train frequency (balanced classes), mean 1."""
    if bundle.task != "label" or bundle.metric != "event_f1":
        return None
    y = bundle.train.y[valid_step_mask(bundle.train.lengths, bundle.train.x.shape[1])]
    counts = np.bincount(y[y >= 0], minlength=bundle.num_outputs).astype(np.float64)
    w = 1.0 / np.maximum(counts, 1.0)
    return torch.as_tensor(w / w.mean(), dtype=torch.float32)


def _loss(model: nn.Module, task: str, b: dict[str, torch.Tensor], weight: torch.Tensor | None = None) -> torch.Tensor:
    if task == "seq2seq":
        logits = model(b["x"], b["lengths"], b["tgt_in"])                       # [B, U, V]
        return nn.functional.cross_entropy(logits.flatten(0, 1), b["y"].flatten(), ignore_index=IGNORE_INDEX)
    out, _ = model(b["x"], b["lengths"])
    if task == "classify":
        return nn.functional.cross_entropy(out, b["y"])                         # out [B, C]
    if task == "label":
        return nn.functional.cross_entropy(out.flatten(0, 1), b["y"].flatten(), weight=weight,
                                           ignore_index=IGNORE_INDEX)
    keep = b["keep"].unsqueeze(-1).to(out.dtype)                                # [B, T, 1]
    return ((out - b["y"]) ** 2 * keep).sum() / (keep.sum() * out.shape[-1]).clamp(min=1)


@torch.no_grad()
def predict(model: nn.Module, bundle: DatasetBundle, split: Split, *, device: torch.device | str = "cpu",
            batch_size: int = 256, target_scale: bool = False) -> np.ndarray:
    """Model outputs for a whole split, as NumPy (classes / values in data units / token ids).

    ``target_scale``: outputs are in normalized target units (during training) and are mapped
    back to data units here.
    """
    device = torch.device(device)
    model.eval()
    prep = _Prepared(bundle, split, device)
    outs = []
    for start in range(0, prep.n, batch_size):
        idx = np.arange(start, min(start + batch_size, prep.n))
        b = prep.batch(idx)
        if bundle.task == "seq2seq":
            tokens = model.greedy(b["x"], b["lengths"], bundle.max_len).cpu().numpy()
            pad = np.zeros((len(idx), bundle.max_len), dtype=np.int64)
            pad[:, :tokens.shape[1]] = tokens
            outs.append(pad)
            continue
        out, _ = model(b["x"], b["lengths"])
        out = out.float().cpu().numpy()
        if bundle.task in ("classify", "label"):
            out = out.argmax(-1)
        if out.ndim >= 2 and out.shape[1] < split.x.shape[1]:  # restore the padding trimmed per batch
            full = np.zeros((out.shape[0], split.x.shape[1], *out.shape[2:]), dtype=out.dtype)
            full[:, :out.shape[1]] = out
            out = full
        outs.append(out)
    pred = np.concatenate(outs)
    if target_scale and bundle.target_normalization is not None:
        pred = bundle.target_normalization.invert(pred)
    return pred


def evaluate(model: nn.Module, bundle: DatasetBundle, split: Split, *, device: torch.device | str = "cpu",
             target_scale: bool = False) -> dict[str, float]:
    """Every metric of the bundle's task on one split (see :mod:`edgelstm.training.metrics`)."""
    pred = predict(model, bundle, split, device=device, target_scale=target_scale)
    if bundle.task == "seq2seq":
        return M.sequences(pred, split.y)
    if bundle.task in ("classify", "label"):
        y = split.y
        if bundle.task == "label":
            valid = valid_step_mask(split.lengths, split.x.shape[1])
            if split.mask is not None:
                valid &= split.mask
            y = np.where(valid, y, IGNORE_INDEX)
        return M.classification(pred, y)
    keep = valid_step_mask(split.lengths, split.x.shape[1])
    if split.mask is not None:
        keep &= split.mask
    out = M.regression(pred, split.y, keep)
    if bundle.task == "forecast" and split.x.shape[-1] == split.y.shape[-1]:
        # persistence baseline (predict x[t+1] = x[t]): a forecaster must beat it to be useful
        out["rmse_persistence"] = M.regression(split.x, split.y, keep)["rmse"]
    return out


def fold_target_scale(model: nn.Module, bundle: DatasetBundle) -> None:
    """Make a regression/forecast head emit data units: ``W' = diag(std) W``, ``b' = std*b + mean``."""
    norm = bundle.target_normalization
    if norm is None or bundle.task not in ("regress", "forecast"):
        return
    head = model.head
    std = torch.as_tensor(norm.std, dtype=head.weight.dtype, device=head.weight.device)
    mean = torch.as_tensor(norm.mean, dtype=head.weight.dtype, device=head.weight.device)
    with torch.no_grad():
        head.weight.mul_(std.unsqueeze(1))
        head.bias.mul_(std).add_(mean)


# ---------------------------------------------------------------------------- loop
def train(bundle: DatasetBundle, cfg: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train ``cfg.family`` on ``bundle``; return the best model (by validation metric) and its figures."""
    cfg.validate()
    device = resolve_device(cfg.device)
    mcfg = model_config_for(bundle, cfg)
    torch.manual_seed(cfg.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(cfg.seed)
    model = build_model(mcfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max" if M.higher_is_better(bundle.metric) else "min", factor=0.5, patience=max(2, cfg.patience // 2))
    train_split = bundle.train if cfg.max_train is None else bundle.train.subset(slice(0, cfg.max_train))
    train_data = _Prepared(bundle, train_split, device)
    weight = class_weights(bundle)
    if weight is not None:
        weight = weight.to(device)
    rng = np.random.default_rng(cfg.seed)
    metric = bundle.metric
    sign = 1.0 if M.higher_is_better(metric) else -1.0
    best_score, best_state, best_epoch, best_val = -math.inf, None, 0, {}
    history: list[dict[str, float]] = []
    n_batches = math.ceil(train_data.n / cfg.batch_size)
    t_start = time.perf_counter()
    bar = _progress(total=cfg.epochs * n_batches, enabled=progress, desc=f"{cfg.family} on {bundle.name}",
                    epochs=cfg.epochs)
    stale = 0
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = rng.permutation(train_data.n)
            total, count = 0.0, 0
            for k in range(n_batches):
                b = train_data.batch(order[k * cfg.batch_size:(k + 1) * cfg.batch_size])
                loss = _loss(model, bundle.task, b, weight)
                if not torch.isfinite(loss):
                    raise UsageError("training", "loss became NaN or Inf", expected="a finite loss",
                                     got=f"{float(loss)} at epoch {epoch}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                opt.step()
                total += loss.item() * len(b["lengths"])
                count += len(b["lengths"])
                bar.update(1)
            val = evaluate(model, bundle, bundle.val, device=device, target_scale=True)
            score = sign * val[metric]
            history.append({"epoch": epoch, "train_loss": total / count, "lr": opt.param_groups[0]["lr"],
                            **{f"val_{k}": v for k, v in val.items()}})
            bar.epoch_end(epoch, total / count, metric, val[metric])
            log.info("epoch %d loss %.5f val %s %.5f", epoch, total / count, metric, val[metric])
            sched.step(val[metric])
            if score > best_score:
                best_score, best_epoch, best_val, stale = score, epoch, val, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
                    bar.stopped(f"early stop at epoch {epoch}: no validation gain for {cfg.patience} epochs "
                                f"(best epoch {best_epoch})")
                    break
            if cfg.stop_at is not None and score >= sign * cfg.stop_at:
                log.info("validation %s reached %s at epoch %d", metric, cfg.stop_at, epoch)
                bar.stopped(f"validation {metric} reached {cfg.stop_at} at epoch {epoch}")
                break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model = model.to("cpu").eval()
    fold_target_scale(model, bundle)
    test = evaluate(model, bundle, bundle.test)
    seconds = time.perf_counter() - t_start
    figures: dict[str, Any] = {
        "metric": metric, f"val_{metric}": best_val[metric], f"test_{metric}": test[metric],
        **{f"val_{k}": v for k, v in best_val.items()}, **{f"test_{k}": v for k, v in test.items()},
        "best_epoch": best_epoch, "epochs_run": len(history), "train_sequences": train_data.n, "train_seconds": round(seconds, 2),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    return TrainResult(model=model, model_config=mcfg, metrics=figures, history=history, best_epoch=best_epoch,
                       seconds=seconds)


class _NoBar:
    """No progress output (``progress=False``)."""

    def update(self, n: int = 1) -> None: ...
    def epoch_end(self, epoch: int, loss: float, metric: str, value: float) -> None: ...
    def stopped(self, reason: str) -> None: ...
    def close(self) -> None: ...


class _EpochLines(_NoBar):
    """Not a terminal (a log file, CI, a pipe): one line per epoch on stderr, no redraws."""

    def __init__(self, epochs: int, desc: str):
        self.epochs, self.desc, self.t0 = epochs, desc, time.perf_counter()

    def epoch_end(self, epoch: int, loss: float, metric: str, value: float) -> None:
        print(f"{self.desc}: epoch {epoch}/{self.epochs} loss {loss:.4f} val {metric} {value:.4f} "
              f"({time.perf_counter() - self.t0:.1f} s)", file=sys.stderr, flush=True)

    def stopped(self, reason: str) -> None:
        print(f"{self.desc}: {reason}", file=sys.stderr, flush=True)


class _Bar(_NoBar):
    """A terminal: a tqdm bar over batches, completed (100 %) when training stops early."""

    def __init__(self, total: int, desc: str):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, unit="batch", leave=True, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def epoch_end(self, epoch: int, loss: float, metric: str, value: float) -> None:
        self.bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}", **{f"val_{metric}": f"{value:.4f}"})

    def stopped(self, reason: str) -> None:
        self.bar.total = self.bar.n  # the work that remains is none: show the bar full
        self.bar.set_description_str(f"{self.bar.desc} ({reason})")
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _progress(total: int, enabled: bool, desc: str, epochs: int = 0):
    """A bar on a terminal when tqdm is installed, else a line per epoch; nothing when disabled."""
    if not enabled:
        return _NoBar()
    from edgelstm.extras import module_available

    if sys.stderr.isatty() and module_available("tqdm"):
        return _Bar(total, desc)
    return _EpochLines(epochs, desc)
