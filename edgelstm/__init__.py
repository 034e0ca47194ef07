"""edgelstm: recurrent sequence models from PyTorch to the edge.

Importing this package imports nothing heavy: no torch, no onnx. Subpackages that need
them (models, training, exporters) import them themselves.
"""
__version__ = "0.1.0"

from edgelstm.errors import EdgeLSTMError  # noqa: E402

__all__ = ["__version__", "EdgeLSTMError"]
