"""Share-Bottom (Caruana 1997): one shared MLP bottom, one tower per task."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .layers import FeatureInput, InputSchema, RankingModel, TaskHeads, mlp, mlp_out_dim


class SharedBottom(RankingModel):
    name = "shared_bottom"

    def __init__(self, schema: InputSchema, embed_dim: int = 8, bottom_hidden: Sequence[int] = (128, 64),
                 tower_hidden: Sequence[int] = (32,), dropout: float = 0.0, **params: Any):
        super().__init__(schema, embed_dim=embed_dim, bottom_hidden=list(bottom_hidden), tower_hidden=list(tower_hidden),
                         dropout=dropout, **params)
        self.input = FeatureInput(schema, embed_dim)
        self.bottom = mlp(self.input.out_dim, bottom_hidden, dropout)
        self.heads = TaskHeads(schema, mlp_out_dim(self.input.out_dim, bottom_hidden), tower_hidden, dropout)

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        h = self.bottom(self.input(batch))
        return self.heads([h] * len(self.schema.tasks), batch, with_position)
