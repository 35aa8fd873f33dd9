"""Benchmarks for keras_vae: each prints JSON lines, one per measurement."""
