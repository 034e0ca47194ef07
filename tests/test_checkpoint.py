"""Run directories: atomic save, load without unpickling, precise errors."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch

from edgelstm.checkpoint import (CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, RunConfig, load_run, load_weights,
                                 save_run, sha256_file)
from edgelstm.errors import CheckpointError, RunDirExistsError, UsageError
from tiny import TINY, make_tiny, tiny_batch

torch.set_num_threads(1)


def _save(tmp_path, name="peephole-1x4", **kw):
    model = make_tiny(name, seed=3)
    rc = RunConfig.for_model(TINY[name], dataset="toy", labels=["a", "b", "c"], seed=3,
                             normalization={"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    run = save_run(tmp_path / "run", model, rc, {"accuracy": 0.5}, **kw)
    return model, rc, run


@pytest.mark.parametrize("name", ["lstm-2x6-bi", "peephole-1x4", "gru-1x4", "attention-s2s-1x8", "attention-clf-1x6-bi"])
def test_round_trip(tmp_path, name):
    model, rc, run = _save(tmp_path, name)
    assert sorted(p.name for p in run.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE])
    loaded, rc2 = load_run(run)
    assert not loaded.training and rc2.model == rc.model and rc2.labels == ["a", "b", "c"]
    assert rc2.metrics == {"accuracy": 0.5} and rc2.versions["torch"] == torch.__version__
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    x, lengths = tiny_batch(TINY[name])
    with torch.no_grad():
        model.eval()
        if TINY[name].task == "seq2seq":
            assert torch.equal(loaded.greedy(x, lengths), model.greedy(x, lengths))
        else:
            torch.testing.assert_close(loaded(x, lengths)[0], model(x, lengths)[0], rtol=0, atol=0)
    on_disk = json.loads((run / CONFIG_FILE).read_text())
    assert set(on_disk) >= {"family", "model", "task", "dataset", "normalization", "labels", "vocab", "metrics",
                            "seed", "versions", "frame_rate_hz"}
    assert json.loads((run / METRICS_FILE).read_text()) == {"accuracy": 0.5}


def test_existing_run_is_refused_unless_overwrite(tmp_path):
    _, rc, run = _save(tmp_path)
    before = sha256_file(run / WEIGHTS_FILE)
    with pytest.raises(RunDirExistsError, match=re.escape("run | already holds a run; pass overwrite")):
        save_run(run, make_tiny("peephole-1x4", seed=9), rc, {})
    assert sha256_file(run / WEIGHTS_FILE) == before
    save_run(run, make_tiny("peephole-1x4", seed=9), rc, {"accuracy": 0.9}, overwrite=True)
    assert sha256_file(run / WEIGHTS_FILE) != before
    assert load_run(run)[1].metrics == {"accuracy": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]          # no temp dirs left behind


def test_failed_save_leaves_nothing(tmp_path):
    rc = RunConfig.for_model(TINY["gru-1x4"])
    with pytest.raises(UsageError, match=re.escape("metrics | not JSON-serialisable")):
        save_run(tmp_path / "run", make_tiny("gru-1x4"), rc, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_model_and_config_must_agree(tmp_path):
    with pytest.raises(UsageError, match=re.escape("run_config.model | differs from the model's own config")):
        save_run(tmp_path / "run", make_tiny("gru-1x4"), RunConfig.for_model(TINY["lstm-1x4"]), {})


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_load_weights_from_torch_files(tmp_path, suffix):
    src, dst = make_tiny("lstm-1x4", seed=1), make_tiny("lstm-1x4", seed=2)
    path = tmp_path / f"w{suffix}"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    load_weights(dst, path)
    torch.testing.assert_close(dst.state_dict(), src.state_dict(), rtol=0, atol=0)


def test_mismatch_lists_missing_unexpected_misshaped(tmp_path):
    sd = make_tiny("lstm-1x4").state_dict()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(2, 2)
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"w\.pt \| weights do not fit the model: missing \[head\.bias\] \(1\); "
                                              r"unexpected \[extra\.weight\] \(1\); mis-shaped \[head\.weight \[2, 2\] "
                                              r"\(model \[3, 4\]\)\] \(1\)"):
        load_weights(make_tiny("lstm-1x4"), path)


class NotATensor:
    pass


@pytest.mark.parametrize("writer,name,match", [
    (lambda p: p.write_bytes(b"\x00garbage" * 10), "w.safetensors", "not a readable safetensors file"),
    (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), "w.pt", "not a readable PyTorch file"),
    (lambda p: torch.save({"obj": NotATensor()}, p), "w.pt", "holds objects other than tensors"),
    (lambda p: torch.save([torch.zeros(1)], p), "w.pt", "not a state_dict; expected a dict of name -> tensor, got list"),
    (lambda p: p.write_text("{}"), "w.json", r"unknown weights file type; expected \['.safetensors', '.pt', '.pth'\]"),
], ids=["corrupt-safetensors", "corrupt-pt", "pickled-object", "not-a-dict", "wrong-suffix"])
def test_corrupt_or_foreign_files(tmp_path, writer, name, match):
    path = tmp_path / name
    writer(path)
    with pytest.raises(CheckpointError, match=match):
        load_weights(make_tiny("lstm-1x4"), path)


@pytest.mark.parametrize("mutate,match", [
    (lambda run: (run / CONFIG_FILE).unlink(), "missing run config"),
    (lambda run: (run / CONFIG_FILE).write_text("{not json"), "run config is not valid JSON"),
    (lambda run: (run / WEIGHTS_FILE).unlink(), "no such weights file"),
    (lambda run: (run / WEIGHTS_FILE).write_bytes((run / WEIGHTS_FILE).read_bytes()[:-20]),
     "not a readable safetensors file"),
    (lambda run: _edit(run, lambda d: d["model"].update(hidden_size=5)), "weights do not fit the model"),
    (lambda run: _edit(run, lambda d: d.update(colour="blue")), r"unknown run config keys.*got \['colour'\]"),
    (lambda run: _edit(run, lambda d: d["model"].update(family="rnn")), r"bad model config: .*unknown family"),
    (lambda run: _edit(run, lambda d: d.update(task="label")), "family/task disagree with the model config"),
], ids=["no-config", "bad-json", "no-weights", "truncated-weights", "wrong-shape", "unknown-key",
        "unknown-family", "task-mismatch"])
def test_load_run_errors(tmp_path, mutate, match):
    _, _, run = _save(tmp_path)
    mutate(run)
    with pytest.raises(CheckpointError, match=match):
        load_run(run)


def _edit(run, fn):
    d = json.loads((run / CONFIG_FILE).read_text())
    fn(d)
    (run / CONFIG_FILE).write_text(json.dumps(d))


def test_missing_run_dir(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape("nope | no such run directory")):
        load_run(tmp_path / "nope")


def test_sha256_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"edgelstm" * 1000)
    assert sha256_file(p, chunk=7) == hashlib.sha256(b"edgelstm" * 1000).hexdigest()
    with pytest.raises(CheckpointError, match="no such file to hash"):
        sha256_file(tmp_path / "missing")
