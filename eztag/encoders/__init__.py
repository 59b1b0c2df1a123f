"""Text encoders behind one interface, looked up by name; heavy imports happen only when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from eztag.registry import Registry


class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors, one row per text, in input order.

    `fingerprint` holds everything that changes the vectors (model files, device type, precision, length limit).
    """

    dim: int
    fingerprint: dict

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


ENCODERS: Registry[Encoder] = Registry(
    "encoder", {"sentence-transformers": "eztag.encoders.sentence_transformers:SentenceTransformerEncoder"}
)


def get_encoder(backend: str, model: str, **options: object) -> Encoder:
    """Instantiate the encoder backend `backend` for `model` with the keyword `options` of `[encode]`."""
    return ENCODERS.create(backend, model, options=options, field="encode")
