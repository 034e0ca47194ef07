"""Train and write a run directory: what ``edgelstm train`` and the demo call."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from edgelstm.checkpoint import RunConfig, refuse_foreign_dir, save_run
from edgelstm.data import DatasetBundle, load_dataset
from edgelstm.errors import RunDirExistsError
from edgelstm.fileio import write_text_atomic
from edgelstm.training.loop import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse a non-empty ``out_dir`` before any work unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunDirExistsError(str(out), "exists and is not a directory", expected="a directory path", got="a file")
    refuse_foreign_dir(out)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RunDirExistsError(str(out), "already holds a run; pass --overwrite to replace it")
    return out


def run_config_for(result: TrainResult, bundle: DatasetBundle, cfg: TrainConfig, dataset: str) -> RunConfig:
    return RunConfig.for_model(
        result.model_config, dataset=dataset,
        normalization=bundle.normalization.to_dict() if bundle.normalization is not None else None,
        labels=bundle.labels, vocab=bundle.vocab, metrics=result.metrics, seed=cfg.seed,
        frame_rate_hz=bundle.frame_rate_hz,
        extra={"training": asdict(cfg), "data": bundle.summary(), "metric": bundle.metric,
               "special_tokens": bundle.extra.get("special_tokens") if bundle.task == "seq2seq" else None},
    )


def train_run(dataset: str, cfg: TrainConfig, out_dir: str | Path, *, overwrite: bool = False,
              progress: bool = True, bundle: DatasetBundle | None = None) -> tuple[TrainResult, Path]:
    """Load ``dataset`` (unless ``bundle`` is given), train, write the run directory; return both."""
    out = check_out_dir(out_dir, overwrite)
    cfg.validate()
    if bundle is None:
        bundle = load_dataset(dataset, seed=cfg.seed)
    result = train(bundle, cfg, progress=progress)
    rc = run_config_for(result, bundle, cfg, dataset)
    save_run(out, result.model, rc, metrics=result.metrics, overwrite=overwrite)
    write_text_atomic(out / HISTORY_FILE, json.dumps(result.history, indent=1) + "\n")
    return result, out
