"""Ranking metrics for multi-label tagging: P@k, R@k, nDCG@k, PSP@k and label coverage.

Definitions (averaged over the documents that have at least one ground-truth label):
- P@k = |top-k ∩ gold| / k;  R@k = |top-k ∩ gold| / |gold|.
- nDCG@k = Σ_{r≤k} hit_r / log2(r+1)  /  Σ_{r≤min(k,|gold|)} 1 / log2(r+1).
- PSP@k (Jain et al., KDD 2016) weights a hit on label l by 1 / p_l, with propensity
  p_l = 1 / (1 + C (N_l + B)^-A), C = (ln N - 1)(B + 1)^A, N documents, N_l of them with label l.
  N and N_l come from the evaluated documents unless a label-frequency source is given (`propensity_counts`:
  training ground truth, as published PSP figures use). It is normalised as in pyxclib: Σ_docs Σ_{top-k} hit / p
  divided by the same sum for the best possible ranking (gold labels ordered by 1 / p),
  so 1.0 is perfect. A = 0.55, B = 1.5 by default.
- coverage@k: distinct gold labels found in some document's top-k / distinct gold labels.

Set metrics of the selected tags S_d against the gold labels G_d (same documents):
- example-based F1 = mean_d 2 |S_d ∩ G_d| / (|S_d| + |G_d|) (and example-based precision and recall, a document
  with no selected tag counting precision 0);
- micro-F1 = 2 Σ_d |S_d ∩ G_d| / (Σ_d |S_d| + Σ_d |G_d|);
- macro-F1 = mean over labels selected or gold somewhere of 2 TP_l / (|selected l| + |gold l|);
- tags per document: mean |S_d| and mean |G_d|.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (1, 3, 5, 10, 100)
SET_METRICS = ("example_P", "example_R", "example_F1", "micro_F1", "macro_F1", "tags_per_doc", "gold_per_doc")
"""The metrics of the selected tags (`set_metrics`), beside the ranked-list metrics at each k."""


def propensities(label_counts: np.ndarray, n_documents: int, a: float = 0.55, b: float = 1.5) -> np.ndarray:
    """Jain et al.'s propensity of each label from its document frequency."""
    c = (np.log(n_documents) - 1.0) * (b + 1.0) ** a
    return 1.0 / (1.0 + c * np.power(label_counts + b, -a))


def hit_matrix(predicted: np.ndarray, gold: list[set[int]]) -> np.ndarray:
    """hits[d, r] = 1 when predicted[d, r] (a label row, -1 for none) is a gold label of document d."""
    hits = np.zeros(predicted.shape, dtype=np.float64)
    for d, (row, labels) in enumerate(zip(predicted, gold, strict=True)):
        if labels:
            hits[d] = [label in labels for label in row]
    return hits


def per_document(hits: np.ndarray, n_gold: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """P@k, R@k and nDCG@k of every document, from its `hit_matrix` row and its number of gold labels."""
    top = hits[:, :k]
    found = top.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_dcg = np.array([discounts[: int(min(k, g))].sum() for g in n_gold])
    return {
        f"P@{k}": found / k,
        f"R@{k}": found / n_gold,
        f"nDCG@{k}": (top * discounts[: top.shape[1]]).sum(axis=1) / ideal_dcg,
    }


def evaluate_documents(
    predicted: np.ndarray,
    gold: list[set[int]],
    n_labels: int,
    ks: tuple[int, ...] = DEFAULT_KS,
    a: float = 0.55,
    b: float = 1.5,
    propensity_counts: tuple[np.ndarray, int] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """`evaluate`'s metrics and the per-document numbers they average, computed once.

    The second value holds one array per column, over the documents with ground-truth labels in their order:
    P@k, R@k and nDCG@k (their means are the metrics), and PSP@k's numerator `PSP@k:num` (Σ_{top-k} hit / p_l)
    and denominator `PSP@k:den` (the same sum for the best possible ranking), so PSP@k = Σ num / Σ den (the metric
    sums the [documents, k] matrices in one go, which can differ from Σ num / Σ den in the last bit).
    Coverage@k counts distinct labels over all documents, so it has no per-document column.
    """
    has_gold = np.array([len(labels) > 0 for labels in gold])
    predicted, gold = predicted[has_gold], [labels for labels in gold if labels]
    if not gold:
        raise ValueError("no document has ground-truth labels")
    hits = hit_matrix(predicted, gold)
    n_gold = np.array([len(labels) for labels in gold], dtype=np.float64)
    counts = np.zeros(n_labels)
    for labels in gold:
        counts[list(labels)] += 1
    label_counts, n_documents = propensity_counts or (counts, len(gold))
    inverse_p = 1.0 / propensities(label_counts, n_documents, a, b)
    safe_rows = np.where(predicted >= 0, predicted, 0)
    weighted = hits * inverse_p[safe_rows]
    ideal = np.zeros((len(gold), max(ks)))
    for d, labels in enumerate(gold):
        best = np.sort(inverse_p[list(labels)])[::-1][: max(ks)]
        ideal[d, : len(best)] = best
    width = predicted.shape[1]
    out: dict[str, float] = {}
    documents: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, : min(k, width)]
        columns = per_document(hits, n_gold, k)
        documents.update(columns)
        out.update({name: float(np.mean(values)) for name, values in columns.items()})
        documents[f"PSP@{k}:num"] = weighted[:, : min(k, width)].sum(axis=1)
        documents[f"PSP@{k}:den"] = ideal[:, :k].sum(axis=1)
        out[f"PSP@{k}"] = float(weighted[:, : min(k, width)].sum() / ideal[:, :k].sum())
        correct = predicted[:, : min(k, width)][top > 0]
        out[f"coverage@{k}"] = float(len(np.unique(correct)) / np.count_nonzero(counts))
    return out, documents


def evaluate(
    predicted: np.ndarray,
    gold: list[set[int]],
    n_labels: int,
    ks: tuple[int, ...] = DEFAULT_KS,
    a: float = 0.55,
    b: float = 1.5,
    propensity_counts: tuple[np.ndarray, int] | None = None,
) -> dict[str, float]:
    """All metrics at every k; `predicted` is [documents, max k] label rows, best first, -1 padded.

    `propensity_counts`: (documents per label row, number of documents) for PSP's propensities; by default the
    evaluated documents' own ground truth. `evaluate_documents` also returns the per-document numbers.
    """
    return evaluate_documents(predicted, gold, n_labels, ks, a, b, propensity_counts)[0]


def recall_curve(predicted: np.ndarray, gold: list[set[int]]) -> list[float]:
    """R@k for k = 1 … predicted.shape[1], over documents with ground truth."""
    keep = [d for d, labels in enumerate(gold) if labels]
    hits = hit_matrix(predicted[keep], [gold[d] for d in keep])
    n_gold = np.array([len(gold[d]) for d in keep], dtype=np.float64)
    return (np.cumsum(hits, axis=1) / n_gold[:, None]).mean(axis=0).tolist()


def example_f1(selected: list[set[int]], gold: list[set[int]]) -> np.ndarray:
    """2 |S ∩ G| / (|S| + |G|) of every document with gold labels."""
    return np.array(
        [
            2 * len(chosen & labels) / (len(chosen) + len(labels))
            for chosen, labels in zip(selected, gold, strict=True)
            if labels
        ]
    )


def set_metrics(selected: list[set[int]], gold: list[set[int]]) -> dict[str, float]:
    """Example-based P/R/F1, micro-F1, macro-F1 and tags per document (see the module docstring)."""
    pairs = [(chosen, labels) for chosen, labels in zip(selected, gold, strict=True) if labels]
    if not pairs:
        raise ValueError("no document has ground-truth labels")
    hits = np.array([len(chosen & labels) for chosen, labels in pairs], dtype=np.float64)
    n_selected = np.array([len(chosen) for chosen, _ in pairs], dtype=np.float64)
    n_gold = np.array([len(labels) for _, labels in pairs], dtype=np.float64)
    true_positive: dict[int, int] = {}
    counts: dict[int, int] = {}
    for chosen, labels in pairs:
        for label in chosen & labels:
            true_positive[label] = true_positive.get(label, 0) + 1
        for label in [*chosen, *labels]:
            counts[label] = counts.get(label, 0) + 1
    return {
        "example_P": float(np.mean(hits / np.maximum(n_selected, 1))),
        "example_R": float(np.mean(hits / n_gold)),
        "example_F1": float(np.mean(2 * hits / (n_selected + n_gold))),
        "micro_F1": float(2 * hits.sum() / (n_selected.sum() + n_gold.sum())),
        "macro_F1": float(np.mean([2 * true_positive.get(label, 0) / count for label, count in counts.items()])),
        "tags_per_doc": float(n_selected.mean()),
        "gold_per_doc": float(n_gold.mean()),
    }
