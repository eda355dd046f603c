"""DeepFM (Guo et al., IJCAI 2017): wide first-order + FM second-order + deep MLP over the same
field embeddings, summed into one logit. Single-task (CTR) in the comparison."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .layers import FeatureInput, FMInteraction, InputSchema, LinearPart, RankingModel, mlp


class DeepFM(RankingModel):
    name = "deepfm"

    def __init__(self, schema: InputSchema, embed_dim: int = 8, hidden: Sequence[int] = (128, 64), dropout: float = 0.0, **params: Any):
        super().__init__(schema, embed_dim=embed_dim, hidden=list(hidden), dropout=dropout, **params)
        self.input = FeatureInput(schema, embed_dim)
        self.linear = LinearPart(schema)
        self.fm = FMInteraction()
        self.deep = mlp(self.input.out_dim, hidden, dropout, out_dim=len(schema.tasks))

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        emb = self.input.field_embeddings(batch)
        shared = self.linear(batch) + self.fm(emb)
        deep = self.deep(torch.cat([emb.flatten(1), batch["dense"]], dim=1))
        return {t: shared + deep[:, i] for i, t in enumerate(self.schema.tasks)}
