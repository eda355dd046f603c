"""ESMM (Ma et al., SIGIR 2018): shared embeddings, a CTR tower and a CVR tower. Trained over
all impressions on CTR and CTCVR = pCTR·pCVR (the trainer's `esmm` loss), so the CVR tower
learns p(valid play | click) without ever being fit on the clicked subset alone."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .layers import FeatureInput, InputSchema, RankingModel, TaskHeads


class ESMM(RankingModel):
    name = "esmm"

    def __init__(self, schema: InputSchema, embed_dim: int = 8, tower_hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.0, **params: Any):
        super().__init__(schema, embed_dim=embed_dim, tower_hidden=list(tower_hidden), dropout=dropout, **params)
        if len(schema.tasks) != 2:
            raise ValueError(f"esmm needs exactly two tasks (click, conversion); the schema has {schema.tasks}")
        self.input = FeatureInput(schema, embed_dim)
        self.heads = TaskHeads(schema, self.input.out_dim, tower_hidden, dropout)

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        x = self.input(batch)
        return self.heads([x, x], batch, with_position)
