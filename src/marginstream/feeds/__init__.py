"""Scripted record streams: the demo market, and load for tests and benchmarks."""
