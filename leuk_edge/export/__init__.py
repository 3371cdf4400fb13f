"""Keras -> ONNX export with the leuk_edge metadata, a parity gate, FP16 and INT8 variants."""
