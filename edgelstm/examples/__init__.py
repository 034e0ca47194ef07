"""Device apps over the public, torch-free runtime API; run as ``python -m edgelstm.examples.APP``
(``stream_device``, ``classify_sequences``). See examples/README.md."""
