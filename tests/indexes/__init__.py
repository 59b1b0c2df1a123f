"""Tests of the index backends (eztag/indexes/)."""
