"""Relevance: does a result belong on the page at all (article §2).

Public entry point: `TextRelevance(config).run(StageInput) -> StageOutput`, which sets each
candidate's `relevance` features, `relevance_score` in [0, 1] and a predicted grade on the
SPEC's 4-grade scale. `[relevance] impl = "ensemble"` (relevance/ensemble.py) replaces it
with the calibrated combination of the scorers in relevance/scorers.py (text, bm25, click
graph cos/KL, aspect); `mvsearch eval relevance` compares any of them on a labelled set.
"""
from __future__ import annotations

import time
from typing import Any

from search.contracts import StageInput, StageOutput

from .text_relevance import TextRelevanceWeights, closeness, combine, query_entities, text_features


class TextRelevance:
    name = "text"

    def __init__(self, config: dict[str, Any] | None = None):
        self.weights = TextRelevanceWeights.from_dict(config or {})

    def run(self, inp: StageInput) -> StageOutput:
        t0 = time.perf_counter()
        q = inp.query
        terms, weights = q.terms, q.weights
        entity_terms = query_entities(q)
        entity_texts = {e.text for e in q.entities}
        rewrites = [r for r in inp.rewrite_terms if r]
        text_top = max((c.sources.get("text", 0.0) for c in inp.candidates), default=0.0)
        rw_top = max((c.sources.get("rewrite", 0.0) for c in inp.candidates), default=0.0)
        for c in inp.candidates:
            fields = (c.doc or {}).get("_fields", {})
            bm = c.sources.get("text", 0.0) / text_top if text_top > 0 else 0.0
            feats = text_features(terms, weights, entity_terms, fields, bm)
            score, grade = combine(feats, self.weights, bool(entity_terms))
            best_source = "query"
            # A true alias counts as a term match: score the rewritten form too, keep the best.
            for rw_terms in rewrites:
                bm_rw = c.sources.get("rewrite", 0.0) / rw_top if rw_top > 0 else 0.0
                rw_entities = {t for t in rw_terms if t not in terms} | (entity_texts & set(rw_terms))
                f2 = text_features(rw_terms, [1.0] * len(rw_terms), rw_entities, fields, bm_rw)
                s2, g2 = combine(f2, self.weights, bool(rw_entities))
                if s2 > score:
                    feats, score, grade, best_source = f2, s2, g2, "rewrite:" + " ".join(rw_terms)
            c.relevance = feats
            c.relevance_score = score
            c.grade = grade
            c.explain["relevance"] = {"scorer": self.name, "matched_as": best_source, **feats, "score": score, "grade": grade}
        return StageOutput(inp.candidates, {"stage": self.name, "ms": round((time.perf_counter() - t0) * 1000, 2)})


from .ensemble import demote_grade0  # noqa: E402  (light: the models load only when the stage is built)

__all__ = ["TextRelevance", "TextRelevanceWeights", "text_features", "closeness", "combine", "query_entities", "demote_grade0"]
