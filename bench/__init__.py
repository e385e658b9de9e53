"""Benchmarks against transformers and upstream nanoGPT, side by side in one run: `python -m bench.<name>`."""
