"""Tests of the execution engines (eztag/engines/)."""
