"""edgelstm.exporters: PyTorch to ONNX, graph checks, quantization."""
