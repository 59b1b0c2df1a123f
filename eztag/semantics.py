"""Label semantics as small pure functions: synonym clean-up, synonym spaces, refinement and ConSE.

- Synonym spaces (S³, arXiv 2412.04925): a label is a set of unit vectors, its own text first. `prune_component`
  keeps the vectors connected to the label's own text when vectors closer than ε (cosine distance) are joined
  (the 1-skeleton of the Vietoris-Rips complex). `label_scores` scores documents against such sets: `max`
  (the best single vector), `centroid` (cosine to the mean of all vectors) and `local_centre` (cosine to the mean of
  the k vectors nearest the document; k = 1 is `max`, k >= the set size is `centroid`).
- Refinement (after MDASR, arXiv 2403.14362): `profile_agreement` correlates a synonym's cosine profile over the
  labels' data centroids (`data_centroids`: means of each label's pseudo-positive documents) with the profile its
  label's own data centroid has; synonyms that disagree with the data are dropped.
- ConSE (Norouzi et al., arXiv 1312.5650): `conse_queries` mixes a document vector with the softmax-weighted convex
  combination of its top-T label vectors and the search runs again with the mixture.
"""

from __future__ import annotations

import re
from collections import deque

import numpy as np

AGGREGATIONS = ("max", "centroid", "local_centre")
_BULLET = re.compile(r"^\s*(?:[-*•·]+|\(?\d+\s*[.):-]|[a-z][.)])\s*", re.IGNORECASE)


def sanitise(raw: str, label: str, n: int, max_chars: int) -> list[tuple[str, str | None]]:
    """(synonym, reason it is dropped or None) per generated line: numbering, quotes and explanations after
    ' - ' or ': ' are stripped; empty, over-long, repeated lines and copies of the label are dropped; at most
    `n` are kept (later ones get reason 'over_n')."""
    out: list[tuple[str, str | None]] = []
    seen = {label.casefold().strip()}
    kept = 0
    for line in raw.splitlines():
        text = _BULLET.sub("", line).strip()
        text = re.split(r"\s+-\s+|:\s", text, maxsplit=1)[0].strip(" \"'`*.,;-")
        if not text:
            continue
        if len(text) > max_chars:
            reason: str | None = "too_long"
        elif text.casefold() == label.casefold().strip():
            reason = "copy_of_label"
        elif text.casefold() in seen:
            reason = "duplicate"
        elif kept >= n:
            reason = "over_n"
        else:
            reason = None
            kept += 1
        seen.add(text.casefold())
        out.append((text, reason))
    return out


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def prune_component(vectors: np.ndarray, eps: float, root: int = 0) -> np.ndarray:
    """Mask of the vectors in `root`'s connected component, joining pairs with cosine distance below `eps`."""
    v = unit(np.asarray(vectors, dtype=np.float64))
    adjacent = (1.0 - v @ v.T) < eps
    keep = np.zeros(len(v), dtype=bool)
    keep[root] = True
    queue = deque([root])
    while queue:
        for neighbour in np.flatnonzero(adjacent[queue.popleft()] & ~keep):
            keep[neighbour] = True
            queue.append(int(neighbour))
    return keep


def pad_label_sets(vectors: np.ndarray, owners: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(padded [labels, m, dim], mask [labels, m]) from vectors and the label row owning each one."""
    counts = np.bincount(owners, minlength=n_labels)
    width = max(1, int(counts.max()) if len(counts) else 1)
    padded = np.zeros((n_labels, width, vectors.shape[1]), dtype=np.float32)
    mask = np.zeros((n_labels, width), dtype=bool)
    order = np.argsort(owners, kind="stable")
    slot = np.arange(len(owners)) - np.repeat(np.cumsum(counts) - counts, counts)
    padded[owners[order], slot] = vectors[order]
    mask[owners[order], slot] = True
    return padded, mask


def label_scores(
    queries: np.ndarray, padded: np.ndarray, mask: np.ndarray, aggregation: str, local_k: int = 3
) -> np.ndarray:
    """Scores [queries, labels] of unit queries against label vector sets (see the module docstring).

    The cosine to the mean of a chosen subset S of a label's vectors is Σ_S q·v / ||Σ_S v||; the norm comes from
    the label's Gram matrix, so no per-query centre vector is ever built.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation '{aggregation}' (expected one of: {', '.join(AGGREGATIONS)})")
    sims = np.einsum("qd,lmd->qlm", queries, padded)
    sims = np.where(mask[None], sims, -np.inf)
    if aggregation == "max":
        return sims.max(axis=2).astype(np.float32)
    if aggregation == "centroid":
        chosen = np.broadcast_to(mask[None], sims.shape)
    else:
        rank = np.argsort(np.argsort(-sims, axis=2, kind="stable"), axis=2, kind="stable")
        chosen = (rank < local_k) & mask[None]
    weights = chosen.astype(np.float32)
    gram = np.einsum("lmd,lnd->lmn", padded, padded)
    norms = np.sqrt(np.maximum(np.einsum("qlm,lmn,qln->ql", weights, gram, weights), 1e-12))
    return (np.where(chosen, sims, 0.0).sum(axis=2) / norms).astype(np.float32)


def data_centroids(documents: np.ndarray, top_rows: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(unit mean vector of each label's pseudo-positive documents [labels, dim], their counts): a document is a
    pseudo-positive of the labels in its row of `top_rows` (-1 = none)."""
    sums = np.zeros((n_labels, documents.shape[1]), dtype=np.float64)
    doc_index, rank = np.nonzero(top_rows >= 0)
    np.add.at(sums, top_rows[doc_index, rank], documents[doc_index])
    counts = np.bincount(top_rows[doc_index, rank], minlength=n_labels)
    return unit(sums).astype(np.float32), counts


def profile_agreement(
    candidates: np.ndarray, owners: np.ndarray, centroids: np.ndarray, has_data: np.ndarray
) -> np.ndarray:
    """Pearson correlation, per candidate vector, of its cosines to the data centroids of the labels with data with
    the cosines its owner's data centroid has to them (the owner itself left out); NaN where the owner has no data."""
    reference = centroids[has_data]
    columns = np.flatnonzero(has_data)
    own = unit(candidates) @ reference.T
    implied = centroids[owners] @ reference.T
    out = np.full(len(candidates), np.nan, dtype=np.float64)
    for i, owner in enumerate(owners):
        if not has_data[owner]:
            continue
        others = columns != owner
        out[i] = np.corrcoef(own[i, others], implied[i, others])[0, 1]
    return out


def conse_weights(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of each row of top-T scores at `temperature`: non-negative, each row sums to 1."""
    logits = np.asarray(scores, dtype=np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def conse_queries(
    queries: np.ndarray,
    top_scores: np.ndarray,
    top_rows: np.ndarray,
    label_vectors: np.ndarray,
    alpha: float,
    temperature: float,
) -> np.ndarray:
    """Unit vectors of (1 - alpha) q + alpha Σ_t w_t l_t over each query's top-T labels (w = `conse_weights`).

    alpha = 0 gives the query back (normalised); T = 1 and alpha = 1 give the top label's own vector; alpha = 1 alone is
    Norouzi et al.'s ConSE (a convex combination of label embeddings, weighted by the softmax of the scores).
    """
    weights = conse_weights(top_scores, temperature)
    mixture = np.einsum("qt,qtd->qd", weights, label_vectors[top_rows])
    return unit((1.0 - alpha) * np.asarray(queries, dtype=np.float64) + alpha * mixture).astype(np.float32)
