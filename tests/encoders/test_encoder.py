"""The bucketed encoder gives what SentenceTransformer.encode gives, in input order."""

from __future__ import annotations

import numpy as np
import torch

from eztag.encoders.sentence_transformers import length_buckets


def test_length_buckets_cover_every_row_once() -> None:
    texts = ["a", "abcd", "ab", "", "abc"]
    batches = length_buckets(texts, 2)
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert sorted(np.concatenate(batches).tolist()) == list(range(5))
    assert [texts[row] for row in np.concatenate(batches)] == ["abcd", "abc", "ab", "a", ""]


def test_matches_sentence_transformers(minilm, debtags_texts) -> None:
    documents, labels = debtags_texts
    texts = documents[:20] + labels[:60]  # long and short texts, interleaved by the bucketing
    minilm.batch_size = 16
    ours = minilm.encode(texts)
    reference = minilm.model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32 and ours.shape == (80, minilm.dim)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert minilm.encode([]).shape == (0, minilm.dim)


def test_bfloat16_on_the_cpu(minilm, debtags_texts) -> None:
    """precision = bfloat16 on the CPU loads bf16 weights and stays within 0.01 cosine of float32."""
    from eztag.encoders.sentence_transformers import SentenceTransformerEncoder

    documents, labels = debtags_texts
    texts = documents[:12] + labels[:36]
    encoder = SentenceTransformerEncoder("default", device="cpu", precision="bfloat16")
    vectors = encoder.encode(texts)
    assert vectors.dtype == np.float32 and next(encoder.model.parameters()).dtype == torch.bfloat16
    assert np.sum(vectors * minilm.encode(texts), axis=1).min() > 0.99
