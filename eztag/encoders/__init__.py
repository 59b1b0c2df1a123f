"""Text encoders behind one interface, looked up by name; heavy imports happen only when used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from eztag.errors import EztagError, did_you_mean
from eztag.registry import Registry


class Encoder(Protocol):
    """Maps texts to L2-normalised float32 vectors, one row per text, in input order.

    `fingerprint` holds everything that changes the vectors (model files, device type, precision, length limit).
    """

    dim: int
    fingerprint: dict

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


ENCODERS: Registry[Encoder] = Registry(
    "encoder",
    {
        "sentence-transformers": "eztag.encoders.sentence_transformers:SentenceTransformerEncoder",
        "onnx": "eztag.encoders.exported:OnnxEncoder",
        "openvino": "eztag.encoders.exported:OpenVinoEncoder",
    },
)
CPU_BACKENDS = ("onnx", "openvino")


def check_backend_settings(backend: str, device: str, precision: str, quantize: str) -> None:
    """One-line errors for settings `backend` cannot run: ONNX Runtime and OpenVINO run on the CPU, ONNX in
    float32, and int8 is the dynamic quantisation of the ONNX export."""
    if backend not in ENCODERS:
        raise EztagError(
            f"unknown encoder backend '{backend}'{did_you_mean(backend, ENCODERS)}", field="encode.backend"
        )
    if quantize != "none" and backend != "onnx":
        raise EztagError(f"quantize = '{quantize}' needs backend = 'onnx'", field="encode.quantize")
    if backend in CPU_BACKENDS and device.startswith("cuda"):
        raise EztagError(f"backend '{backend}' runs on the CPU; use device = 'cpu' or 'auto'", field="encode.device")
    if backend == "onnx" and precision not in ("auto", "float32"):
        raise EztagError(
            f"backend 'onnx' runs float32 (or int8 with quantize = 'int8'), not {precision}", field="encode.precision"
        )


def get_encoder(backend: str, model: str, **options: object) -> Encoder:
    """Instantiate the encoder backend `backend` for `model` with the keyword `options` of `[encode]`."""
    return ENCODERS.create(backend, model, options=options, field="encode")
