"""Hugging Face checkpoints in and out: what a local checkpoint folder is, and the exact map
between a keras-hub backbone's variables and a transformers checkpoint's tensors."""
