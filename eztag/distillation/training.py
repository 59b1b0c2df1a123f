"""One round of training: a sentence-transformers trainer run on the training rows, resumable."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from eztag.artifacts import atomic_dir
from eztag.distillation.config import DistilConfig


def train(base_model: str, columns: dict[str, list], config: DistilConfig, round_dir: Path) -> dict[str, Any]:
    """Train a copy of `base_model` into round_dir/model, resuming from the newest checkpoint in round_dir."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from transformers.trainer_utils import get_last_checkpoint

    from eztag.devices import pick_device, pick_dtype
    from eztag.distillation.loss import DistilLoss

    device = pick_device(config.device, field="distil.device")
    bf16 = pick_dtype(config.precision, device, gpu_auto="bfloat16") == torch.bfloat16  # mixed precision: bf16 or off
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = SentenceTransformer(base_model, device=str(device))
    checkpoints = round_dir / "checkpoints"
    arguments = Arguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the steps (transformers 5)
        bf16=bf16,
        use_cpu=device.type == "cpu",
        batch_sampler=config.batch_sampler,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        logging_steps=1,
        report_to="none",
        seed=config.seed,
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=arguments, train_dataset=Dataset.from_dict(columns), loss=DistilLoss(model, config)
    )
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started
    with atomic_dir(round_dir / "model") as tmp:
        model.save(str(tmp))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "rows": len(columns["anchor"]),
        "steps": result.global_step,
        "resumed_from": Path(last).name if last else None,
        "losses": [round(float(value), 5) for value in losses],
        "train_loss": round(float(result.training_loss), 5),
        "seconds": round(seconds, 2),
    }
