"""The distillation loss: contrastive (MNRL) plus listwise distillation (KL or MarginMSE) on the teacher."""

from __future__ import annotations

from typing import Any

import torch

from eztag.distillation.config import DistilConfig


class DistilLoss(torch.nn.Module):
    """contrastive_weight * (cached) MNRL over in-batch and hard negatives + distillation_weight * KL or MarginMSE.

    A sentence-transformers loss: `forward(sentence_features, labels)` over (anchor, positive, negative_1..) columns
    with the teacher scores of the list as labels; the embeddings are computed once unless the cached MNRL needs
    its own passes.
    """

    def __init__(self, model: Any, config: DistilConfig) -> None:
        from sentence_transformers.sentence_transformer import losses

        super().__init__()
        self.model, self.config = model, config
        self.contrastive: Any
        directions: tuple[Any, ...] = ("query_to_doc", "doc_to_query") if config.symmetric else ("query_to_doc",)
        if config.contrastive == "mnrl":
            self.contrastive = losses.MultipleNegativesRankingLoss(
                model, scale=1 / config.temperature, directions=directions
            )
        else:
            self.contrastive = losses.CachedMultipleNegativesRankingLoss(
                model, scale=1 / config.temperature, directions=directions, mini_batch_size=config.mini_batch_size
            )
        self.margin_mse = losses.MarginMSELoss(model)

    def get_config_dict(self) -> dict[str, Any]:
        """The loss's settings, for the model card sentence-transformers writes."""
        config = self.config
        return {
            "contrastive": config.contrastive,
            "contrastive_weight": config.contrastive_weight,
            "distillation": config.distillation,
            "distillation_weight": config.distillation_weight,
            "symmetric": config.symmetric,
            "temperature": config.temperature,
            "teacher_temperature": config.teacher_temperature,
        }

    def distillation(self, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Listwise KL(teacher || student) over each row's candidates, or MarginMSE on the same scale."""
        config = self.config
        if config.distillation == "margin-mse":
            return self.margin_mse.compute_loss_from_embeddings(
                embeddings, labels * config.temperature / config.teacher_temperature
            )
        candidates = torch.stack(embeddings[1:], dim=1)
        student = torch.einsum("bd,bnd->bn", embeddings[0], candidates) / config.temperature
        target = torch.softmax(labels / config.teacher_temperature, dim=1)
        return torch.nn.functional.kl_div(torch.log_softmax(student, dim=1), target, reduction="batchmean")

    def forward(self, sentence_features: list[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
        from sentence_transformers.base.losses.merged_forward import embed_columns

        config = self.config
        sentence_features = list(sentence_features)
        labels = labels.float()
        embeddings = None
        total = torch.zeros((), device=labels.device)
        if config.contrastive_weight and config.contrastive == "cached-mnrl":
            total = total + config.contrastive_weight * self.contrastive(sentence_features, labels)
        elif config.contrastive_weight:
            embeddings = embed_columns(self.model, sentence_features)
            total = total + config.contrastive_weight * self.contrastive.compute_loss_from_embeddings(
                embeddings, labels
            )
        if config.distillation_weight:
            if embeddings is None:
                embeddings = embed_columns(self.model, sentence_features)
            total = total + config.distillation_weight * self.distillation(embeddings, labels)
        return total
