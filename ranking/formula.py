"""Baseline ranker: a transparent formula of relevance and smoothed popularity.

    rank = w_rel·relevance + w_pop·popularity + w_eng·engagement + w_fresh·freshness

- popularity: log(1+plays) / log(1+max plays among candidates) — counts are heavy-tailed;
- engagement: Bayesian-smoothed (likes + shares) per play with a Beta(α, β) prior, so a
  video with 3 plays and 1 like is not ranked above a hit (article §3.2 平滑);
- freshness: exp(-age / τ).
Every term is reported in `explain`, so the team can see why a video is where it is.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from search.contracts import StageInput, StageOutput


@dataclass
class FormulaWeights:
    relevance: float = 0.70
    popularity: float = 0.15
    engagement: float = 0.10
    freshness: float = 0.05
    prior_alpha: float = 2.0
    prior_beta: float = 60.0
    freshness_tau_days: float = 180.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FormulaWeights":
        base = cls()
        return cls(**{k: float(d.get(k, getattr(base, k))) for k in base.__dataclass_fields__})


def smoothed_rate(successes: float, trials: float, alpha: float, beta: float) -> float:
    return (successes + alpha) / (trials + alpha + beta)


class FormulaRanker:
    name = "formula"

    def __init__(self, config: dict[str, Any] | None = None):
        self.w = FormulaWeights.from_dict(config or {})

    def run(self, inp: StageInput) -> StageOutput:
        t0 = time.perf_counter()
        w = self.w
        plays = [float((c.doc or {}).get("play_count", 0)) for c in inp.candidates]
        max_log = math.log1p(max(plays, default=0.0)) or 1.0
        prior_mean = w.prior_alpha / (w.prior_alpha + w.prior_beta)
        for c, p in zip(inp.candidates, plays):
            d = c.doc or {}
            pop = math.log1p(p) / max_log
            eng = smoothed_rate(d.get("like_count", 0) + d.get("share_count", 0), p, w.prior_alpha, w.prior_beta)
            eng_n = min(1.0, eng / (4 * prior_mean))  # 4× the prior mean counts as fully engaging
            age = 3650.0
            pts = (d.get("_fields") or {}).get("publish_ts")
            if pts is None and d.get("publish_time"):
                pts = datetime.fromisoformat(d["publish_time"]).timestamp()
            if pts is not None:
                age = max(0.0, (inp.now_ts - pts) / 86400)
            fresh = math.exp(-age / w.freshness_tau_days)
            feats = {"relevance": c.relevance_score, "popularity": pop, "engagement": eng_n, "freshness": fresh}
            c.rank_features = feats
            c.rank_score = w.relevance * feats["relevance"] + w.popularity * pop + w.engagement * eng_n + w.freshness * fresh
            c.explain["ranking"] = {"model": self.name, **feats, "score": c.rank_score}
        ranked = sorted(inp.candidates, key=lambda c: (-c.rank_score, c.video_id))
        return StageOutput(ranked, {"stage": self.name, "ms": round((time.perf_counter() - t0) * 1000, 2)})
