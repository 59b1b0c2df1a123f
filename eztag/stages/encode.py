"""Encode: embed the label set and the documents into chunked, resumable embedding stores."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import polars as pl

from eztag.embeddings import EmbeddingStore
from eztag.encoders import get_encoder
from eztag.templates import check_template, render

NAME = "encode"
REQUIRES = ("ingest",)
PATH_FIELDS = ("model",)
DOCUMENT_FIELDS = {"doc_id", "title", "text"}
LABEL_FIELDS = {"label_id", "text", "description"}


@dataclasses.dataclass
class Config:
    """Which encoder to use and how labels and documents are turned into text."""

    model: str = "default"
    backend: str = "sentence-transformers"
    device: str = "auto"
    precision: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int | None = None  # None: 64 on the CPU, 1024 on a GPU
    chunk_size: int = 16384
    max_seq_length: int | None = None
    document_template: str = "{text}"
    label_template: str = "{text}"
    dtype: Literal["float32", "float16"] = "float32"

    def __post_init__(self) -> None:
        check_template(self.document_template, DOCUMENT_FIELDS, where="encode.document_template")
        check_template(self.label_template, LABEL_FIELDS, where="encode.label_template")
        if (self.batch_size is not None and self.batch_size < 1) or self.chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be positive")


def texts(frame: pl.DataFrame, template: str) -> list[str]:
    """Render each row of a documents or labels frame through a template."""
    return [" ".join(render(template, row).split()) for row in frame.iter_rows(named=True)]


def load_encoder(config: Config) -> Any:
    """The configured encoder backend."""
    return get_encoder(
        config.backend,
        config.model,
        device=config.device,
        precision=config.precision,
        batch_size=config.batch_size,
        max_seq_length=config.max_seq_length,
    )


def run(config: Config, out_dir: Path, ingest_dir: Path) -> dict[str, Any]:
    """Write `labels/` and `documents/` embedding stores."""
    encoder = load_encoder(config)
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    documents = pl.read_parquet(ingest_dir / "documents.parquet")
    for name, frame, template in (
        ("labels", labels, config.label_template),
        ("documents", documents, config.document_template),
    ):
        EmbeddingStore(out_dir / name).write(
            texts(frame, template),
            encoder.encode,
            chunk_size=config.chunk_size,
            dtype=config.dtype,
            description=f"encode {name}",
        )
    return {"labels": labels.height, "documents": documents.height, "dim": encoder.dim}
