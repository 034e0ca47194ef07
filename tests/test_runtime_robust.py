"""Robustness of edgelstm.runtime against empty inputs, inconsistent manifests and bad options.

Each case once killed the process (onnxruntime abort on an empty batch), printed a result for no
data, or escaped as a bare TypeError / KeyError / IndexError; each now raises a typed error that
names the argument, what was expected and what was given.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edgelstm import runtime
from edgelstm.cli import main
from edgelstm.cli.run import _run_stream
from edgelstm.errors import InputError, ManifestError, UsageError
from edgelstm.runtime.seq2seq import MAX_GENERATE_LEN

sys.path.insert(0, str(Path(__file__).parent))
from graphs import RecurrentSpec, Seq2SeqSpec, build_recurrent, save, save_seq2seq  # noqa: E402
from clitools import run_cli  # noqa: E402

F = 4  # RecurrentSpec's default feature size
STATE = [1, "batch", 8]  # RecurrentSpec's default state shape (1 layer, hidden 8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = save(build_recurrent(RecurrentSpec()), tmp_path_factory.mktemp("robust") / "lstm.onnx")
    return runtime.load(path, device="cpu")


# ------------------------------------------------------------------------------ empty inputs
@pytest.mark.parametrize("shape, match", [
    ((0, 3, F), r"x \| empty batch; expected at least one sequence.*got shape \(0, 3, 4\)"),
    ((1, 0, F), r"x \| no time steps; expected \[batch, time, features\] with time >= 1, got shape \(1, 0, 4\)"),
    ((0, 0, F), r"x \| empty batch"),
], ids=["batch0", "time0", "batch0-time0"])
def test_run_rejects_empty_x(model, shape, match):
    with pytest.raises(InputError, match=match):
        model.run(np.zeros(shape, np.float32))


def test_run_rejects_empty_x_passed_by_name(model):
    with pytest.raises(InputError, match=r"x \| empty batch"):
        model.run(inputs={"x": np.zeros((0, 3, F), np.float32)})


@pytest.mark.parametrize("lengths, match", [
    ([0, 3], r"lengths \| length out of range; expected 1\.\.3, got min 0, max 3"),
    ([3, 4], r"lengths \| length out of range; expected 1\.\.3, got min 3, max 4"),
], ids=["zero", "longer-than-time"])
def test_run_rejects_lengths_out_of_range(model, lengths, match):
    with pytest.raises(InputError, match=match):
        model.run(np.zeros((2, 3, F), np.float32), lengths=lengths)


@pytest.mark.parametrize("call, match", [
    (lambda s: s.feed(np.zeros((1, 0, F), np.float32)), r"chunk \| no time steps.*got shape \(1, 0, 4\)"),
    (lambda s: s.feed(np.zeros((0, 2, F), np.float32)), r"chunk \| empty batch"),
    (lambda s: s.step(np.zeros((0, F), np.float32)), r"frame \| empty batch.*\[batch, features\]"),
    (lambda s: s.feed(np.zeros((1, 2, F), np.float32), lengths=[0]), r"lengths \| length out of range"),
], ids=["feed-time0", "feed-batch0", "step-batch0", "feed-lengths0"])
def test_stream_rejects_empty_input(model, call, match):
    stream = model.stream(batch=1)
    with pytest.raises(InputError, match=match):
        call(stream)
    assert stream.steps == 0  # nothing ran: the state is untouched


# ------------------------------------------------------------------------------ NaN names the argument
@pytest.mark.parametrize("call, match", [
    (lambda s: s.step(np.full((1, F), np.nan, np.float32)), r"^frame \| input contains NaN or Inf"),
    (lambda s: s.step(np.full((1, F), np.nan, np.float64)), r"^frame \| input contains NaN or Inf"),  # slow path
    (lambda s: s.feed(np.full((1, 2, F), np.inf, np.float32)), r"^chunk \| input contains NaN or Inf"),
], ids=["step", "step-float64", "feed"])
@pytest.mark.filterwarnings("ignore:frame. float64 input cast:RuntimeWarning")  # the documented cast
def test_stream_nan_error_names_the_argument(model, call, match):
    with pytest.raises(InputError, match=match):
        call(model.stream(batch=1))


@pytest.mark.filterwarnings("ignore:frame. float64 input cast:RuntimeWarning")  # the documented cast
def test_stream_nan_pass_overrides_a_raising_model(model):
    # the stream's own policy applies on the slow path too (float64 input is cast there): no raise
    # (onnxruntime's LSTM kernel does not necessarily propagate NaN, so only the shape is checked)
    out = model.stream(batch=1, nan="pass").step(np.full((1, F), np.nan, np.float64))
    assert out["logits"].shape == (1, 3)


# ------------------------------------------------------------------------------ CLI
_cli = run_cli


@pytest.mark.parametrize("shape, stream, match", [
    ((0, 3, F), False, r"x \| empty batch"),
    ((1, 0, F), False, r"x \| no time steps"),
    ((1, 0, F), True, r"x \| nothing to stream; expected batch >= 1 and time >= 1, got shape \(1, 0, 4\)"),
    ((0, 3, F), True, r"x \| nothing to stream"),
], ids=["batch0", "time0", "stream-time0", "stream-batch0"])
def test_cli_run_empty_data_exits_with_input_error(model, tmp_path, capsys, shape, stream, match):
    data = tmp_path / "b0.npz"
    np.savez(data, x=np.zeros(shape, np.float32))
    code, out, err = _cli(["run", str(model.path), "--input", str(data)] + (["--stream"] if stream else []), capsys)
    assert code == InputError.exit_code, err
    assert re.search(match, err), err
    assert "sequence 0" not in out  # no label printed for no data


def test_run_stream_helper_rejects_empty_and_wrong_rank(model):
    with pytest.raises(InputError, match=r"x \| nothing to stream"):
        _run_stream(model, np.zeros((1, 0, F), np.float32), None, None)
    with pytest.raises(InputError, match=r"x \| wrong rank for --stream; expected \[batch, time, features\]"):
        _run_stream(model, np.zeros(F, np.float32), None, None)


# ------------------------------------------------------------------------------ manifest vs graph states
@pytest.mark.parametrize("states, match", [
    ([], r"graph state input 'h_in' is not declared in the manifest's states; "
         r"expected a state \{input: 'h_in', output: 'h_out'\}, got states \[\]"),
    ([{"input": "h_in", "output": "h_out", "shape": STATE}],
     r"graph state input 'c_in' is not declared in the manifest's states"),
    ([{"input": "h_in", "output": "c_out", "shape": STATE}, {"input": "c_in", "output": "c_out", "shape": STATE}],
     r"state 'c_in': output 'c_out' is already the output of state 'h_in'; expected a distinct output per state"),
    ([{"input": "h_in", "output": "logits", "shape": STATE}, {"input": "c_in", "output": "c_out", "shape": STATE}],
     r"state 'h_in': output 'logits' does not match the input's dtype and shape; "
     r"expected float32 \[1, 'batch', 8\], got float32 \['batch', 3\]"),
    ([{"input": "h_in", "output": "nope", "shape": STATE}, {"input": "c_in", "output": "c_out", "shape": STATE}],
     r"state output 'nope' is not among the outputs; expected \['c_out', 'h_out', 'logits'\], got nope"),
    ([{"input": "h_in", "output": "h_out", "shape": STATE}, {"input": "h_in", "output": "c_out", "shape": STATE}],
     r"state 'h_in' is declared twice"),
], ids=["no-states", "missing-c", "output-renamed-to-other-state", "output-wrong-shape", "output-unknown",
        "input-twice"])
def test_manifest_states_must_match_the_graph(tmp_path, states, match):
    path = save(build_recurrent(RecurrentSpec(manifest_overrides={"states": states})), tmp_path / "m.onnx")
    with pytest.raises(ManifestError, match=match):
        runtime.load(path)


# ------------------------------------------------------------------------------ options
@pytest.mark.parametrize("threads", ["a", -1, 1.5, True], ids=["str", "negative", "float", "bool"])
def test_threads_must_be_a_non_negative_int(model, threads):
    with pytest.raises(UsageError, match=re.escape("threads | intra-op thread count must be an integer >= 0 or None; "
                                                   "expected an int >= 1, or 0 / None for onnxruntime's default")):
        runtime.load(model.path, threads=threads)


@pytest.mark.parametrize("threads,kept", [(np.int64(1), 1), (0, 0), (None, None)], ids=["np-int", "zero", "none"])
def test_threads_valid_values_load(model, threads, kept):
    """0 and None both mean onnxruntime's default: one rule for load, session_options and the CLI."""
    assert runtime.load(model.path, device="cpu", threads=threads).threads == kept


def test_generate_max_len_is_capped(tmp_path):
    enc, _ = save_seq2seq(Seq2SeqSpec(eos_bias=50.0), tmp_path)  # stops at once: fast
    s2s = runtime.load(enc, device="cpu")
    with pytest.raises(UsageError, match=rf"max_len \| too many output tokens; expected 1\.\.{MAX_GENERATE_LEN}, "
                                         r"got 1000000"):
        s2s.generate([[3, 4]], max_len=10**6)
    assert len(s2s.generate([[3, 4]], max_len=MAX_GENERATE_LEN).tokens) == 1  # the bound itself is allowed
