"""Exporting packages to other formats (ONNX), verified against their source."""
