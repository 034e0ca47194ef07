"""edgelstm.runtime: the torch-free runtime. Imports only numpy, onnxruntime and the stdlib."""
