"""The token-batched encoder gives what SentenceTransformer.encode gives, in input order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eztag.encoders.sentence_transformers import token_batches


def test_token_batches_cover_every_row_once_and_pad_to_their_own_longest(minilm) -> None:
    """Batches by token count, longest first: every row once, each batch cut to its own longest text (no column
    of padding only), with the batch's rows of every per-row tensor; the modality string passes as it is. Token
    order is not character order here ("internationalisation" is a long word of few characters per token)."""
    texts = ["internationalisation", "a b c d e f", "x", "a b", "", "word " * 30, "a b c"]
    features = minilm.model.preprocess(texts)
    lengths = features["attention_mask"].sum(dim=1).tolist()
    batches = list(token_batches(features, 3))
    assert [len(rows) for rows, _ in batches] == [3, 3, 1]
    assert sorted(np.concatenate([rows for rows, _ in batches]).tolist()) == list(range(len(texts)))
    order = [lengths[row] for rows, _ in batches for row in rows]
    assert order == sorted(lengths, reverse=True)
    for rows, batch in batches:
        mask = batch["attention_mask"]
        assert mask.shape == (len(rows), max(lengths[row] for row in rows))  # only the columns its rows use
        assert mask.sum(dim=1).tolist() == [lengths[row] for row in rows]
        assert torch.equal(
            batch["input_ids"][mask.bool()], features["input_ids"][rows][features["attention_mask"][rows].bool()]
        )
        assert batch.get("modality", "text") == features.get("modality", "text")


@pytest.mark.parametrize(("batch_size", "max_tokens"), [(100, 24), (2, 24), (100, 5)])
def test_token_batches_hold_at_most_max_tokens(minilm, batch_size: int, max_tokens: int) -> None:
    """With a token budget (the CPU's), a batch holds at most `max_tokens` rows x padded length and `batch_size`
    rows; a text longer than the budget goes alone; still every row once, longest first."""
    texts = ["word " * 30, "a b c d e f", "x", "a b", "", "internationalisation", "a b c", "y", "z", "w"]
    features = minilm.model.preprocess(texts)
    lengths = features["attention_mask"].sum(dim=1).tolist()
    batches = list(token_batches(features, batch_size, max_tokens))
    assert sorted(np.concatenate([rows for rows, _ in batches]).tolist()) == list(range(len(texts)))
    assert [lengths[row] for rows, _ in batches for row in rows] == sorted(lengths, reverse=True)
    for rows, batch in batches:
        assert len(rows) <= batch_size
        assert len(rows) == 1 or batch["attention_mask"].numel() <= max_tokens
    for rows, _ in batches[:-1]:  # full: one more row would pass a limit
        assert len(rows) == batch_size or (len(rows) + 1) * lengths[rows[0]] > max_tokens
    assert len(batches[0][0]) == 1  # the 30-word text is longer than either budget


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


def test_texts_past_one_tokeniser_call_keep_their_rows(minilm, debtags_texts, monkeypatch) -> None:
    """A call longer than TOKENISED_AT_ONCE is tokenised in parts, each batched on its own: the same vectors in the
    same rows as in one part (a part of 7 texts, 3 parts and a remainder of 1)."""
    from eztag.encoders import sentence_transformers

    documents, labels = debtags_texts
    texts = documents[:5] + labels[:17]
    whole = minilm.encode(texts)
    monkeypatch.setattr(sentence_transformers, "TOKENISED_AT_ONCE", 7)
    np.testing.assert_allclose(minilm.encode(texts), whole, atol=1e-5)


def test_bfloat16_on_the_cpu(minilm, debtags_texts) -> None:
    """precision = bfloat16 on the CPU loads bf16 weights and stays within 0.01 cosine of float32."""
    from eztag.encoders.sentence_transformers import SentenceTransformerEncoder

    documents, labels = debtags_texts
    texts = documents[:12] + labels[:36]
    encoder = SentenceTransformerEncoder("default", device="cpu", precision="bfloat16")
    vectors = encoder.encode(texts)
    assert vectors.dtype == np.float32 and next(encoder.model.parameters()).dtype == torch.bfloat16
    assert np.sum(vectors * minilm.encode(texts), axis=1).min() > 0.99
