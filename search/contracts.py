"""Data contracts shared by the pipeline stages (SPEC: each stage is input dataclass →
output dataclass). A stage reads and adds to candidates; it never reaches into another
stage's internals."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from query_understanding import UnderstoodQuery


LOCAL_DAY_OFFSET_S = 8 * 3600   # a "day" of logs and counters starts at local midnight (UTC+8), as the simulator's do


def local_day(ts: float) -> int:
    """Day number of a timestamp: the unit of T+1 statistics and of train/validation/test splits."""
    return int((ts + LOCAL_DAY_OFFSET_S) // 86400)


@dataclass
class Candidate:
    video_id: str
    sources: dict[str, float] = field(default_factory=dict)   # recall route → route score
    recall_score: float = 0.0
    doc: dict[str, Any] | None = None                           # stored record + tokenized fields
    relevance: dict[str, float] = field(default_factory=dict)   # per-scorer / per-feature values
    relevance_score: float = 0.0
    grade: int | None = None
    rank_score: float = 0.0
    rank_features: Mapping[str, float] = field(default_factory=dict)   # the vector the ranker saw (logged with the impression)
    explain: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageInput:
    query: UnderstoodQuery
    candidates: list[Candidate]
    user_id: str | None = None
    now_ts: float = 0.0
    rewrite_terms: list[list[str]] = field(default_factory=list)  # tokenized rewrites used by recall


@dataclass
class StageOutput:
    candidates: list[Candidate]
    explain: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class RecallInput:
    query: UnderstoodQuery
    now_ts: float
    user_id: str | None = None
