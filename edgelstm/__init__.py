"""edgelstm: recurrent sequence models from PyTorch to the edge.

Importing this package imports nothing heavy: no torch, no onnx. Subpackages that need
them (models, training, exporters) import them themselves.

Layers, lowest first (docs/DESIGN.md draws them; tests/test_layers.py and tests/test_structure.py
check the arrows): the torch-free floor (``errors``, ``manifest``, ``fileio``, ``units``,
``stats``, ``data.readers``) -> ``edgelstm.runtime`` (the contract and the runtime) ->
``edgelstm.bench`` (torch-free benchmark) | ``models``, ``data``, ``training`` (torch) ->
``edgelstm.exporters`` (export, quantize) -> ``verify`` -> ``demo`` -> ``cli`` (imported by
nothing in the library).
"""
__version__ = "0.1.0"

from edgelstm.errors import EdgeLSTMError  # noqa: E402

__all__ = ["__version__", "EdgeLSTMError"]
