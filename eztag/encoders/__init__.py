"""Text encoders behind one interface, looked up by name; heavy imports happen only when used."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from eztag.errors import EztagError, did_you_mean

ENCODERS = {"sentence-transformers": "eztag.encoders.sentence_transformers:SentenceTransformerEncoder"}


class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors, one row per text, in input order.

    `fingerprint` holds everything that changes the vectors (model files, device type, precision, length limit).
    """

    dim: int
    fingerprint: dict

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def get_encoder(backend: str, model: str, **options: object) -> Encoder:
    """Instantiate the encoder backend `backend` for `model`."""
    if backend not in ENCODERS:
        raise EztagError(f"unknown encoder backend '{backend}'{did_you_mean(backend, ENCODERS)}")
    module_name, class_name = ENCODERS[backend].split(":")
    return getattr(importlib.import_module(module_name), class_name)(model, **options)
