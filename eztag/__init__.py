"""eztag: extreme zero-shot multi-label tagging with an LLM teacher distilled into a bi-encoder."""

__version__ = "0.1.0"
