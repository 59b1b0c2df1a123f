"""Tests of the stages (eztag/stages/): each stage through a pipeline, and the stage contract."""
