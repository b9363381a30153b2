"""Fine-tuning (sitrep train), the TF-IDF baseline, and ONNX export (sitrep export)."""
