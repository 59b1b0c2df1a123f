"""Synonyms: an LLM writes short synonyms of every label; they are cleaned, pruned and refined into label vectors.

Generations are cached in Parquet shards keyed by sha256(backend, model, prompt name@version, domain, n,
max_new_tokens, label, description), so a rerun or another pipeline with the same labels generates nothing twice.
Kept synonyms are rendered through the encode stage's `label_template` (the synonym as `{text}`) and encoded with its
encoder; `vectors/` holds each label's own vector and its kept synonyms', `owners.npy` the label row of each vector.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from eztag import semantics
from eztag.artifacts import (
    cache_location,
    read_shards,
    write_json,
    write_npy,
    write_parquet,
    write_shard,
)
from eztag.embeddings import EmbeddingStore
from eztag.encoding import EncodeConfig, load_encoder
from eztag.indexes import INDEXES
from eztag.judges import JUDGES
from eztag.prompts import SYNONYM_PROMPT, PromptTemplate, synonym_messages
from eztag.stages.contract import StageInputs, no_fingerprint, no_pipeline_checks
from eztag.templates import render_rows

NAME = "synonyms"
HELP = "write, prune and refine label synonyms with an LLM"
REQUIRES = ("ingest", "encode")
OPTIONAL: tuple[str, ...] = ()
CONFLICTS: dict[str, str] = {}
PROVIDES: dict[str, str] = {}
PATH_FIELDS = ("model", "cache_dir")
check_pipeline = no_pipeline_checks
fingerprint = no_fingerprint
CACHE_SCHEMA: dict[str, Any] = {"key": pl.String, "raw": pl.String}


@dataclasses.dataclass
class Config:
    """Which LLM writes the synonyms, how they are cleaned, and the pruning and refinement thresholds.

    `prune_eps`: cosine distance below which two of a label's vectors are joined; only the component of the
    label's own text is kept (None: no pruning). `refine_threshold`: drop a synonym whose profile over the labels'
    data centroids correlates below this with its label's (None: no refinement); a document is a pseudo-positive of
    its `refine_top_m` nearest labels by their own text.
    """

    backend: str = "transformers"
    """The LLM backend, a judge backend that can generate: `transformers` or `vllm` (one batched `generate` per
    shard)."""
    model: str = "default"
    """The LLM, as `[judge] model`: a named judge (`default` is SmolLM2-135M-Instruct), a local folder (relative to the
    pipeline file's folder), a `.gguf` file or a hub id."""
    n: int = 5
    """Synonyms asked for per label; at most this many are kept after cleaning."""
    domain: str = "document"
    """Fills the prompt ("tags of a {domain} catalogue"); part of the cache key."""
    max_new_tokens: int = 48
    """Generation budget per label, in tokens (greedy decoding)."""
    max_chars: int = 60
    """Longest synonym kept, in characters; longer lines are dropped (`too_long`)."""
    shard_size: int = 64
    """Labels per generation call and per cache shard."""
    cache_dir: str | None = None
    """The generation cache folder (relative to the pipeline file's folder), which runs may share; `None`:
    RUN_DIR/cache/synonyms."""
    options: dict = dataclasses.field(default_factory=dict)
    """`[synonyms.options]`, the backend's own keyword options, as `[judge.options]`."""
    prune_eps: float | None = 0.6
    """Cosine distance below which two of a label's vectors are joined; only the synonyms in the component of the
    label's own text are kept (`None`: no pruning)."""
    refine_threshold: float | None = None
    """Drop a synonym whose cosines to all labels' data centroids correlate (Pearson) below this with its label's data
    centroid's (`None`: no refinement)."""
    refine_top_m: int = 5
    """Refinement: a document is a pseudo-positive of its `refine_top_m` nearest labels by their own text; a label's
    data centroid is the mean of its pseudo-positives."""

    def __post_init__(self) -> None:
        self.options = JUDGES.check_options(self.backend, self.options, field="synonyms.options")  # checked once
        if min(self.n, self.max_new_tokens, self.max_chars, self.shard_size, self.refine_top_m) < 1:
            raise ValueError("n, max_new_tokens, max_chars, shard_size and refine_top_m must be positive")


def cache_key(config: Config, label: str, description: str) -> str:
    """The cache key of one label's generation."""
    prompt = f"{SYNONYM_PROMPT['name']}@{SYNONYM_PROMPT['version']}"
    fields = [config.backend, config.model, prompt, config.domain, config.n, config.max_new_tokens, label, description]
    return hashlib.sha256(json.dumps(fields, ensure_ascii=False).encode()).hexdigest()


def generate(config: Config, labels: list[tuple[str, str]], cache_dir: Path) -> list[str]:
    """The raw generation for each (label, description), from the cache or the LLM (loaded only when needed)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stored: dict[str, str] = dict(read_shards(cache_dir, CACHE_SCHEMA).iter_rows())
    keys = [cache_key(config, label, description) for label, description in labels]
    todo = list({key: pair for key, pair in zip(keys, labels, strict=True) if key not in stored}.items())
    if todo:
        template = PromptTemplate.named("yes-no", config.domain)
        llm = JUDGES.construct(config.backend, config.model, template, **config.options)
        with tqdm(total=len(todo), desc="synonyms", unit="label", disable=None) as bar:
            for start in range(0, len(todo), config.shard_size):
                batch = todo[start : start + config.shard_size]
                prompts = [synonym_messages(label, text, config.n, config.domain) for _, (label, text) in batch]
                raw = llm.generate(prompts, config.max_new_tokens)
                shard = pl.DataFrame({"key": [key for key, _ in batch], "raw": raw}, schema=CACHE_SCHEMA)
                write_shard(cache_dir, shard)
                stored.update(zip(shard["key"], shard["raw"], strict=True))
                bar.update(len(batch))
    return [stored[key] for key in keys]


def candidate_rows(labels: pl.DataFrame, raw: list[str], config: Config) -> pl.DataFrame:
    """One row per generated line: label_row, label_id, synonym, reason (null = a candidate)."""
    rows = [
        (row, label_id, synonym, reason)
        for row, (label_id, text, generated) in enumerate(zip(labels["label_id"], labels["text"], raw, strict=True))
        for synonym, reason in semantics.sanitise(generated, text, config.n, config.max_chars)
    ]
    schema = {"label_row": pl.Int64, "label_id": pl.String, "synonym": pl.String, "reason": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


def prune(own: np.ndarray, vectors: np.ndarray, owners: np.ndarray, eps: float) -> np.ndarray:
    """Mask of the synonym vectors inside their label's ε-component around its own text."""
    keep = np.zeros(len(vectors), dtype=bool)
    for label in np.unique(owners):
        members = np.flatnonzero(owners == label)
        keep[members] = semantics.prune_component(np.vstack([own[label : label + 1], vectors[members]]), eps)[1:]
    return keep


def refine_agreement(
    own_store: EmbeddingStore, documents: np.ndarray, vectors: np.ndarray, owners: np.ndarray, top_m: int
) -> np.ndarray:
    """Each synonym's profile agreement with the data (NaN where its label is no document's pseudo-positive)."""
    index = INDEXES.create("exact", options={"device": "cpu"}, field="synonyms")
    index.build(own_store)
    _, top_rows = index.search(documents, top_m)
    centroids, counts = semantics.data_centroids(documents, top_rows, own_store.count)
    return semantics.profile_agreement(vectors, owners, centroids, counts > 0)


def _undropped(reasons: np.ndarray) -> np.ndarray:
    """Mask of the entries with no drop reason."""
    return np.array([reason is None for reason in reasons], dtype=bool)


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Write synonyms.parquet (label_id, synonym, kept, reason, agreement), vectors/, owners.npy, report.json."""
    ingest_dir = inputs["ingest"]
    encode_dir = inputs["encode"]
    labels = pl.read_parquet(ingest_dir / "labels.parquet")
    pairs = [(text, description or "") for text, description in labels.select("text", "description").iter_rows()]
    raw = generate(config, pairs, cache_location(config.cache_dir, out_dir, NAME, "synonyms.cache_dir"))
    rows = candidate_rows(labels, raw, config)
    candidates = rows.filter(pl.col("reason").is_null())
    owners = candidates["label_row"].to_numpy()
    descriptions = [pairs[row][1] for row in owners]
    encoder_config: EncodeConfig = inputs.config("encode")
    synonym_frame = pl.DataFrame(
        {"text": candidates["synonym"], "description": descriptions},
        schema=pl.Schema({"text": pl.String, "description": pl.String}),
    )
    vectors = (
        semantics.unit(load_encoder(encoder_config).encode(render_rows(synonym_frame, encoder_config.label_template)))
        if candidates.height
        else np.zeros((0, 1), dtype=np.float32)
    )
    own_store = EmbeddingStore(encode_dir / "labels")
    own = own_store.load()
    reasons = np.full(len(owners), None, dtype=object)
    agreement = np.full(len(owners), np.nan)
    if config.prune_eps is not None and len(owners):
        reasons[~prune(own, vectors, owners, config.prune_eps)] = "outside_component"
    if config.refine_threshold is not None and len(owners):
        documents = EmbeddingStore(encode_dir / "documents").load()
        agreement = refine_agreement(own_store, documents, vectors, owners, config.refine_top_m)
        reasons[_undropped(reasons) & (agreement < config.refine_threshold)] = "disagrees_with_data"
    kept = _undropped(reasons)
    candidates = candidates.with_columns(
        reason=pl.Series(reasons.tolist(), dtype=pl.String), agreement=pl.Series(agreement, dtype=pl.Float64)
    )
    table = pl.concat([rows.filter(pl.col("reason").is_not_null()), candidates], how="diagonal")
    table = table.sort("label_row", maintain_order=True).with_columns(kept=pl.col("reason").is_null())
    write_parquet(out_dir / "synonyms.parquet", table.select("label_id", "synonym", "kept", "reason", "agreement"))
    all_vectors = np.vstack([own, vectors[kept]]) if kept.any() else own
    all_owners = np.concatenate([np.arange(len(own)), owners[kept]])
    store = EmbeddingStore(out_dir / "vectors")
    store.write(
        list(range(len(all_vectors))), lambda batch: all_vectors[list(batch)], chunk_size=encoder_config.chunk_size
    )
    write_npy(out_dir / "owners.npy", all_owners.astype(np.int64))
    report = {
        "labels": labels.height,
        "generated": table.height,
        "kept": int(kept.sum()),
        "dropped_by_reason": dict(Counter(table["reason"].drop_nulls().to_list())),
        "labels_with_synonyms": len(np.unique(owners[kept])),
        "vectors": len(all_vectors),
        "extra_vectors": int(kept.sum()),
    }
    write_json(out_dir / "report.json", report)
    return report
