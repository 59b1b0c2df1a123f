"""Model folders with random weights from the weightless skeletons in benchmarks/models/ (config and tokenizer
only), for timing on hosts where weights cannot travel: speed does not depend on weight values, so no quality
figure from such a model means anything.

    python benchmarks/random_models.py OUT_DIR      # OUT_DIR/qwen2.5-coder-1.5b and OUT_DIR/all-minilm-l6-v2
"""

from __future__ import annotations

import argparse
import lzma
import shutil
from pathlib import Path

import torch

SKELETONS = Path(__file__).resolve().parent / "models"


def materialise(name: str, out_dir: Path, *, causal: bool, layers: int | None = None) -> Path:
    """OUT_DIR/NAME: the skeleton's files (`.xz` decompressed) and random weights (seed 0) made on the GPU when
    there is one (seconds there; a 1.5B model takes minutes on 2 CPU cores). `layers` cuts a causal LM's depth."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    folder = out_dir / (name if layers is None else f"{name}-{layers}-layers")
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for path in (SKELETONS / name).rglob("*"):
        target = folder / path.relative_to(SKELETONS / name)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.suffix == ".xz":
            target.with_suffix("").write_bytes(lzma.decompress(path.read_bytes()))
        else:
            shutil.copy(path, target)
    config = AutoConfig.from_pretrained(folder)
    if layers is not None:
        config.num_hidden_layers = layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[:layers]
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        if causal:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        else:
            model = AutoModel.from_config(config)
    model.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    print(materialise("qwen2.5-coder-1.5b", args.out_dir, causal=True))
    print(materialise("all-minilm-l6-v2", args.out_dir, causal=False))


if __name__ == "__main__":
    main()
