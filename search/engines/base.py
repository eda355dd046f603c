"""Engine-neutral recall types. Both engines compile the same `TextQueryPlan`, so the
embedded engine and Elasticsearch have the same recall semantics (field boosts, closeness,
hotness, freshness) by construction."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from index_config import IndexConfig

MAX_QUERY_TERMS = 16  # bound the query size whatever the user typed


@dataclass(frozen=True)
class TextQueryPlan:
    terms: tuple[str, ...]
    weights: tuple[float, ...]
    phrase: tuple[str, ...]          # terms in query order, for closeness (phrase with slop)
    full_text: str                   # normalized query, for the exact-title keyword match
    size: int
    now_ts: float
    minimum_should_match: int = 1
    required: tuple[bool, ...] = ()  # per term: must match (from term weights); empty = all optional

    def is_required(self, i: int) -> bool:
        return bool(self.required) and self.required[i]


def make_plan(tokens: list[str], weights: list[float] | None, full_text: str, size: int, now_ts: float,
              cfg: IndexConfig, required: list[bool] | None = None) -> TextQueryPlan:
    seen: dict[str, float] = {}
    must: dict[str, bool] = {}
    for i, t in enumerate(tokens):
        w = float(weights[i]) if weights else 1.0
        r = bool(required[i]) if required else False
        if t not in seen and len(seen) < MAX_QUERY_TERMS:
            seen[t], must[t] = w, r
        elif t in seen:
            seen[t], must[t] = max(seen[t], w), must[t] or r
    phrase = tuple(t for t in tokens if t in seen)[:MAX_QUERY_TERMS]
    req = tuple(must[t] for t in seen) if any(must.values()) else ()
    # With required terms, the optional clauses only add score.
    msm = 0 if req else int(cfg.recall.get("minimum_should_match", 1))
    return TextQueryPlan(tuple(seen), tuple(seen.values()), phrase, full_text, size, now_ts, msm, req)


@dataclass
class EngineHit:
    video_id: str
    score: float
    explain: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def text_recall(self, plan: TextQueryPlan) -> list[EngineHit]: ...

    def vector_recall(self, vector: Any, k: int) -> list[EngineHit]: ...

    def get_docs(self, video_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    def health(self) -> dict[str, Any]: ...

    @property
    def index_version(self) -> str: ...

    def close(self) -> None: ...


class EngineUnavailable(RuntimeError):
    """The configured engine cannot be reached; the message says what to do."""
