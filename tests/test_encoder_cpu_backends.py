"""CPU encoder settings: torch in bfloat16, the ONNX export (float32 and int8) against torch float32, where exports
are kept, and a missing extra as one line. The ONNX tests are skipped without `eztag[onnx]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eztag.encoders.exported import OnnxEncoder, export_folder
from eztag.encoders.sentence_transformers import SentenceTransformerEncoder
from eztag.errors import EztagError
from eztag.models import HF_FOLDER_MARKER, resolve_encoder


@pytest.fixture(scope="module")
def texts_and_reference(minilm, debtags_texts) -> tuple[list[str], np.ndarray]:
    documents, labels = debtags_texts
    texts = documents[:12] + labels[:36]
    return texts, minilm.encode(texts)


def cosines(vectors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return np.sum(vectors * reference, axis=1)


def test_torch_bfloat16_on_the_cpu(texts_and_reference) -> None:
    texts, reference = texts_and_reference
    encoder = SentenceTransformerEncoder("default", device="cpu", precision="bfloat16")
    vectors = encoder.encode(texts)
    assert vectors.dtype == np.float32 and encoder.fingerprint["dtype"] == "torch.bfloat16"
    assert next(encoder.model.parameters()).dtype == torch.bfloat16  # the weights, not only the label
    assert cosines(vectors, reference).min() > 0.99


def test_onnx_export_matches_torch(texts_and_reference, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optimum.onnxruntime")
    monkeypatch.setenv("EZTAG_CACHE_DIR", str(tmp_path))
    texts, reference = texts_and_reference
    encoder = OnnxEncoder("default")
    assert encoder.device.type == "cpu" and encoder.fingerprint["backend"] == "onnx"
    assert cosines(encoder.encode(texts), reference).min() >= 1 - 1e-3
    (folder,) = (tmp_path / "encoders").iterdir()
    stamp = (folder / HF_FOLDER_MARKER).stat().st_mtime_ns
    OnnxEncoder("default")  # loads the export, does not redo it
    assert (folder / HF_FOLDER_MARKER).stat().st_mtime_ns == stamp

    int8 = OnnxEncoder("default", quantize="int8")
    assert int8.fingerprint["quantize"] == "int8"
    assert cosines(int8.encode(texts), reference).mean() >= 0.98


def test_export_lives_beside_a_writable_user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EZTAG_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "models" / "mine"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    beside = export_folder(str(model), str(model), "onnx-fp32")
    assert beside.parent == model.parent and beside.name.startswith("mine.onnx-fp32-")
    (model / "config.json").write_text('{"retrained": true}')
    assert export_folder(str(model), str(model), "onnx-fp32") != beside  # a changed model is exported again
    packaged = export_folder("default", resolve_encoder("default"), "onnx-fp32")
    assert packaged.parent == tmp_path / "cache" / "encoders"
    if os.geteuid() != 0:  # root may write anywhere
        model.parent.chmod(0o555)
        try:
            assert export_folder(str(model), str(model), "onnx-fp32").parent == tmp_path / "cache" / "encoders"
        finally:
            model.parent.chmod(0o755)


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EztagError, match=r"pip install 'eztag\[onnx\]'"):
        OnnxEncoder("default")
