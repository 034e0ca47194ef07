"""Training: one loop for every family and task, and the run-directory writer (imports torch)."""
from edgelstm.training.loop import TrainConfig, TrainResult, evaluate, model_config_for, predict, train
from edgelstm.training.run import HISTORY_FILE, train_run

__all__ = ["TrainConfig", "TrainResult", "evaluate", "model_config_for", "predict", "train", "train_run",
           "HISTORY_FILE"]
