"""One trainer for every ranking model (single-task, Share-Bottom, ESMM, MMoE, PLE, DeepFM).

Losses:
- `independent`: Σ_t w_t · BCE(task t) — e.g. census income and marital status;
- `esmm`: over ALL impressions, BCE(pCTR, click) + BCE(pCTR·pCVR, click∧valid_play) (ESMM, SIGIR'18).
  The second head then estimates p(valid play | click) without being fit on clicked rows only,
  which removes the sample-selection bias of a CVR model trained on clicks.
Task weighting: `fixed` (the weights given) or `uwl` — uncertainty weighting (Kendall et al.,
CVPR'18): L = Σ_t exp(−s_t)·L_t + ½·s_t with s_t = log σ_t² learned, so tasks whose loss is on a
different scale do not need hand-tuned weights.
Early stopping on the validation split's mean AUC; the best epoch's weights are kept.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from .models.layers import RankingModel

log = logging.getLogger("mvsearch.ranking.trainer")


@dataclass
class TabularData:
    """Model-ready columns. `labels[task]` float 0/1; `groups` optional ids for GAUC (user, query)."""
    dense: np.ndarray
    sparse: np.ndarray
    labels: dict[str, np.ndarray]
    position: np.ndarray | None = None
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.dense)

    def subset(self, idx: np.ndarray) -> "TabularData":
        return TabularData(self.dense[idx], self.sparse[idx], {k: v[idx] for k, v in self.labels.items()},
                           None if self.position is None else self.position[idx], {k: v[idx] for k, v in self.groups.items()})

    def batch(self, idx: np.ndarray | slice) -> dict[str, torch.Tensor]:
        b = {"dense": torch.from_numpy(np.ascontiguousarray(self.dense[idx], dtype=np.float32)),
             "sparse": torch.from_numpy(np.ascontiguousarray(self.sparse[idx], dtype=np.int64))}
        if self.position is not None:
            b["position"] = torch.from_numpy(np.ascontiguousarray(self.position[idx], dtype=np.int64))
        return b


@dataclass
class TrainConfig:
    loss: str = "independent"            # independent | esmm
    weighting: str = "fixed"             # fixed | uwl
    task_weights: dict[str, float] = field(default_factory=dict)  # fixed weights (default 1.0)
    clicked_only: bool = False           # single-task CVR: train on rows whose click label is 1
    click_task: str = "ctr"
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-6
    patience: int = 2
    seed: int = 0
    num_threads: int = 1
    max_seconds: float = 600.0           # stop after this wall time (keeps the best epoch)
    eval_masks_click: bool = True        # validation AUC of a conversion task only on clicked rows

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        base = cls()
        return cls(**{k: d.get(k, getattr(base, k)) for k in base.__dataclass_fields__})


class UncertaintyWeighting(nn.Module):
    """Learned per-task log-variances s_t: loss = Σ exp(−s_t)·L_t + ½ s_t."""

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = tasks
        self.log_var = nn.Parameter(torch.zeros(len(tasks)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), dtype=torch.float32)
        for i, t in enumerate(self.tasks):
            total = total + torch.exp(-self.log_var[i]) * losses[t] + 0.5 * self.log_var[i]
        return total

    def weights(self) -> dict[str, float]:
        return {t: round(float(torch.exp(-self.log_var[i].detach())), 4) for i, t in enumerate(self.tasks)}


@dataclass
class TrainResult:
    model: RankingModel
    best_epoch: int
    val_metrics: dict[str, float]
    history: list[dict[str, Any]]
    seconds: float
    task_weights: dict[str, float]


def task_losses(model: RankingModel, out: dict[str, torch.Tensor], batch_labels: dict[str, torch.Tensor], cfg: TrainConfig) -> dict[str, torch.Tensor]:
    bce = nn.functional.binary_cross_entropy_with_logits
    tasks = model.schema.tasks
    if cfg.loss == "esmm":
        if len(tasks) != 2:
            raise ValueError(f"esmm loss needs two tasks (click, conversion), got {tasks}")
        ct, cv = tasks
        p_ctr = torch.sigmoid(out[ct])
        p_ctcvr = p_ctr * torch.sigmoid(out[cv])
        # pCTCVR is a product of probabilities: plain BCE on it, clamped for log stability.
        ctcvr = nn.functional.binary_cross_entropy(p_ctcvr.clamp(1e-7, 1 - 1e-7), batch_labels[cv])
        return {ct: bce(out[ct], batch_labels[ct]), cv: ctcvr}
    if cfg.loss != "independent":
        raise ValueError(f"unknown loss {cfg.loss!r}: independent | esmm")
    return {t: bce(out[t], batch_labels[t]) for t in tasks}


def predict(model: RankingModel, data: TabularData, batch_size: int = 8192) -> dict[str, np.ndarray]:
    """Serving-mode probabilities per task (no position tower)."""
    model.eval()
    outs: dict[str, list[np.ndarray]] = {t: [] for t in model.schema.tasks}
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            o = model(data.batch(slice(s, s + batch_size)), with_position=False)
            for t in outs:
                outs[t].append(torch.sigmoid(o[t]).numpy())
    return {t: np.concatenate(v) if v else np.zeros(0) for t, v in outs.items()}


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, p))


def group_auc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """GAUC: per-group AUC weighted by the group's impressions, over groups with both labels."""
    order = np.argsort(groups, kind="stable")
    g, y, p = groups[order], y[order], p[order]
    cuts = np.flatnonzero(g[1:] != g[:-1]) + 1
    num = den = 0.0
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(g)]):
        ys = y[a:b]
        if ys.min() == ys.max():
            continue
        num += (b - a) * roc_auc_score(ys, p[a:b])
        den += b - a
    return float(num / den) if den else float("nan")


def evaluate(model: RankingModel, data: TabularData, cfg: TrainConfig, groups: bool = False) -> dict[str, float]:
    """AUC per task; a conversion task (any task after the click task when it exists) is scored
    on clicked rows only — that is where p(conversion | click) is defined."""
    probs = predict(model, data)
    res: dict[str, float] = {}
    click = data.labels.get(cfg.click_task)
    for t, p in probs.items():
        y = data.labels[t]
        mask = np.ones(len(y), bool)
        if cfg.eval_masks_click and click is not None and t != cfg.click_task:
            mask = click > 0.5
        res[f"auc_{t}"] = safe_auc(y[mask], p[mask])
        if groups:
            for gname, gv in data.groups.items():
                res[f"gauc_{t}_{gname}"] = group_auc(y[mask], p[mask], gv[mask])
    return res


def train_model(model: RankingModel, train: TabularData, val: TabularData, cfg: TrainConfig, progress: bool = False) -> TrainResult:
    torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    if cfg.clicked_only:
        keep = np.flatnonzero(train.labels[cfg.click_task] > 0.5)
        train = train.subset(keep)
        vkeep = np.flatnonzero(val.labels[cfg.click_task] > 0.5)
        val = val.subset(vkeep)
    tasks = model.schema.tasks
    uwl = UncertaintyWeighting(tasks) if cfg.weighting == "uwl" else None
    if cfg.weighting not in ("fixed", "uwl"):
        raise ValueError(f"unknown weighting {cfg.weighting!r}: fixed | uwl")
    params = list(model.parameters()) + (list(uwl.parameters()) if uwl else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = {t: train.labels[t].astype(np.float32) for t in tasks}
    best, best_state, best_epoch, history, bad = -1.0, None, -1, [], 0
    for epoch in range(cfg.epochs):
        model.train()
        perm = rng.permutation(len(train))
        tot, nb = 0.0, 0
        for s in range(0, len(perm), cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            batch = train.batch(idx)
            bl = {t: torch.from_numpy(labels[t][idx]) for t in tasks}
            out = model(batch, with_position=True)
            losses = task_losses(model, out, bl, cfg)
            loss = uwl(losses) if uwl else sum(float(cfg.task_weights.get(t, 1.0)) * l for t, l in losses.items())
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            nb += 1
        m = evaluate(model, val, cfg)
        finite = [v for v in m.values() if v == v]
        score = float(np.mean(finite)) if finite else 0.0   # no AUC computable (one-class split): keep the first epoch
        rec = {"epoch": epoch, "train_loss": round(tot / max(1, nb), 5), **{k: round(v, 5) for k, v in m.items()}}
        if uwl:
            rec["uwl_weights"] = uwl.weights()
        history.append(rec)
        if progress:
            log.info("%s epoch %d %s", model.name, epoch, rec)
        if score > best:
            best, best_epoch, bad = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
            best_metrics = m
        else:
            bad += 1
            if bad > cfg.patience:
                break
        if time.perf_counter() - t0 > cfg.max_seconds:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    weights = uwl.weights() if uwl else {t: float(cfg.task_weights.get(t, 1.0)) for t in tasks}
    return TrainResult(model, best_epoch, best_metrics if best_state is not None else {}, history,
                       time.perf_counter() - t0, weights)
