"""Tests of the encoder backends (eztag/encoders/)."""
