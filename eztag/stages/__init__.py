"""Pipeline stages: each reads its inputs from the run directory and writes its artifacts there."""
