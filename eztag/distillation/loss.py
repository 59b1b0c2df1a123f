"""The distillation loss: contrastive (MNRL) plus listwise distillation (KL or MarginMSE) on the teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eztag.stages.distil import Config


def build_loss(model: Any, config: Config) -> Any:
    """contrastive_weight * (cached) MNRL over in-batch and hard negatives + distillation_weight * KL or MarginMSE."""
    import torch
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from sentence_transformers.sentence_transformer import losses

    directions = ("query_to_doc", "doc_to_query") if config.symmetric else ("query_to_doc",)
    if config.contrastive == "mnrl":
        contrastive = losses.MultipleNegativesRankingLoss(model, scale=1 / config.temperature, directions=directions)
    else:
        contrastive = losses.CachedMultipleNegativesRankingLoss(
            model, scale=1 / config.temperature, directions=directions, mini_batch_size=config.mini_batch_size
        )
    margin_mse = losses.MarginMSELoss(model)

    class DistilLoss(torch.nn.Module):
        """The weighted sum; the embeddings are computed once unless the cached MNRL needs its own passes."""

        def __init__(self) -> None:
            super().__init__()
            self.model, self.contrastive, self.margin_mse = model, contrastive, margin_mse

        def distillation(self, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
            """Listwise KL(teacher || student) over each row's candidates, or MarginMSE on the same scale."""
            if config.distillation == "margin-mse":
                return self.margin_mse.compute_loss_from_embeddings(
                    embeddings, labels * config.temperature / config.teacher_temperature
                )
            candidates = torch.stack(embeddings[1:], dim=1)
            student = torch.einsum("bd,bnd->bn", embeddings[0], candidates) / config.temperature
            target = torch.softmax(labels / config.teacher_temperature, dim=1)
            return torch.nn.functional.kl_div(torch.log_softmax(student, dim=1), target, reduction="batchmean")

        def forward(self, sentence_features: list[dict[str, torch.Tensor]], labels: torch.Tensor) -> torch.Tensor:
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

    return DistilLoss()
