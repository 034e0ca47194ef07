"""``edgelstm train``, ``models``, ``datasets`` and ``demo`` through the CLI entry point (in-process)."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from edgelstm.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _csv(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["label," + ",".join(f"t{i}" for i in range(6))]
    for i in range(40):
        up = i % 2
        n = 4 + i % 3
        vals = np.cumsum(rng.normal(1 if up else -1, 0.3, n))
        rows.append(",".join(["up" if up else "down", *(f"{v:.3f}" for v in vals), *([""] * (6 - n))]))
    p = tmp_path / "seqs.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_train_user_csv_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(["train", "--family", "gru", "--dataset", f"csv:{_csv(tmp_path)}", "--out", str(out),
                               "--hidden", "8", "--epochs", "2", "--threads", "1", "--quiet"], capsys)
    assert code == 0
    assert stdout.startswith("gru on csv:") and "test accuracy" in stdout and str(out) in stdout
    conf = json.loads((out / "config.json").read_text())
    assert conf["labels"] == ["down", "up"] and conf["model"]["input_size"] == 1 and conf["model"]["hidden_size"] == 8
    assert len(json.loads((out / "history.json").read_text())) == 2


def test_train_progress_off_a_terminal_is_one_line_per_epoch(tmp_path, capsys):
    code, stdout, stderr = run_cli(["train", "--family", "lstm", "--dataset", f"csv:{_csv(tmp_path)}",
                                    "--out", str(tmp_path / "r"), "--hidden", "4", "--epochs", "2"], capsys)
    lines = stderr.splitlines()
    assert code == 0 and "\r" not in stderr and " loss " not in stdout
    assert [ln.split(" loss ")[0] for ln in lines] == [f"lstm on csv:{tmp_path}/seqs.csv: epoch {e}/2" for e in (1, 2)]
    assert all(" val accuracy " in ln for ln in lines)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_train_progress_bar_on_a_terminal_completes_when_stopped_early(monkeypatch):
    from edgelstm.training import loop

    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    bar = loop._progress(total=10, enabled=True, desc="lstm on digits", epochs=5)
    bar.update(4)
    bar.epoch_end(2, 0.5, "accuracy", 0.9)
    bar.stopped("early stop at epoch 2")
    bar.close()
    final = term.getvalue().split("\r")[-1]
    assert "100%" in final and "4/4" in final and "early stop at epoch 2" in final and "val_accuracy=0.9000" in final


@pytest.mark.parametrize("args,code,match", [
    (["--family", "transformer", "--dataset", "digits"], 2,
     "error: --family | unknown model family; expected ['lstm', 'peephole', 'gru', 'attention'], got transformer"),
    (["--family", "lstm", "--dataset", "mnist"], 2, "error: dataset | unknown data set; expected one of ['digits'"),
    (["--family", "lstm", "--dataset", "dates"], 2, "needs the attention family"),
    (["--family", "lstm", "--dataset", "digits", "--lr", "-1"], 2, "error: --lr | value out of range; expected 1e-12..1000.0, got -1.0"),
], ids=["family", "dataset", "task-mismatch", "lr"])
def test_train_bad_options(tmp_path, capsys, args, code, match):
    got, _, err = run_cli(["train", *args, "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet"], capsys)
    assert got == code and match in err
    assert not (tmp_path / "r").exists()


def test_train_bad_csv_exits_3_naming_line_and_column(tmp_path, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("label,a,b\nup,1,2\ndown,3,oops\n")
    code, _, err = run_cli(["train", "--family", "lstm", "--dataset", f"csv:{p}", "--out", str(tmp_path / "r")], capsys)
    assert code == 3 and f"error: {p}:3 column 3 ('b') | not a number; expected a decimal number, got 'oops'" in err


def test_train_refuses_existing_run_dir(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text("{}")
    code, _, err = run_cli(["train", "--family", "lstm", "--dataset", "digits", "--out", str(out)], capsys)
    assert code == 2 and "already holds a run; pass --overwrite" in err
    assert (out / "config.json").read_text() == "{}"


def test_models_lists_every_family(capsys):
    code, out, _ = run_cli(["models", "--json", "-"], capsys)
    rows = json.loads(out)["families"]
    assert code == 0 and [r["family"] for r in rows] == ["lstm", "peephole", "gru", "attention"]
    assert {"seq2seq", "classify"} <= set(rows[3]["tasks"])


def test_datasets_lists_and_describes(tmp_path, capsys):
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0 and all(n in out for n in ("digits", "airline", "sine", "timing", "dates", "csv:PATH"))
    code, out, _ = run_cli(["datasets", f"csv:{_csv(tmp_path)}", "--json", "-"], capsys)
    d = json.loads(out)
    assert code == 0 and d["task"] == "classify" and d["labels"] == ["down", "up"] and sum(d["sizes"].values()) == 40


def test_demo_stages_rows_and_report(tmp_path, monkeypatch, capsys):
    from edgelstm import demo
    monkeypatch.setattr(demo, "JOBS", [demo.DemoJob("lstm", "digits", "main", dict(hidden_size=8, epochs=1),
                                                    expect=0.95)])

    def stage_size(ctx):  # a later stage adds a column to every row
        for row in ctx.main_rows():
            row["fp32_kb"] = row["weights_kb"]

    monkeypatch.setattr(demo, "STAGES", [demo.STAGES[0], ("size", stage_size)])
    monkeypatch.setattr(demo, "QUICK", dict(demo.QUICK, max_train=64))
    code, out, _ = run_cli(["demo", "--out", str(tmp_path), "--quick", "--quiet"], capsys)
    assert code == 0
    assert "| family | dataset | role | metric | torch test |" in out and "| fp32 KiB |" in out
    report = json.loads((tmp_path / "report.json").read_text())
    row = report["rows"][0]
    assert row["family"] == "lstm" and row["fp32_kb"] == row["weights_kb"] > 0
    assert set(report["stage_seconds"]) == {"train", "size"} and "quality" not in row  # no bar in quick mode
    assert (tmp_path / "report.md").read_text().startswith("# edgelstm demo (quick)")
    assert (tmp_path / "runs" / "lstm-digits" / "model.safetensors").is_file()


def test_demo_exits_nonzero_when_a_quality_bar_fails(tmp_path, monkeypatch, capsys):
    from edgelstm import demo
    # one epoch on 64 images cannot reach 95 %: the bar must show FAIL and the exit code say so
    monkeypatch.setattr(demo, "JOBS", [demo.DemoJob("lstm", "digits", "main",
                                                    dict(hidden_size=4, epochs=1, max_train=64), expect=0.95)])
    code, out, err = run_cli(["demo", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 1 and "FAIL (< 0.95)" in out and "error: demo | 1 problem(s)" in err
