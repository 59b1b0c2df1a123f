"""Tests of the tools under benchmarks/ that build data (not of the runtime package)."""
