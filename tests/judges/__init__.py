"""Tests of the judge backends (eztag/judges/) and the judge models they load."""
