"""Layers shared by every ranking model (one place, DeepCTR / torch-rechub style).

A model sees one batch as a dict of tensors:
- `dense`    float [B, D]  already normalized numeric features (smoothed rates, log-bucketed counts, scores);
- `sparse`   long  [B, S]  one id per categorical field, 0 = the shared bucket for rare / unknown ids;
- `position` long  [B]     1-based display position (training only: the position tower).
The columns are described by an `InputSchema`, which is saved with the model so a model is
never run against features it was not trained on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn


@dataclass
class InputSchema:
    dense: list[str]
    sparse: dict[str, int]                  # field name → vocabulary size (ids 0..size-1)
    tasks: list[str]                        # output heads, e.g. ["ctr", "cvr"] or ["income", "marital"]
    n_positions: int = 0                    # > 0: a position column exists (bias tower in training)
    extra: dict[str, Any] = field(default_factory=dict)  # feature-pipeline details (vocab, bucket edges…)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSchema":
        return cls(list(d["dense"]), {k: int(v) for k, v in d["sparse"].items()}, list(d["tasks"]),
                   int(d.get("n_positions", 0)), dict(d.get("extra", {})))

    def signature(self) -> dict[str, Any]:
        """What must match between a trained model and the features served to it."""
        return {"dense": self.dense, "sparse": self.sparse, "tasks": self.tasks}


def mlp(in_dim: int, hidden: Sequence[int], dropout: float = 0.0, out_dim: int | None = None) -> nn.Sequential:
    """Fully connected stack (Linear → ReLU → Dropout)*, optionally ending in a linear output."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def mlp_out_dim(in_dim: int, hidden: Sequence[int]) -> int:
    return hidden[-1] if hidden else in_dim


def _offsets(schema: InputSchema) -> torch.Tensor:
    sizes = [max(1, n) for n in schema.sparse.values()]
    return torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0, dtype=torch.long)


class FeatureInput(nn.Module):
    """Embeds every sparse field and concatenates with the dense columns: the shared input of all
    models (the article's 特征共享 bottom). All fields live in ONE table with per-field offsets,
    so a batch is one embedding lookup (this is what keeps 500 candidates under a few ms)."""

    def __init__(self, schema: InputSchema, embed_dim: int = 8):
        super().__init__()
        self.schema = schema
        self.embed_dim = embed_dim
        self.register_buffer("offsets", _offsets(schema), persistent=False)
        self.table = nn.Embedding(max(1, sum(max(1, n) for n in schema.sparse.values())), embed_dim)
        nn.init.normal_(self.table.weight, std=0.05)
        self.n_sparse = len(schema.sparse)
        self.n_dense = len(schema.dense)
        self.out_dim = self.n_sparse * embed_dim + self.n_dense

    def field_embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, S, E] — for FM interactions."""
        sp = batch["sparse"]
        if self.n_sparse == 0:
            return sp.new_zeros((sp.shape[0], 0, self.embed_dim), dtype=torch.float32)
        return self.table(sp + self.offsets)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        e = self.field_embeddings(batch).flatten(1)
        return torch.cat([e, batch["dense"]], dim=1)


class LinearPart(nn.Module):
    """First-order (wide) logit: one weight per sparse id plus a linear map of the dense columns."""

    def __init__(self, schema: InputSchema, squash_dense: bool = False):
        super().__init__()
        self.register_buffer("offsets", _offsets(schema), persistent=False)
        self.n_sparse = len(schema.sparse)
        self.weights = nn.Embedding(max(1, sum(max(1, n) for n in schema.sparse.values())), 1)
        nn.init.zeros_(self.weights.weight)
        self.dense = nn.Linear(len(schema.dense), 1) if schema.dense else None
        self.squash_dense = squash_dense

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        sp = batch["sparse"]
        out = sp.new_zeros(sp.shape[0], dtype=torch.float32)
        if self.n_sparse:
            out = out + self.weights(sp + self.offsets).sum(dim=(1, 2))
        if self.dense is not None:
            d = batch["dense"]
            out = out + self.dense(torch.sigmoid(d) if self.squash_dense else d).squeeze(-1)
        return out


class SigmoidShortcut(LinearPart):
    """The article's memorization path: the raw input features pass through a sigmoid straight to a
    task's top and add a linear logit, which corrects rules the deep part over-generalizes."""

    def __init__(self, schema: InputSchema):
        super().__init__(schema, squash_dense=True)


class FMInteraction(nn.Module):
    """Second-order FM term: ½ Σ_k [(Σ_i v_ik)² − Σ_i v_ik²] over the field embeddings."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        s = emb.sum(dim=1)
        return 0.5 * (s.pow(2) - emb.pow(2).sum(dim=1)).sum(dim=1)


class PositionTower(nn.Module):
    """Shallow tower on the display position only. Its logit is added to the click logit while
    training (it absorbs position bias: users click slot 1 more whatever is there) and left out
    at serving, where every candidate is scored as if at the same position."""

    def __init__(self, n_positions: int, hidden: int = 8):
        super().__init__()
        self.n_positions = n_positions
        self.emb = nn.Embedding(n_positions + 1, hidden)  # 0 = unknown / beyond the last slot
        self.out = nn.Linear(hidden, 1)

    def forward(self, position: torch.Tensor) -> torch.Tensor:
        p = position.clamp(0, self.n_positions)
        return self.out(torch.relu(self.emb(p))).squeeze(-1)


class Experts(nn.Module):
    """N expert MLPs on the same input → [B, N, H].

    At inference the experts' first layers run as ONE matmul (their weights concatenated), with
    one ReLU, instead of N small ones: for 500 candidates that is most of an MMoE forward. The
    concatenated weights are cached against the parameters' versions, so loading or training
    new weights is picked up."""

    def __init__(self, in_dim: int, n: int, hidden: Sequence[int], dropout: float = 0.0):
        super().__init__()
        self.experts = nn.ModuleList(mlp(in_dim, hidden, dropout) for _ in range(n))
        self.out_dim = mlp_out_dim(in_dim, hidden)
        self._fused: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled() or not self.experts or len(self.experts[0]) < 2:
            return torch.stack([e(x) for e in self.experts], dim=1)
        firsts = [e[0] for e in self.experts]
        key = tuple(t._version for f in firsts for t in (f.weight, f.bias)) + tuple(id(f.weight) for f in firsts)
        if self._fused is None or self._fused[0] != key:
            self._fused = (key, torch.cat([f.weight for f in firsts]).t().contiguous(), torch.cat([f.bias for f in firsts]))
        _, w, b = self._fused
        h = torch.relu(torch.addmm(b, x, w))                          # [B, N·H1]; every mlp layer is Linear → ReLU
        n, h1 = len(self.experts), firsts[0].out_features
        rest = [e[2:] for e in self.experts]                          # dropout is a no-op here; deeper layers per expert
        if all(len(r) == 0 or all(isinstance(m, nn.Dropout) for m in r) for r in rest):
            return h.view(x.shape[0], n, h1)
        return torch.stack([r(p) for r, p in zip(rest, h.split(h1, dim=1))], dim=1)


class Gate(nn.Module):
    """Softmax mixture weights over experts. `hidden=[]` is the simple MMoE gate (one linear
    layer); `hidden=[64]` etc. makes it deeper — 由简到繁 as the article puts it."""

    def __init__(self, in_dim: int, n_experts: int, hidden: Sequence[int] = ()):
        super().__init__()
        self.net = mlp(in_dim, hidden, out_dim=n_experts)

    def forward(self, x: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.net(x), dim=-1)              # [B, N]
        # a weighted sum, not einsum: einsum lowers to a batched matmul of B tiny matrices, which
        # alone took ~0.3 ms of a 500-candidate MMoE forward on CPU
        return (w.unsqueeze(-1) * experts).sum(dim=1)


class TaskHeads(nn.Module):
    """Per-task towers, each ending in a logit; optional sigmoid shortcut per task and a position
    tower added to the first (click) task's logit when `with_position` is set."""

    def __init__(self, schema: InputSchema, in_dims: Sequence[int] | int, tower_hidden: Sequence[int],
                 dropout: float = 0.0, shortcut: bool = False, position_tower: bool = False, position_hidden: int = 8):
        super().__init__()
        dims = [in_dims] * len(schema.tasks) if isinstance(in_dims, int) else list(in_dims)
        self.tasks = list(schema.tasks)
        self.towers = nn.ModuleList(mlp(d, tower_hidden, dropout, out_dim=1) for d in dims)
        self.shortcuts = nn.ModuleList(SigmoidShortcut(schema) for _ in self.tasks) if shortcut else None
        self.position = PositionTower(schema.n_positions, position_hidden) if position_tower and schema.n_positions > 0 else None

    def forward(self, inputs: Sequence[torch.Tensor], batch: dict[str, torch.Tensor], with_position: bool) -> dict[str, torch.Tensor]:
        out = {}
        for i, (t, x) in enumerate(zip(self.tasks, inputs)):
            logit = self.towers[i](x).squeeze(-1)
            if self.shortcuts is not None:
                logit = logit + self.shortcuts[i](batch)
            if i == 0 and with_position and self.position is not None and "position" in batch:
                logit = logit + self.position(batch["position"])
            out[t] = logit
        return out


class RankingModel(nn.Module):
    """Base: every model maps a batch to {task: logit}. `with_position=True` only in training."""

    name = "base"

    def __init__(self, schema: InputSchema, **params: Any):
        super().__init__()
        self.schema = schema
        self.params = params

    def forward(self, batch: dict[str, torch.Tensor], with_position: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError
