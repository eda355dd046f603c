"""Recall: text route (BM25 + closeness + hotness/freshness on the engine), rewrite route
(the offline rewrite table looked up online), vector route (kNN on video vectors), merged
with per-route quotas and deduplicated; every hit remembers its routes and route scores."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index_config import IndexConfig
from query_understanding import UnderstoodQuery
from query_understanding.normalize import normalize
from query_understanding.tokenize import Tokenizer

from .contracts import Candidate, RecallInput, StageOutput
from .embedder import LsaEmbedder
from .engines.base import Engine, make_plan


@dataclass
class RouteConfig:
    enabled: bool = True
    quota: int = 200


@dataclass
class RecallConfig:
    text: RouteConfig = field(default_factory=lambda: RouteConfig(True, 300))
    rewrite: RouteConfig = field(default_factory=lambda: RouteConfig(True, 100))
    vector: RouteConfig = field(default_factory=lambda: RouteConfig(True, 100))
    max_candidates: int = 500

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RecallConfig":
        routes = d.get("routes", {})
        def rc(name: str, default: RouteConfig) -> RouteConfig:
            r = routes.get(name, {})
            return RouteConfig(bool(r.get("enabled", default.enabled)), int(r.get("quota", default.quota)))
        base = cls()
        return cls(rc("text", base.text), rc("rewrite", base.rewrite), rc("vector", base.vector),
                   int(d.get("max_candidates", base.max_candidates)))


class RewriteTable:
    """Offline-computed rewrites (normalized phrase → rewritten phrases), looked up online."""

    def __init__(self, path: str | Path | None, required: bool = False):
        self.version = "none"
        self.table: dict[str, list[str]] = {}
        if required and not (path and Path(path).exists()):
            # a table named in config must exist: silently serving without it would hide the mistake
            raise FileNotFoundError(f"rewrite table not found: {path} ([recall.routes.rewrite] table)")
        if path and Path(path).exists():
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            self.version = raw.get("version", "unknown")
            self.table = raw.get("rewrites", {})

    def rewrite(self, q: UnderstoodQuery, limit: int = 3) -> list[str]:
        """Whole-query hits first, then token-level substitutions (hebe 晴天 → 田馥甄 晴天)."""
        out: list[str] = []
        for r in self.table.get(q.normalized, []):
            out.append(r)
        terms = q.terms
        for i, t in enumerate(terms):
            for r in self.table.get(t, [])[:2]:
                out.append(" ".join(terms[:i] + [r] + terms[i + 1 :]))
        for r in q.rewrites:
            out.append(normalize(r))
        return [r for r in dict.fromkeys(out) if r and r != q.normalized][:limit]


class Recall:
    name = "multi_route"

    def __init__(self, engine: Engine, cfg: IndexConfig, tokenizer: Tokenizer, embedder: LsaEmbedder | None,
                 rewrites: RewriteTable, config: RecallConfig):
        self.engine, self.cfg, self.tokenizer, self.embedder = engine, cfg, tokenizer, embedder
        self.rewrites, self.config = rewrites, config

    def run(self, inp: RecallInput) -> StageOutput:
        q = inp.query
        explain: dict[str, Any] = {"routes": {}}
        routes: dict[str, list[tuple[str, float]]] = {}
        c = self.config
        if c.text.enabled and q.terms:
            t0 = time.perf_counter()
            plan = make_plan(q.terms, q.weights, q.normalized, c.text.quota, inp.now_ts, self.cfg, q.required)
            routes["text"] = [(h.video_id, h.score) for h in self.engine.text_recall(plan)]
            explain["routes"]["text"] = {"hits": len(routes["text"]), "required": [t for t, r in zip(plan.terms, plan.required) if r],
                                         "ms": round((time.perf_counter() - t0) * 1000, 2)}
        if c.rewrite.enabled:
            t0 = time.perf_counter()
            rws = self.rewrites.rewrite(q)
            hits: dict[str, float] = {}
            for rw in rws:
                toks = self.tokenizer.tokenize(rw)
                plan = make_plan(toks, None, rw, c.rewrite.quota, inp.now_ts, self.cfg)
                for h in self.engine.text_recall(plan):
                    hits[h.video_id] = max(hits.get(h.video_id, 0.0), h.score)
            routes["rewrite"] = sorted(hits.items(), key=lambda x: -x[1])[: c.rewrite.quota]
            explain["routes"]["rewrite"] = {"rewrites": rws, "table_version": self.rewrites.version, "hits": len(routes["rewrite"]),
                                            "ms": round((time.perf_counter() - t0) * 1000, 2)}
        if c.vector.enabled and self.embedder is not None and q.terms:
            t0 = time.perf_counter()
            vec = self.embedder.encode_tokens(q.terms)
            routes["vector"] = [(h.video_id, h.score) for h in self.engine.vector_recall(vec, c.vector.quota)]
            explain["routes"]["vector"] = {"hits": len(routes["vector"]), "embedder": self.embedder.name,
                                           "ms": round((time.perf_counter() - t0) * 1000, 2)}
        cands = merge_routes(routes, c.max_candidates)
        explain["merged"] = len(cands)
        return StageOutput(cands, explain)


def merge_routes(routes: dict[str, list[tuple[str, float]]], max_candidates: int) -> list[Candidate]:
    """Dedupe across routes (quotas were applied per route); a hit keeps every route that
    found it with that route's score. Recall score: best route-normalized score plus a
    small bonus per extra route, so agreement between routes counts."""
    by_id: dict[str, Candidate] = {}
    for route, hits in routes.items():
        if not hits:
            continue
        top = max(s for _, s in hits) or 1.0
        for vid, s in hits:
            cand = by_id.get(vid) or by_id.setdefault(vid, Candidate(vid))
            cand.sources[route] = round(float(s), 6)
            norm = s / top if top > 0 else 0.0
            cand.recall_score = max(cand.recall_score, norm)
    for cand in by_id.values():
        cand.recall_score += 0.05 * (len(cand.sources) - 1)
    return sorted(by_id.values(), key=lambda c: -c.recall_score)[:max_candidates]
