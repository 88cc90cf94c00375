"""Benchmarks and the load they drive."""
