"""The benchmark: time exported models with onnxruntime, measure the machine's floor, report.

Beside the runtime, not inside it: it times :mod:`edgelstm.runtime` through its public API and
bare ``InferenceSession.run`` calls. Part of the base install and torch-free at module level, so
``edgelstm bench`` runs on a device that has only the runtime.

May import: numpy, onnxruntime, the standard library, ``edgelstm.errors`` / ``manifest`` /
``fileio`` / ``units`` / ``extras`` and ``edgelstm.runtime``; torch (:mod:`.torch_driver`) and
matplotlib (:mod:`.plot`) only inside functions, behind :func:`edgelstm.extras.require`. Never
``edgelstm.cli``. Imported by ``edgelstm.cli.bench``, the demo and ``benchmarks/``.

Modules, one concern each:

* :mod:`.measure`: per-call timing, latency statistics, memory, the machine's environment;
* :mod:`.floor`: the graph's unavoidable matrix products and their time in NumPy/BLAS;
* :mod:`.cases`: a case (mode x batch x time), the settings, one result row;
* :mod:`.feeds`: inputs for one call, the state pairs, the provider plan;
* :mod:`.drivers`: :func:`~.drivers.bench_onnx` (bare session) and
  :func:`~.drivers.bench_runtime` (the runtime's public API);
* :mod:`.torch_driver`: PyTorch eager on the same cases (``--torch``);
* :mod:`.report`: ratios, the JSON report, CSV, markdown, noise warnings, reading a report back;
* :mod:`.plot`: the latency bar chart;
* :mod:`.suite`: :class:`~.suite.BenchOptions` and :func:`~.suite.run_bench`, what ``edgelstm
  bench`` and the demo call.

What one *case* measures (``mode`` x ``batch`` x ``time``):

* ``stream``: one call feeds a chunk ``x [batch, time, features]`` (``time`` = chunk length,
  1 = one step) and carries the state (``h_out`` -> ``h_in`` ...) into the next call, as a
  streaming application does. For a seq2seq ``decoder_step`` graph one call is one decoder
  step and ``time`` is the source (memory) length.
* ``sequence``: one call runs whole sequences of ``time`` steps from zero state.

JSON schema ``edgelstm.bench/1``: see :func:`edgelstm.bench.report.make_report` and docs/SCHEMAS.md.
"""
