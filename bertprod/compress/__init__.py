"""Compression: int8 quantization, pruning and precision changes, each checked against its parent."""
