"""Tests of the dataset builders (eztag/datasets/)."""
