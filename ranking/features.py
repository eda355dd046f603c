"""Ranking features: ONE code path for serving and for training (seed 002 §3.2).

`FeatureBuilder` turns an `ImpressionContext` (what the ranker may know when it scores one
candidate) into a dense vector and sparse ids:
- query: length (tokens, characters), entity types (artist/song/show), intent probabilities;
- video: category, language, resolution (HD / full HD), duration, age since publishing, catalog
  plays (log-soft-bucketed) and like rate (quality), T+1 and real-time counters (impressions,
  clicks, valid plays, likes) as log-soft buckets and CTR / valid-play / like rates;
- user: history size and activity, click rate, idle days (from past events only);
- cross: the relevance stage's scores and grade, recall routes and their scores, user–artist /
  language / category affinity, query artist present in the video;
- position: not a feature of the scorer; the trainer feeds it to the position tower only.
Rates are Bayesian-smoothed with a Beta prior fitted by the method of moments (default), or the
Wilson lower bound, or plain (`rate_method`, `all` for the three side by side). Ids (video,
uploader, artist…) go through frequency vocabularies with one shared bucket for rare ids.
The serving stage (ranking/learned.py) and the offline replay (ranking/feature_store.py) both call
`FeatureBuilder.transform`; the fitted state travels inside the model file.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np


@dataclass
class FrequencyVocab:
    """id → index by frequency on the training data. Ids seen fewer than `min_count` times (and
    ids never seen) share index 0, so the model learns one embedding for 'rare' instead of
    thousands of noisy ones, and a new video at serving maps somewhere it was trained."""
    index: dict[str, int] = field(default_factory=dict)
    min_count: int = 5

    @classmethod
    def fit(cls, values: Iterable[Any], min_count: int = 5, max_size: int | None = None) -> "FrequencyVocab":
        cnt = Counter(str(v) for v in values)
        kept = [v for v, c in sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        if max_size:
            kept = kept[: max_size - 1]
        return cls({v: i + 1 for i, v in enumerate(kept)}, min_count)

    def __len__(self) -> int:
        return len(self.index) + 1

    def lookup(self, value: Any) -> int:
        return self.index.get(str(value), 0)

    def lookup_many(self, values: Iterable[Any]) -> np.ndarray:
        return np.fromiter((self.index.get(str(v), 0) for v in values), dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "min_count": self.min_count}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrequencyVocab":
        return cls({k: int(v) for k, v in d["index"].items()}, int(d.get("min_count", 5)))


# ---------------------------------------------------------------- rates and counts

def plain_rate(successes: float, trials: float) -> float:
    return successes / trials if trials > 0 else 0.0


def wilson_lower(successes: float, trials: float, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval: pessimistic for few trials."""
    if trials <= 0:
        return 0.0
    p = successes / trials
    den = 1 + z * z / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return float(max(0.0, (centre - margin) / den))


@dataclass
class BetaPrior:
    """Beta(α, β) prior of a rate, fitted by the method of moments on items with enough trials.
    Smoothed rate = (s + α) / (n + α + β): a video with 3 impressions and 2 clicks is pulled
    towards the catalogue mean instead of looking like a 67% CTR hit."""
    alpha: float = 1.0
    beta: float = 10.0

    @classmethod
    def fit(cls, successes: np.ndarray, trials: np.ndarray, min_trials: int = 20) -> "BetaPrior":
        s, n = np.asarray(successes, float), np.asarray(trials, float)
        keep = n >= min_trials
        if keep.sum() < 5:
            return cls()
        r = s[keep] / n[keep]
        m, v = float(r.mean()), float(r.var())
        # Var of observed rates = prior var + binomial noise; subtract the noise part.
        v = max(v - float(np.mean(m * (1 - m) / n[keep])), 1e-6)
        if m <= 0 or m >= 1 or v >= m * (1 - m):
            return cls(max(m, 1e-3) * 10, (1 - min(m, 0.999)) * 10)
        k = m * (1 - m) / v - 1
        return cls(float(m * k), float((1 - m) * k))

    def rate(self, successes: float, trials: float) -> float:
        return (successes + self.alpha) / (trials + self.alpha + self.beta)


def soft_buckets(x: float, edges: list[float]) -> list[float]:
    """Log-soft bucketing of a count: log1p(x) falls between two bucket centres and is split
    between them linearly (a soft one-hot), so the model sees a smooth, bounded input whatever
    the count's scale, and neighbouring counts share weights."""
    v = math.log1p(max(0.0, x))
    out = [0.0] * len(edges)
    if v <= edges[0]:
        out[0] = 1.0
    elif v >= edges[-1]:
        out[-1] = 1.0
    else:
        j = bisect.bisect_left(edges, v) - 1
        w = (v - edges[j]) / (edges[j + 1] - edges[j])
        out[j], out[j + 1] = 1 - w, w
    return out


DEFAULT_EDGES = [0.0, 1.0, 2.0, 3.5, 5.0, 7.0, 9.5, 12.0]   # log1p scale: 0, 1.7, 6, 32, 147, 1k, 13k, 160k


# ---------------------------------------------------------------- what a feature is computed from

@dataclass
class QueryInfo:
    text: str
    n_tokens: int = 0
    n_chars: int = 0
    entity_types: dict[str, int] = field(default_factory=dict)   # artist/song/show → count
    entity_texts: dict[str, list[str]] = field(default_factory=dict)
    intents: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_understood(cls, q: Any) -> "QueryInfo":
        types: dict[str, int] = {}
        texts: dict[str, list[str]] = {}
        for e in q.entities:
            types[e.type] = types.get(e.type, 0) + 1
            texts.setdefault(e.type, []).append(e.text)
        return cls(q.normalized, len(q.tokens), len(q.normalized.replace(" ", "")), types, texts, dict(q.intents or {}))


@dataclass
class VideoStats:
    """Behaviour counters of a video as of serving time: T+1 (all days before today) and
    real-time (today so far). Keys: impressions, clicks, valid_plays, likes."""
    t1: dict[str, float] = field(default_factory=dict)
    rt: dict[str, float] = field(default_factory=dict)


@dataclass
class UserProfile:
    """A user's history from past events only (see feature_store.UserProfileStore)."""
    requests: int = 0
    clicks: int = 0
    valid_plays: int = 0
    last_ts: float | None = None
    artists: dict[str, int] = field(default_factory=dict)     # artist → valid plays / clicks of their videos
    languages: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "clicks": self.clicks, "valid_plays": self.valid_plays, "last_ts": self.last_ts,
                "artists": self.artists, "languages": self.languages, "categories": self.categories}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UserProfile":
        return cls(int(d.get("requests", 0)), int(d.get("clicks", 0)), int(d.get("valid_plays", 0)), d.get("last_ts"),
                   dict(d.get("artists", {})), dict(d.get("languages", {})), dict(d.get("categories", {})))


@dataclass
class ImpressionContext:
    """Everything the ranker may know when it scores one candidate, and nothing more."""
    query: QueryInfo
    video_id: str
    doc: dict[str, Any]
    relevance: dict[str, float]
    relevance_score: float
    grade: int | None
    sources: dict[str, float]
    stats: VideoStats
    user: UserProfile | None
    now_ts: float


RELEVANCE_KEYS = ["bm25", "coverage", "title_coverage", "entity_match", "closeness", "field_coverage"]
ROUTES = ["text", "rewrite", "vector"]
ENTITY_TYPES = ["artist", "song", "show"]
COUNTERS = ["impressions", "clicks", "valid_plays", "likes"]
SPARSE_FIELDS = {"video_id": 20, "uploader": 20, "artist": 10, "category": 1, "language": 1, "resolution": 1,
                 "grade": 1, "query_kind": 5, "top_intent": 1}   # field → min count in the vocabulary
CATALOG_EDGES = [0.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]


def _publish_ts(doc: dict[str, Any]) -> float | None:
    f = doc.get("_fields")
    if isinstance(f, dict) and f.get("publish_ts") is not None:
        return float(f["publish_ts"])
    if doc.get("publish_time"):
        from datetime import datetime
        return datetime.fromisoformat(doc["publish_time"]).timestamp()
    return None


@dataclass
class FeatureBuilder:
    """Context → (dense vector, sparse ids). The ranker calls it at serving and the trainer calls
    it on contexts rebuilt from the logged snapshot; the fitted state (priors, vocabularies,
    intent names) is saved inside the model file, so both sides compute the same numbers."""
    rate_method: str = "bayes"                               # bayes | wilson | plain | all
    priors: dict[str, BetaPrior] = field(default_factory=dict)
    vocabs: dict[str, FrequencyVocab] = field(default_factory=dict)
    intent_names: list[str] = field(default_factory=list)
    edges: list[float] = field(default_factory=lambda: list(DEFAULT_EDGES))

    # -- fitting (training rows only) --
    def fit(self, contexts: list[ImpressionContext]) -> "FeatureBuilder":
        if self.rate_method not in ("bayes", "wilson", "plain", "all"):
            raise ValueError(f"rate_method {self.rate_method!r}: bayes | wilson | plain | all")
        last: dict[str, ImpressionContext] = {}
        for c in contexts:           # latest counters per video: one point per video, not per impression
            last[c.video_id] = c
        vs = list(last.values())
        t1 = {k: np.array([c.stats.t1.get(k, 0.0) for c in vs]) for k in COUNTERS}
        self.priors = {"ctr": BetaPrior.fit(t1["clicks"], t1["impressions"]),
                       "vpr": BetaPrior.fit(t1["valid_plays"], t1["clicks"]),
                       "like": BetaPrior.fit(t1["likes"], t1["clicks"]),
                       "catalog_like": BetaPrior.fit(np.array([float(c.doc.get("like_count", 0)) for c in vs]),
                                                     np.array([float(c.doc.get("play_count", 0)) for c in vs]), min_trials=100)}
        intents: Counter = Counter(k for c in contexts for k in c.query.intents)
        self.intent_names = sorted(intents)[:16]
        sparse_vals: dict[str, list[str]] = {k: [] for k in SPARSE_FIELDS}
        for c in contexts:
            for k, v in self.sparse_raw(c).items():
                sparse_vals[k].append(v)
        self.vocabs = {k: FrequencyVocab.fit(v, SPARSE_FIELDS[k]) for k, v in sparse_vals.items()}
        return self

    # -- the one feature code path --
    def _rates(self, prefix: str, s: float, n: float, prior: str) -> dict[str, float]:
        out = {}
        if self.rate_method in ("bayes", "all"):
            out[f"{prefix}_bayes"] = self.priors[prior].rate(s, n) if prior in self.priors else plain_rate(s, n)
        if self.rate_method in ("wilson", "all"):
            out[f"{prefix}_wilson"] = wilson_lower(s, n)
        if self.rate_method in ("plain", "all"):
            out[f"{prefix}_plain"] = plain_rate(s, n)
        return out

    def _buckets(self, name: str, x: float, edges: list[float] | None = None) -> dict[str, float]:
        return {f"{name}_b{i}": v for i, v in enumerate(soft_buckets(x, edges or self.edges))}

    def dense_raw(self, c: ImpressionContext) -> dict[str, float]:
        q, d, f = c.query, c.doc, {}
        # query
        f["q_tokens"] = min(q.n_tokens, 10) / 10
        f["q_chars"] = min(q.n_chars, 30) / 30
        for t in ENTITY_TYPES:
            f[f"q_ent_{t}"] = float(min(q.entity_types.get(t, 0), 2))
        for name in self.intent_names:
            f[f"q_intent_{name}"] = float(q.intents.get(name, 0.0))
        # video: static attributes and quality
        f["v_duration"] = (math.log1p(float(d.get("duration_s") or 0))) / 7
        res = float(d.get("resolution") or 0)
        f["v_hd"], f["v_fullhd"] = float(res >= 720), float(res >= 1080)
        pts = _publish_ts(d)
        age = max(0.0, (c.now_ts - pts) / 86400) if pts is not None else 3650.0
        f["v_age"] = (math.log1p(age)) / 8
        f.update(self._buckets("v_catalog_plays", float(d.get("play_count") or 0), CATALOG_EDGES))
        f.update(self._rates("v_catalog_like", float(d.get("like_count") or 0), float(d.get("play_count") or 0), "catalog_like"))
        # video: T+1 and real-time behaviour
        for span, st in (("t1", c.stats.t1), ("rt", c.stats.rt)):
            imp, clk, vp, lk = (float(st.get(k, 0.0)) for k in COUNTERS)
            f.update(self._buckets(f"{span}_imp", imp))
            f.update(self._buckets(f"{span}_clk", clk))
            f.update(self._rates(f"{span}_ctr", clk, imp, "ctr"))
            f.update(self._rates(f"{span}_vpr", vp, clk, "vpr"))
            f.update(self._rates(f"{span}_like", lk, clk, "like"))
        # user
        u = c.user or UserProfile()
        f["u_known"] = float(u.requests > 0)
        f.update(self._buckets("u_requests", u.requests))
        f["u_click_rate"] = (u.clicks + 1) / (u.requests * 10 + 8)    # per shown slot, mildly smoothed
        f["u_days_idle"] = math.log1p(max(0.0, c.now_ts - u.last_ts) / 86400) / 5 if u.last_ts else 1.0
        # cross: relevance, recall, user–video affinity
        for k in RELEVANCE_KEYS:
            f[f"rel_{k}"] = float(c.relevance.get(k, 0.0))
        f["rel_score"] = float(c.relevance_score)
        for r in ROUTES:
            s = c.sources.get(r)
            f[f"src_{r}"] = float(s is not None)
            f[f"src_{r}_score"] = ((math.log1p(max(s, 0.0))) / 6 if r != "vector" else float(s)) if s is not None else 0.0
        f["src_n"] = float(len(c.sources)) / 3
        v_artists = list(d.get("artists") or [])
        hist = max(1, sum(u.artists.values()))
        f["x_user_artist"] = sum(u.artists.get(a, 0) for a in v_artists) / hist
        f["x_user_language"] = u.languages.get(str(d.get("language")), 0) / max(1, sum(u.languages.values()))
        f["x_user_category"] = u.categories.get(str(d.get("category")), 0) / max(1, sum(u.categories.values()))
        q_art = q.entity_texts.get("artist", [])
        f["x_query_artist_in_video"] = float(any(a in v_artists for a in q_art)) if q_art else 0.0
        return f

    def sparse_raw(self, c: ImpressionContext) -> dict[str, str]:
        d = c.doc
        arts = d.get("artists") or []
        top_intent = max(c.query.intents.items(), key=lambda kv: kv[1])[0] if c.query.intents else "none"
        return {"video_id": c.video_id, "uploader": str(d.get("uploader") or ""), "artist": str(arts[0]) if arts else "",
                "category": str(d.get("category") or ""), "language": str(d.get("language") or ""),
                "resolution": str(d.get("resolution") or ""), "grade": str(c.grade), "top_intent": top_intent,
                "query_kind": "+".join(sorted(c.query.entity_types)) or "none"}

    def dense_names(self) -> list[str]:
        dummy = ImpressionContext(QueryInfo(""), "", {}, {}, 0.0, None, {}, VideoStats(), None, 0.0)
        return list(self.dense_raw(dummy))

    def transform(self, contexts: list[ImpressionContext]) -> tuple[np.ndarray, np.ndarray]:
        names = self.dense_names()
        dense = np.zeros((len(contexts), len(names)), dtype=np.float32)
        sparse = np.zeros((len(contexts), len(self.vocabs)), dtype=np.int64)
        fields = list(self.vocabs)
        for i, c in enumerate(contexts):
            dr = self.dense_raw(c)
            dense[i] = [dr[n] for n in names]
            sr = self.sparse_raw(c)
            sparse[i] = [self.vocabs[k].lookup(sr[k]) for k in fields]
        return dense, sparse

    def snapshot(self, dense_row: np.ndarray, sparse_row: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
        """The exact vector the model saw, by name (sparse fields as their vocabulary index)."""
        names = names or self.dense_names()
        out = {n: round(float(v), 6) for n, v in zip(names, dense_row)}
        out.update({f"sparse.{k}": float(v) for k, v in zip(self.vocabs, sparse_row)})
        return out

    def snapshots(self, dense: np.ndarray, sparse: np.ndarray, names: list[str] | None = None) -> list[dict[str, float]]:
        """`snapshot` for a whole batch (one rounding pass; this runs on every served candidate)."""
        names = names or self.dense_names()
        fields = [f"sparse.{k}" for k in self.vocabs]
        out = []
        for drow, srow in zip(np.round(dense.astype(np.float64), 6).tolist(), sparse.astype(np.float64).tolist()):
            snap = dict(zip(names, drow))
            snap.update(zip(fields, srow))
            out.append(snap)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"rate_method": self.rate_method, "priors": {k: [p.alpha, p.beta] for k, p in self.priors.items()},
                "vocabs": {k: v.to_dict() for k, v in self.vocabs.items()}, "intent_names": self.intent_names, "edges": self.edges}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureBuilder":
        return cls(d["rate_method"], {k: BetaPrior(*v) for k, v in d["priors"].items()},
                   {k: FrequencyVocab.from_dict(v) for k, v in d["vocabs"].items()}, list(d["intent_names"]), list(d["edges"]))
