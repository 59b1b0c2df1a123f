"""Tag: retrieve the top-k labels of every document, give each a calibrated probability when there is a
calibrator, and select tags by a named rule; Parquet (the ranked list) and a CSR `.npz` (the selected tags,
PECOS / pyxclib layout)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from tqdm import tqdm

from eztag import calibration, runstate
from eztag.artifacts import atomic_path, file_checksum, write_json, write_parquet
from eztag.embeddings import EmbeddingStore, chunk_spans
from eztag.errors import EztagError
from eztag.indexes import LabelIndex
from eztag.indexing import load_index
from eztag.semantics import conse_queries
from eztag.stages.contract import StageInputs

log = logging.getLogger(__name__)

NAME = "tag"
HELP = "retrieve the top-k labels of every document and select its tags"
REQUIRES = ("ingest", "encode", "index")
# when in the pipeline: distil: tag with the distilled encoder's embeddings and index; calibrate: its calibrator
OPTIONAL = ("distil", "calibrate")
CONFLICTS: dict[str, str] = {}
PROVIDES: dict[str, str] = {}
PATH_FIELDS = ("calibrator",)
PROBABILITY_RULES = ("probability", "expected_f1")
DEFAULT_TOP_K = 5  # tags selected per document by rule "top_k" (debtags' gold: 2.9 per package)


@dataclasses.dataclass
class ConSE:
    """`[tag.conse]`: search again with (1 - alpha) document + alpha * softmax(top-T scores / temperature) - weighted
    label vectors (the labels' own-text vectors from encode)."""

    top: int = 5
    """T, the labels of the first search whose vectors are combined (at least 1)."""
    alpha: float = 0.5
    """Weight of the label combination, 0 to 1: 0 is plain search, 1 the original ConSE (the combination alone)."""
    temperature: float = 0.05
    """Softmax temperature of the top-T scores that weight the combination (positive; lower: closer to the top
    label)."""

    def __post_init__(self) -> None:
        if self.top < 1 or self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise ValueError("conse needs top >= 1, temperature > 0 and 0 <= alpha <= 1")


@dataclasses.dataclass
class Config:
    """How deep each document's ranked list is (k), which tags of it are selected, and ConSE expansion
    (`[tag.conse]`, off when absent).

    rule: "auto" ("probability" when the run has a calibrator, else "top_k"), "top_k" (the first `top_k` tags of
    the list: the retrieval depth k and the number selected are separate settings), "threshold" (cosine score >=
    `threshold`), "probability" (calibrated probability >= `min_probability`) or "expected_f1" (per document, the
    cut-off of the ranked list that maximises the expected F1 under the calibrated probabilities; see
    `expected_f1_cutoffs`); then at least `min_per_doc` and at most `max_per_doc` per document. The probability
    rules need a calibrator: the calibrate stage in the pipeline, or `calibrator` (a calibrator.json path).
    """

    k: int = 100
    """Labels retrieved per document: the ranked list (clamped to the label count, with a note)."""
    rule: Literal["auto", "top_k", "threshold", "probability", "expected_f1"] = "auto"
    """Which tags of the ranked list are selected: `top_k`, `threshold`, `probability`, `expected_f1` (the cut-off
    that maximises the expected F1 per document) or `auto` (`probability` with a calibrator, else `top_k`)."""
    top_k: int = DEFAULT_TOP_K
    """Rule `top_k`: the first `top_k` tags of the ranked list (separate from the retrieval depth `k`)."""
    threshold: float | None = None
    """Rule `threshold`: tags with cosine score >= it; required by that rule, refused by the others."""
    min_probability: float = 0.5
    """Rule `probability`: tags with calibrated probability >= it (0 to 1)."""
    min_per_doc: int = 0
    """Every rule then keeps at least this many tags per document."""
    max_per_doc: int | None = None
    """Every rule then keeps at most this many tags per document (at most `k`); `None`: no cap."""
    calibrator: str | None = None
    """A `calibrator.json` made by another run for this encoder and label set (relative to the pipeline file's
    folder); `None`: the calibrate stage's when it is in the pipeline, else none."""
    conse: ConSE | None = None
    """`[tag.conse]`: ConSE query expansion (not with a calibrator); `None` (the table absent): off."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.top_k < 1:
            raise ValueError("k and top_k must be at least 1")
        if self.min_per_doc < 0 or (
            self.max_per_doc is not None and not self.min_per_doc <= self.max_per_doc <= self.k
        ):
            raise ValueError("need 0 <= min_per_doc <= max_per_doc <= k")
        if (self.rule == "threshold") != (self.threshold is not None):
            raise ValueError("threshold (a cosine score) goes with rule = 'threshold', and that rule needs it")
        if not 0 <= self.min_probability <= 1:
            raise ValueError("need 0 <= min_probability <= 1")
        if self.conse is not None and self.calibrator is not None:
            raise ValueError("a calibrator is fitted on plain search scores; ConSE changes them (drop one)")


def fingerprint(config: Config) -> str | None:
    """The checksum of the `calibrator` file, so a calibrator refitted in place re-tags."""
    path = Path(config.calibrator) if config.calibrator is not None else None
    return file_checksum(path) if path is not None and path.is_file() else None


def check_pipeline(config: Config, configs: Mapping[str, Any]) -> None:
    """Pipeline-level checks: a probability rule needs a calibrator, and only one may be named."""
    calibrated = "calibrate" in configs
    if config.rule in PROBABILITY_RULES and config.calibrator is None and not calibrated:
        raise EztagError(
            f"rule '{config.rule}' needs calibrated probabilities: add the calibrate stage to pipeline.stages "
            "or set tag.calibrator to the calibrator.json of a run that made this encoder",
            field="tag.rule",
        )
    if calibrated and config.calibrator is not None:
        raise EztagError("the calibrate stage is in the pipeline: drop tag.calibrator", field="tag.calibrator")
    if calibrated and config.conse is not None:
        raise EztagError("a calibrator is fitted on plain search scores; ConSE changes them", field="tag.conse")


def expected_f1_cutoffs(probabilities: np.ndarray, low: int, high: int) -> np.ndarray:
    """Per row of a ranked [documents, k] probability matrix (NaN past the end of a list), the cut-off c in
    [low, high] that maximises the plug-in expected F1 of keeping the first c tags:

        E[F1](c) ~ 2 * sum_{i<=c} p_i / (c + sum_{i<=k} p_i)

    i.e. 2 E[true positives] / (c + E[gold labels]), with the gold count estimated over the ranked list (labels
    below rank k taken as p = 0). The smallest c wins ties; c = 0 scores 0."""
    p = np.nan_to_num(probabilities, nan=0.0)
    cumulative = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    cutoffs = np.arange(cumulative.shape[1])
    expected = 2 * cumulative / np.maximum(cutoffs[None, :] + cumulative[:, -1:], 1e-12)
    high = min(high, p.shape[1])
    low = min(low, high)
    return low + np.argmax(expected[:, low : high + 1], axis=1)


def selection_rule(config: Config, calibrated: bool) -> str:
    """The rule tags are selected by: `config.rule`, with "auto" resolved by whether there are probabilities."""
    if config.rule != "auto":
        return config.rule
    return "probability" if calibrated else "top_k"


def select(scores: np.ndarray, probabilities: np.ndarray | None, config: Config) -> np.ndarray:
    """Boolean mask of the selected (document, rank) cells: the rule, then per-document minimum and maximum."""
    exists = scores > -np.inf
    ranks = np.arange(scores.shape[1])[None, :]
    rule = selection_rule(config, probabilities is not None)
    if rule == "threshold":
        keep = scores >= config.threshold
    elif rule in PROBABILITY_RULES:
        assert probabilities is not None, "check_pipeline gives probability rules a calibrator"
        if rule == "probability":
            keep = probabilities >= config.min_probability
        else:
            high = config.max_per_doc if config.max_per_doc is not None else scores.shape[1]
            keep = ranks < expected_f1_cutoffs(probabilities, config.min_per_doc, high)[:, None]
    else:
        keep = ranks < config.top_k
    keep = (keep | (ranks < config.min_per_doc)) & exists
    if config.max_per_doc is not None:
        keep &= ranks < config.max_per_doc
    return keep


def search(
    index: LabelIndex, queries: np.ndarray, k: int, conse: ConSE | None, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, label rows) of the queries; with ConSE, of the queries mixed with their top-T labels."""
    if conse is None or labels is None:
        return index.search(queries, k)
    scores, rows = index.search(queries, min(conse.top, len(labels)))
    scores = np.where(rows >= 0, scores, -np.inf)
    expanded = conse_queries(queries, scores, np.maximum(rows, 0), labels, conse.alpha, conse.temperature)
    return index.search(expanded, k)


def shard_frame(
    doc_ids: list[str],
    label_ids: np.ndarray,
    scores: np.ndarray,
    rows: np.ndarray,
    probabilities: np.ndarray | None,
    selected: np.ndarray,
) -> pl.DataFrame:
    """Long-format rows (doc_id, rank, label_id, score, [probability,] selected, label_row, doc_row) of the
    ranked list."""
    doc_index, rank = np.nonzero(rows >= 0)
    columns = {
        "doc_id": np.asarray(doc_ids, dtype=object)[doc_index].tolist(),
        "rank": (rank + 1).astype(np.int32),
        "label_id": label_ids[rows[doc_index, rank]].tolist(),
        "score": scores[doc_index, rank].astype(np.float32),
    }
    if probabilities is not None:
        columns["probability"] = probabilities[doc_index, rank].astype(np.float32)
    columns["selected"] = selected[doc_index, rank]
    columns["label_row"] = rows[doc_index, rank].astype(np.int64)
    columns["doc_row"] = doc_index.astype(np.int64)
    return pl.DataFrame(columns)


def tag_worker(
    config: Config,
    index_dir: Path,
    encode_dir: Path,
    calibrator: calibration.Calibrator | None,
    label_ids: np.ndarray,
) -> Callable[[tuple[int, list[str], Path]], pl.DataFrame]:
    """An engine worker: the label index (and ConSE's label vectors) loaded once; it turns one document chunk
    (first row, doc ids, its .npy) into the chunk's ranked-list rows."""
    index = load_index(index_dir)
    label_vectors = EmbeddingStore(encode_dir / "labels").load() if config.conse else None

    def tag_chunk(unit: tuple[int, list[str], Path]) -> pl.DataFrame:
        offset, doc_ids, path = unit
        vectors = np.load(path).astype(np.float32, copy=False)
        scores, rows = search(index, vectors, config.k, config.conse, label_vectors)
        scores = np.where(rows >= 0, scores, -np.inf)
        probabilities = None
        if calibrator is not None:
            probabilities = calibrator.predict(scores, np.arange(1, scores.shape[1] + 1)[None, :])
        selected = select(scores, probabilities, config)
        frame = shard_frame(doc_ids, label_ids, scores, rows, probabilities, selected)
        return frame.with_columns(pl.col("doc_row") + offset)

    return tag_chunk


def load_calibrator(config: Config, inputs: StageInputs) -> calibration.Calibrator | None:
    """The calibrator (calibrate stage's, or `config.calibrator`), checked against this run's encoder and labels."""
    path = inputs.artifacts.get("calibrator") or config.calibrator
    if path is None:
        return None
    return calibration.load(
        Path(path), calibration.tagging_identity(inputs.config("encode"), inputs.artifacts, inputs["ingest"])
    )


def run(config: Config, out_dir: Path, inputs: StageInputs) -> dict[str, Any]:
    """Search every document chunk (resumable shard by shard) and write tags.parquet (the ranked list with
    `probability` when calibrated and `selected`) and tags.npz (the selected tags' probabilities, or scores)."""
    ingest_dir = inputs["ingest"]
    encode_dir, index_dir = inputs.artifacts["encode"], inputs.artifacts["index"]
    calibrator = load_calibrator(config, inputs)
    doc_ids = pl.read_parquet(ingest_dir / "documents.parquet", columns=["doc_id"])["doc_id"].to_list()
    label_ids = np.asarray(pl.read_parquet(index_dir / "label_ids.parquet")["label_id"].to_list(), dtype=object)
    if config.k > len(label_ids):
        log.warning(
            f"tag: k = {config.k} is more than the {len(label_ids)} labels; each document gets at most {len(label_ids)}"
        )
    store = EmbeddingStore(encode_dir / "documents")
    shards = out_dir / "shards"
    shards.mkdir(exist_ok=True)
    spans = chunk_spans(store.count, int(store.meta["chunk_size"]))
    pending = [span for span in spans if not (shards / f"part-{span[0]:05d}.parquet").exists()]
    units = [(start, doc_ids[start:stop], store.chunk_path(chunk)) for chunk, start, stop in pending]
    make_worker = functools.partial(tag_worker, config, index_dir, encode_dir, calibrator, label_ids)
    with tqdm(total=len(pending), desc="tag", unit="chunk", disable=None) as bar:
        for done, (position, frame) in enumerate(inputs.engine.map(make_worker, units), 1):
            write_parquet(shards / f"part-{pending[position][0]:05d}.parquet", frame)
            bar.update()
            runstate.progress(done, len(pending), "document chunks to tag")
    tags = pl.concat([pl.read_parquet(path) for path in sorted(shards.glob("part-*.parquet"))])
    import scipy.sparse as sp  # here, not at import: the CLI answers config errors without loading scipy

    chosen = tags.filter(pl.col("selected"))
    value = "probability" if calibrator is not None else "score"
    matrix = sp.csr_matrix(
        (chosen[value].to_numpy(), (chosen["doc_row"].to_numpy(), chosen["label_row"].to_numpy())),
        shape=(len(doc_ids), len(label_ids)),
        dtype=np.float32,
    )
    write_parquet(out_dir / "tags.parquet", tags.drop("label_row", "doc_row"))
    with atomic_path(out_dir / "tags.npz") as tmp, open(tmp, "wb") as handle:
        sp.save_npz(handle, matrix)
    for path in shards.glob("part-*.parquet"):
        path.unlink()
    shards.rmdir()
    summary = {
        "documents": len(doc_ids),
        "labels": len(label_ids),
        "rule": selection_rule(config, calibrator is not None),
        "ranked": tags.height,
        "tags": chosen.height,
        "tags_per_document": round(chosen.height / max(1, len(doc_ids)), 3),
        "documents_without_tags": len(doc_ids) - chosen["doc_id"].n_unique(),
        "calibrated": calibrator is not None,
        "npz_values": value,
    }
    write_json(out_dir / "report.json", summary)
    return summary
