"""Single-task MLP: one tower per model, one label. The CTR model trains on all impressions;
the classic CVR model trains on clicked impressions only (the trainer's `clicked_only`), which
is exactly the sample-selection bias ESMM and MMoE with CTCVR remove."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .layers import FeatureInput, InputSchema, RankingModel, mlp


class SingleTask(RankingModel):
    name = "single_task"

    def __init__(self, schema: InputSchema, embed_dim: int = 8, hidden: Sequence[int] = (128, 64), dropout: float = 0.0, **params: Any):
        super().__init__(schema, embed_dim=embed_dim, hidden=list(hidden), dropout=dropout, **params)
        if len(schema.tasks) != 1:
            raise ValueError(f"single_task models one task; the schema has {schema.tasks}")
        self.input = FeatureInput(schema, embed_dim)
        self.tower = mlp(self.input.out_dim, hidden, dropout, out_dim=1)

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        return {self.schema.tasks[0]: self.tower(self.input(batch)).squeeze(-1)}
