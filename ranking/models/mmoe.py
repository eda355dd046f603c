"""MMoE as the article's ranking model (seed 002 §3.2; Ma et al., KDD 2018):

- shared input (all features embedded once, 特征共享);
- N experts and one softmax gate per task; experts and gates configurable from simple to deep
  (`expert_hidden`, `gate_hidden=[]` = one linear gate);
- per-task fully connected towers;
- a shallow position tower whose logit is added to the click logit in training and dropped at
  serving (position-bias removal);
- raw inputs through a sigmoid shortcut to each task's top (memorization);
- trained with the ESMM loss (CTR and CTCVR over all impressions) with fixed or uncertainty weights
  (that part is the trainer's).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .layers import Experts, FeatureInput, Gate, InputSchema, RankingModel, TaskHeads


class MMoE(RankingModel):
    name = "mmoe"

    def __init__(self, schema: InputSchema, embed_dim: int = 8, n_experts: int = 4, expert_hidden: Sequence[int] = (64, 32),
                 gate_hidden: Sequence[int] = (), tower_hidden: Sequence[int] = (16,), dropout: float = 0.0,
                 shortcut: bool = True, position_tower: bool = True, position_hidden: int = 8, **params: Any):
        super().__init__(schema, embed_dim=embed_dim, n_experts=n_experts, expert_hidden=list(expert_hidden),
                         gate_hidden=list(gate_hidden), tower_hidden=list(tower_hidden), dropout=dropout,
                         shortcut=shortcut, position_tower=position_tower, position_hidden=position_hidden, **params)
        self.input = FeatureInput(schema, embed_dim)
        self.experts = Experts(self.input.out_dim, n_experts, expert_hidden, dropout)
        self.gates = torch.nn.ModuleList(Gate(self.input.out_dim, n_experts, gate_hidden) for _ in schema.tasks)
        self.heads = TaskHeads(schema, self.experts.out_dim, tower_hidden, dropout, shortcut=shortcut,
                               position_tower=position_tower, position_hidden=position_hidden)

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        x = self.input(batch)
        e = self.experts(x)
        return self.heads([g(x, e) for g in self.gates], batch, with_position)
