"""PLE (Tang et al., RecSys 2020): stacked CGC levels with task-specific and shared experts.
Each task's gate mixes its own experts with the shared ones; the shared gate (in all but the
last level) mixes every expert to feed the next level's shared input."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .layers import Experts, FeatureInput, Gate, InputSchema, RankingModel, TaskHeads


class CGCLevel(nn.Module):
    def __init__(self, in_dim: int, n_tasks: int, n_specific: int, n_shared: int, expert_hidden: Sequence[int],
                 gate_hidden: Sequence[int], last: bool, dropout: float = 0.0):
        super().__init__()
        self.task_experts = nn.ModuleList(Experts(in_dim, n_specific, expert_hidden, dropout) for _ in range(n_tasks))
        self.shared_experts = Experts(in_dim, n_shared, expert_hidden, dropout)
        self.task_gates = nn.ModuleList(Gate(in_dim, n_specific + n_shared, gate_hidden) for _ in range(n_tasks))
        self.shared_gate = None if last else Gate(in_dim, n_tasks * n_specific + n_shared, gate_hidden)
        self.out_dim = self.shared_experts.out_dim

    def forward(self, task_in: list[torch.Tensor], shared_in: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        shared = self.shared_experts(shared_in)
        specific = [ex(x) for ex, x in zip(self.task_experts, task_in)]
        outs = [g(x, torch.cat([s, shared], dim=1)) for g, x, s in zip(self.task_gates, task_in, specific)]
        nxt = self.shared_gate(shared_in, torch.cat(specific + [shared], dim=1)) if self.shared_gate is not None else None
        return outs, nxt


class PLE(RankingModel):
    name = "ple"

    def __init__(self, schema: InputSchema, embed_dim: int = 8, n_levels: int = 2, n_specific: int = 2, n_shared: int = 2,
                 expert_hidden: Sequence[int] = (64, 32), gate_hidden: Sequence[int] = (), tower_hidden: Sequence[int] = (16,),
                 dropout: float = 0.0, shortcut: bool = False, position_tower: bool = False, **params: Any):
        super().__init__(schema, embed_dim=embed_dim, n_levels=n_levels, n_specific=n_specific, n_shared=n_shared,
                         expert_hidden=list(expert_hidden), gate_hidden=list(gate_hidden), tower_hidden=list(tower_hidden),
                         dropout=dropout, shortcut=shortcut, position_tower=position_tower, **params)
        self.input = FeatureInput(schema, embed_dim)
        n_t = len(schema.tasks)
        levels, d = [], self.input.out_dim
        for i in range(n_levels):
            lv = CGCLevel(d, n_t, n_specific, n_shared, expert_hidden, gate_hidden, last=i == n_levels - 1, dropout=dropout)
            levels.append(lv)
            d = lv.out_dim
        self.levels = nn.ModuleList(levels)
        self.heads = TaskHeads(schema, d, tower_hidden, dropout, shortcut=shortcut, position_tower=position_tower)

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        x = self.input(batch)
        task_in, shared_in = [x] * len(self.schema.tasks), x
        for lv in self.levels:
            task_in, shared_in = lv(task_in, shared_in)
        return self.heads(task_in, batch, with_position)
