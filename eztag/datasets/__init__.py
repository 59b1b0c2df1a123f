"""Builders for the benchmark data sets shipped with eztag."""
