"""The training loop on tiny subsets: every family/task, determinism, early stopping, run dirs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from edgelstm.checkpoint import load_run
from edgelstm.data import load_dataset
from edgelstm.errors import RunDirExistsError, UnknownChoiceError, UsageError
from edgelstm.training import HISTORY_FILE, TrainConfig, evaluate, predict, train, train_run
from edgelstm.training.loop import class_weights, fold_target_scale, model_config_for

torch.set_num_threads(1)

_CACHE: dict = {}


def tiny(name: str, n_train: int = 48, n_eval: int = 16):
    """A bundle cut to a few sequences so one epoch takes well under a second."""
    key = (name, n_train, n_eval)
    if key not in _CACHE:
        b = load_dataset(name, seed=0)
        b.train = b.train.subset(slice(0, n_train))
        b.val = b.val.subset(slice(0, n_eval))
        b.test = b.test.subset(slice(0, n_eval))
        _CACHE[key] = b
    return _CACHE[key]


def cfg(family: str, **kw) -> TrainConfig:
    base = dict(family=family, hidden_size=8, epochs=1, batch_size=16, emb_size=8)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("family,dataset,metric", [
    ("lstm", "digits", "accuracy"),
    ("peephole", "timing", "event_f1"),
    ("gru", "sine", "rmse"),
    ("lstm", "airline", "rmse"),
    ("attention", "dates", "exact_match"),
    ("attention", "digits", "accuracy"),
], ids=["lstm-digits", "peephole-timing", "gru-sine", "lstm-airline", "attention-dates", "attention-pool-digits"])
def test_every_family_trains_and_reports(family, dataset, metric):
    b = tiny(dataset)
    r = train(b, cfg(family), progress=False)
    m = r.metrics
    assert m["metric"] == metric and m["epochs_run"] == 1 and m["best_epoch"] == 1
    for split in ("val", "test"):
        v = m[f"{split}_{metric}"]
        assert math.isfinite(v)
        if metric != "rmse":
            assert 0.0 <= v <= 1.0
    assert m["parameters"] == sum(p.numel() for p in r.model.parameters())
    assert not r.model.training and next(r.model.parameters()).device.type == "cpu"


def test_same_seed_same_weights_other_seed_differs():
    b = tiny("digits")
    a = train(b, cfg("gru", epochs=2, seed=3), progress=False).model.state_dict()
    again = train(b, cfg("gru", epochs=2, seed=3), progress=False).model.state_dict()
    other = train(b, cfg("gru", epochs=2, seed=4), progress=False).model.state_dict()
    for k in a:
        assert torch.equal(a[k], again[k]), k
    assert any(not torch.equal(a[k], other[k]) for k in a)


def test_digits_lstm_learns():
    # 400 training images, 6 epochs: far above the 10 % of chance (the demo trains on all of them)
    b = tiny("digits", n_train=400, n_eval=100)
    r = train(b, cfg("lstm", hidden_size=32, epochs=6, lr=1e-2), progress=False)
    assert r.metrics["test_accuracy"] > 0.6


def test_early_stopping_keeps_best_epoch():
    b = tiny("digits")
    # a learning rate too small to change the metric: epoch 1 stays best, patience 2 stops at 3
    r = train(b, cfg("lstm", epochs=10, lr=1e-12, patience=2), progress=False)
    assert r.metrics["epochs_run"] == 3 and r.best_epoch == 1
    assert r.metrics["val_accuracy"] == r.history[0]["val_accuracy"]


def test_best_checkpoint_is_the_best_validation_epoch():
    b = tiny("sine")
    r = train(b, cfg("gru", epochs=4, lr=1e-2), progress=False)
    best = min(h["val_rmse"] for h in r.history)
    assert r.metrics["val_rmse"] == pytest.approx(best, rel=1e-6)  # recomputed on the folded head
    assert r.history[r.best_epoch - 1]["val_rmse"] == best


def test_forecast_head_predicts_in_data_units():
    b = tiny("airline")
    r = train(b, cfg("lstm", epochs=2), progress=False)
    folded = predict(r.model, b, b.test)
    # undo the fold on a copy: its outputs, mapped back with the target scale, must agree.
    # float32 affine maps on values ~ 400: 1e-4 relative covers the rounding of both paths
    import copy
    raw = copy.deepcopy(r.model)
    std = torch.as_tensor(b.target_normalization.std)
    mean = torch.as_tensor(b.target_normalization.mean)
    with torch.no_grad():
        raw.head.bias.sub_(mean).div_(std)
        raw.head.weight.div_(std.unsqueeze(1))
    unfolded = predict(raw, b, b.test, target_scale=True)
    np.testing.assert_allclose(folded, unfolded, rtol=1e-4, atol=1e-3)
    assert 50 < float(np.median(folded[b.test.mask])) < 1000  # thousands of passengers, not z-scores


def test_fold_target_scale_is_identity_for_classifiers():
    b = tiny("digits")
    r = train(b, cfg("lstm"), progress=False)
    before = {k: v.clone() for k, v in r.model.state_dict().items()}
    fold_target_scale(r.model, b)
    assert all(torch.equal(before[k], v) for k, v in r.model.state_dict().items())


def test_class_weights_favour_rare_events():
    w = class_weights(load_dataset("timing"))
    assert w is not None and w[1] > 5 * w[0] and float(w.mean()) == pytest.approx(1.0)
    assert class_weights(load_dataset("digits")) is None


def test_evaluate_dates_exact_match_of_targets():
    b = tiny("dates")
    r = train(b, cfg("attention"), progress=False)
    m = evaluate(r.model, b, b.test)
    assert set(m) == {"exact_match", "char_accuracy"}
    assert predict(r.model, b, b.test).shape == (len(b.test), b.max_len)


@pytest.mark.parametrize("change,exc,match", [
    (dict(lr=0.0), UsageError, r"--lr \| must be a positive number; expected > 0, got 0.0"),
    (dict(hidden_size=0), UsageError, r"--hidden-size \| must be a positive integer"),
    (dict(device="tpu"), UnknownChoiceError, r"--device \| unknown training device; expected \['cpu', 'cuda'\], got tpu"),
], ids=["lr", "hidden", "device"])
def test_bad_train_config(change, exc, match):
    with pytest.raises(exc, match=match):
        train(tiny("digits"), cfg("lstm", **change), progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_unavailable_is_a_typed_error():
    with pytest.raises(UsageError, match=r"--device \| CUDA is not available"):
        train(tiny("digits"), cfg("lstm", device="cuda"), progress=False)


@pytest.mark.parametrize("family,dataset,match", [
    ("lstm", "dates", r"--family \| data set 'dates' is seq2seq and needs the attention family; expected attention, got lstm"),
    ("attention", "sine", r"--family \| attention handles seq2seq or classify data; 'sine' is forecast"),
], ids=["lstm-on-seq2seq", "attention-on-forecast"])
def test_family_and_task_must_fit(family, dataset, match):
    with pytest.raises(UsageError, match=match):
        model_config_for(tiny(dataset), cfg(family))


def test_train_run_writes_a_loadable_run_dir(tmp_path):
    b = tiny("digits")
    out = tmp_path / "run"
    r, path = train_run("digits", cfg("peephole"), out, progress=False, bundle=b)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", HISTORY_FILE, "metrics.json", "model.safetensors"]
    conf = json.loads((out / "config.json").read_text())
    assert conf["family"] == "peephole" and conf["task"] == "classify" and conf["dataset"] == "digits"
    assert conf["labels"] == [str(i) for i in range(10)] and len(conf["normalization"]["mean"]) == 8
    assert conf["seed"] == 0 and "torch" in conf["versions"] and conf["extra"]["training"]["hidden_size"] == 8
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == r.metrics["test_accuracy"]
    model, rc = load_run(out)
    np.testing.assert_array_equal(predict(model, b, b.test), predict(r.model, b, b.test))
    with pytest.raises(RunDirExistsError, match="already holds a run; pass --overwrite"):
        train_run("digits", cfg("peephole"), out, progress=False, bundle=b)
    train_run("digits", cfg("lstm"), out, progress=False, bundle=b, overwrite=True)
    assert json.loads((out / "config.json").read_text())["family"] == "lstm"


def test_user_npz_regression_and_text_model_train(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6, 2)).astype(np.float32)
    y = 100 + 10 * x.sum(-1, keepdims=True)          # per-step targets far from zero mean
    np.savez(tmp_path / "r.npz", x=x, y=y, lengths=rng.integers(2, 7, size=40))
    b = load_dataset(f"npz:{tmp_path / 'r.npz'}")
    r = train(b, cfg("lstm", epochs=2), progress=False)
    assert b.task == "regress" and math.isfinite(r.metrics["test_rmse"])
    pred = predict(r.model, b, b.test)
    assert pred.shape == b.test.y.shape and 50 < float(np.median(pred)) < 150  # data units (fold)

    (tmp_path / "t.txt").write_text("abcabcabd " * 100)
    b = load_dataset(f"text:{tmp_path / 't.txt'}")
    r = train(b, cfg("gru", epochs=1), progress=False)
    assert r.model_config.input_size == len(b.vocab) == r.model_config.num_outputs
    assert 0.0 <= r.metrics["test_accuracy"] <= 1.0
