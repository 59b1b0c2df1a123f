"""The sentence-transformers encoder run through ONNX Runtime or OpenVINO on the CPU (`eztag[onnx]`,
`eztag[openvino]`).

The model is exported once, offline, with sentence-transformers' own `backend="onnx"` / `"openvino"` loaders
(optionally dynamically quantised to int8 with `export_dynamic_quantized_onnx_model`) into a folder beside a
user's model folder when its parent is writable, else in the user cache (`eztag.models.cache_root`). The folder's
name holds a digest of the source model's files, so a model retrained in place is exported again. Beside, not
inside: the model folder's own files (the encode stage's fingerprint, a distil stage's checksums) stay as they are.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from eztag.artifacts import config_hash
from eztag.encoders.sentence_transformers import SentenceTransformerEncoder
from eztag.errors import missing_extra
from eztag.models import build_folder_once, cache_root, model_files, resolve_encoder

ONNX_FILE = "onnx/model.onnx"
OPENVINO_FILE = "openvino/openvino_model.xml"
OPENVINO_PRECISION = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def int8_target() -> str:
    """sentence-transformers' dynamic int8 configuration for this CPU: arm64, avx512_vnni, avx512 or avx2."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def export_folder(model: str, path: str, variant: str) -> Path:
    """Where the export `variant` of the model at `path` lives: beside a user's own model folder when that folder's
    parent is writable, else in the user cache; named after the model, the variant and its files' digest."""
    source = Path(path)
    digest = config_hash([str(source.resolve()) if source.is_dir() else path, model_files(source), variant])[:12]
    name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', source.name or path)}.{variant}-{digest}"
    user_folder = resolve_encoder(model) == model and source.is_dir()  # not the packaged default, not a hub id
    if user_folder and os.access(source.resolve().parent, os.W_OK):
        return source.resolve().parent / name
    return cache_root() / "encoders" / name


class ExportedEncoder(SentenceTransformerEncoder):
    """The model exported once by sentence-transformers to `backend` (see the module docstring), then loaded from
    that export; subclasses name the modules their extra installs and how the export is loaded and finished."""

    modules: tuple[str, ...] = ()

    def _variant(self, quantize: str) -> tuple[str, str]:
        """(variant name for the export folder, the model file inside it)."""
        raise NotImplementedError

    def _model_kwargs(self) -> dict[str, Any]:
        """sentence-transformers' model_kwargs for exporting and loading."""
        raise NotImplementedError

    def _finish(self, exported: Any, folder: Path, quantize: str) -> None:
        """Add to the freshly saved export in `folder` (nothing by default)."""

    def _load(self, model: str, path: str, quantize: str) -> Any:
        try:
            for module in self.modules:
                importlib.import_module(module)
        except ImportError:
            raise missing_extra(" and ".join(self.modules), self.backend) from None
        from sentence_transformers import SentenceTransformer

        variant, file_name = self._variant(quantize)
        options = {"device": "cpu", "backend": self.backend}

        def export(tmp: Path) -> None:
            exported = SentenceTransformer(path, **options, model_kwargs={"export": True, **self._model_kwargs()})
            exported.save_pretrained(str(tmp))
            self._finish(exported, tmp, quantize)

        folder = export_folder(model, path, variant)
        build_folder_once(folder, {"model": path, "variant": variant}, export)
        return SentenceTransformer(
            str(folder), **options, model_kwargs={"file_name": file_name, **self._model_kwargs()}
        )


class OnnxEncoder(ExportedEncoder):
    """The encoder in ONNX Runtime (CPU provider), float32 or dynamically quantised int8."""

    backend = "onnx"
    modules = ("onnxruntime", "optimum.onnxruntime")

    def _variant(self, quantize: str) -> tuple[str, str]:
        if quantize == "int8":
            return f"onnx-int8-{int8_target()}", f"onnx/model_qint8_{int8_target()}.onnx"
        return "onnx-fp32", ONNX_FILE

    def _model_kwargs(self) -> dict[str, Any]:
        return {"provider": "CPUExecutionProvider"}

    def _finish(self, exported: Any, folder: Path, quantize: str) -> None:
        from sentence_transformers import export_dynamic_quantized_onnx_model

        if quantize == "int8":
            export_dynamic_quantized_onnx_model(exported, int8_target(), str(folder))


class OpenVinoEncoder(ExportedEncoder):
    """The encoder in OpenVINO on the CPU; `precision` is OpenVINO's inference precision (auto: float32)."""

    backend = "openvino"
    modules = ("openvino", "optimum.intel.openvino")

    def _variant(self, quantize: str) -> tuple[str, str]:
        return "openvino", OPENVINO_FILE

    def _model_kwargs(self) -> dict[str, Any]:
        return {"ov_config": {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[self.dtype]}}
