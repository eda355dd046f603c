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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
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
    p = min(1.0, max(0.0, successes / trials))   # counters from two sources can disagree by a few
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
    real-time (today so far). Keys: impressions, clicks, valid_plays, likes. Treat as frozen once
    features were taken from it: `flat()` remembers its numbers (serving shares one object per
    video between requests until the counters change)."""
    t1: dict[str, float] = field(default_factory=dict)
    rt: dict[str, float] = field(default_factory=dict)
    _flat: tuple | None = field(default=None, repr=False, compare=False)

    def flat(self) -> tuple:
        if self._flat is None:
            t1, rt = self.t1, self.rt
            self._flat = tuple(float(t1.get(k, 0.0)) for k in COUNTERS) + tuple(float(rt.get(k, 0.0)) for k in COUNTERS)
        return self._flat


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


@dataclass(slots=True)
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
    example_ts: float | None = None    # training only: when this impression was logged (serving: None)


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
        return datetime.fromisoformat(doc["publish_time"]).timestamp()
    return None


def _top_intent(q: QueryInfo) -> str:
    return max(q.intents.items(), key=lambda kv: kv[1])[0] if q.intents else "none"


def _video_sparse_values(vid: str, d: dict[str, Any]) -> dict[str, str]:
    """The video's own categorical ids, in `_SPARSE_ORDER` order (the first six fields)."""
    arts = d.get("artists") or []
    return {"video_id": vid, "uploader": str(d.get("uploader") or ""), "artist": str(arts[0]) if arts else "",
            "category": str(d.get("category") or ""), "language": str(d.get("language") or ""),
            "resolution": str(d.get("resolution") or "")}


def _plain_rates(s: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.divide(s, n, out=np.zeros_like(s, dtype=np.float64), where=n > 0)


def _wilson_rates(s: np.ndarray, n: np.ndarray, z: float = 1.96) -> np.ndarray:
    """`wilson_lower` over arrays."""
    ok = n > 0
    nn = np.where(ok, n, 1.0)
    p = np.clip(s / nn, 0.0, 1.0)
    den = 1 + z * z / nn
    centre = p + z * z / (2 * nn)
    margin = z * np.sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn))
    return np.where(ok, np.maximum(0.0, (centre - margin) / den), 0.0)


def soft_bucket_matrix(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """`soft_buckets` for a column of counts: rows × len(edges)."""
    e = np.asarray(edges, dtype=np.float64)
    v = np.log1p(np.maximum(0.0, np.asarray(x, dtype=np.float64)))
    out = np.zeros((len(v), len(e)))
    rows = np.arange(len(v))
    lo, hi = v <= e[0], v >= e[-1]
    mid = ~(lo | hi)
    out[lo, 0] = 1.0
    out[hi & ~lo, -1] = 1.0
    j = np.clip(np.searchsorted(e, v[mid], side="left") - 1, 0, len(e) - 2)
    w = (v[mid] - e[j]) / (e[j + 1] - e[j])
    out[rows[mid], j] = 1 - w
    out[rows[mid], j + 1] = w
    return out


# One pass over the candidates gathers these raw numbers; everything else is column arithmetic.
# What belongs to the query or the user is read once per distinct object (a serving batch has one
# of each), not once per candidate.
_QUERY_RAW = ["q_tokens", "q_chars"] + [f"q_ent_{t}" for t in ENTITY_TYPES]
_USER_RAW = ["u_requests", "u_clicks", "u_last_ts"]
_CAND_RAW = (["duration", "resolution", "publish_ts", "play_count", "like_count", "now_ts"]
             + [f"{span}_{k}" for span in ("t1", "rt") for k in COUNTERS]
             + [f"rel_{k}" for k in RELEVANCE_KEYS] + ["rel_score"]
             + [f"src_{r}" for r in ROUTES] + ["src_n"]
             + ["x_user_artist", "x_user_language", "x_user_category", "x_query_artist_in_video"])
_NAN = float("nan")
_NO_USER = UserProfile()
_SPARSE_ORDER = ["video_id", "uploader", "artist", "category", "language", "resolution", "grade", "top_intent", "query_kind"]
assert set(_SPARSE_ORDER) == set(SPARSE_FIELDS)


assert [f"rel_{k}" for k in RELEVANCE_KEYS] == _CAND_RAW[14:20] and ROUTES == ["text", "rewrite", "vector"]


def _shares(table: dict[str, int]) -> dict[str, float]:
    total = max(1, sum(table.values()))
    return {k: v / total for k, v in table.items()}


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
    # example age (seed 002 §3.2, after YouTube): training time − the time the example was logged.
    # Fitted as the newest training impression; serving and later examples get 0, so the model
    # learns what is stale in old examples instead of mistaking it for a property of the video.
    example_age_ref: float | None = None
    # video_id → (doc, its raw numbers, its sparse ids): docs are read-only records shared by the
    # doc store, so while a candidate carries the very same doc object its part is reused as is.
    _doc_cache: dict[str, tuple] = field(default_factory=dict, repr=False, compare=False)
    doc_cache_size: int = field(default=200_000, repr=False, compare=False)

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
        logged = [c.example_ts for c in contexts if c.example_ts is not None]
        self.example_age_ref = max(logged) if logged else None
        intents: Counter = Counter(k for c in contexts for k in c.query.intents)
        self.intent_names = sorted(intents)[:16]
        sparse_vals: dict[str, list[str]] = {k: [] for k in SPARSE_FIELDS}
        for c in contexts:
            for k, v in self.sparse_raw(c).items():
                sparse_vals[k].append(v)
        self.vocabs = {k: FrequencyVocab.fit(v, SPARSE_FIELDS[k]) for k, v in sparse_vals.items()}
        self._doc_cache.clear()     # cached ids belong to the old vocabularies
        return self

    # -- the one feature code path --
    # Serving scores up to 500 candidates per request within a few milliseconds, so features are
    # computed column-wise over the whole batch: one Python pass gathers the raw numbers, then
    # numpy does the smoothing, bucketing and affinities. Training calls the same `transform`.
    def _doc_part(self, vid: str, d: dict[str, Any]) -> tuple:
        e = self._doc_cache.get(vid)
        if e is not None and e[0] is d:
            return e
        f = d.get("_fields")
        pts = f.get("publish_ts") if isinstance(f, dict) else None
        if pts is None:
            pts = _publish_ts(d)
        arts = tuple(d.get("artists") or ())
        raw = (d.get("duration_s") or 0, d.get("resolution") or 0, _NAN if pts is None else pts,
               d.get("play_count") or 0, d.get("like_count") or 0)
        v = self.vocabs
        ids = tuple(v[k].index.get(x, 0) if k in v else 0 for k, x in _video_sparse_values(vid, d).items())
        if len(self._doc_cache) >= self.doc_cache_size:
            self._doc_cache.clear()
        e = self._doc_cache[vid] = (d, raw, ids, arts, str(d.get("language")), str(d.get("category")), frozenset(arts))
        return e

    def _gather(self, contexts: list[ImpressionContext]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One pass over the candidates: raw numeric columns, and the sparse ids."""
        n = len(contexts)
        qrows: dict[int, tuple] = {}
        urows: dict[int, tuple] = {}
        qidx: list[int] = []
        uidx: list[int] = []
        qvals: list[tuple] = []
        uvals: list[tuple] = []
        rows: list[tuple] = []
        sparse_rows: list[tuple] = []
        grade_vocab = self.vocabs["grade"].index if "grade" in self.vocabs else {}
        intent_vocab = self.vocabs["top_intent"].index if "top_intent" in self.vocabs else {}
        kind_vocab = self.vocabs["query_kind"].index if "query_kind" in self.vocabs else {}
        grade_ids: dict[Any, int] = {}
        doc_cache = self._doc_cache
        last_q = last_u = qr = ur = None
        for c in contexts:
            q = c.query
            if q is not last_q:           # a serving batch has one query and one user
                last_q, qr = q, qrows.get(id(q))
                if qr is None:
                    et = q.entity_types
                    kind = "+".join(sorted(et)) or "none"
                    qr = qrows[id(q)] = (len(qvals), q.entity_texts.get("artist") or (),
                                         intent_vocab.get(_top_intent(q), 0), kind_vocab.get(kind, 0), q)
                    qvals.append((q.n_tokens, q.n_chars, et.get("artist", 0), et.get("song", 0), et.get("show", 0)))
            u = c.user or _NO_USER
            if u is not last_u:
                last_u, ur = u, urows.get(id(u))
                if ur is None:
                    ur = urows[id(u)] = (len(uvals), _shares(u.artists) if u.artists else None, _shares(u.languages),
                                         _shares(u.categories), u)
                    uvals.append((u.requests, u.clicks, u.last_ts if u.last_ts else _NAN))
            qidx.append(qr[0])
            uidx.append(ur[0])
            dp = doc_cache.get(c.video_id)
            if dp is None or dp[0] is not c.doc:
                dp = self._doc_part(c.video_id, c.doc)
            g = grade_ids.get(c.grade)
            if g is None:
                g = grade_ids[c.grade] = grade_vocab.get(str(c.grade), 0)
            sparse_rows.append(dp[2] + (g, qr[2], qr[3]))
            st, rel, src = c.stats, c.relevance, c.sources
            ua, q_art, arts = ur[1], qr[1], dp[3]
            rows.append(dp[1] + (c.now_ts,) + (st._flat or st.flat()) + (
                rel.get("bm25", 0.0), rel.get("coverage", 0.0), rel.get("title_coverage", 0.0), rel.get("entity_match", 0.0),
                rel.get("closeness", 0.0), rel.get("field_coverage", 0.0), c.relevance_score,
                src.get("text", _NAN), src.get("rewrite", _NAN), src.get("vector", _NAN), len(src),
                (ua.get(arts[0], 0.0) if len(arts) == 1 else sum(ua.get(a, 0.0) for a in arts)) if ua else 0.0,
                ur[2].get(dp[4], 0.0), ur[3].get(dp[5], 0.0),
                0.0 if not q_art or dp[6].isdisjoint(q_art) else 1.0))
        cand = np.array(rows, dtype=np.float64).reshape(n, len(_CAND_RAW))
        qm = np.array(qvals, dtype=np.float64).reshape(-1, len(_QUERY_RAW))[qidx]
        um = np.array(uvals, dtype=np.float64).reshape(-1, len(_USER_RAW))[uidx]
        cols = {k: cand[:, j] for j, k in enumerate(_CAND_RAW)}
        cols.update({k: qm[:, j] for j, k in enumerate(_QUERY_RAW)})
        cols.update({k: um[:, j] for j, k in enumerate(_USER_RAW)})
        ids = np.array(sparse_rows, dtype=np.int64).reshape(n, len(_SPARSE_ORDER))
        sparse = ids[:, [_SPARSE_ORDER.index(k) for k in self.vocabs]] if self.vocabs else np.zeros((n, 0), np.int64)
        return cols, sparse

    def columns(self, contexts: list[ImpressionContext]) -> dict[str, np.ndarray]:
        """Every dense feature as a column over the batch, in schema order."""
        return self._columns(self._gather(contexts)[0], contexts)

    def _rate_block(self, succ: np.ndarray, trials: np.ndarray, priors: list[str]) -> list[dict[str, np.ndarray]]:
        """All rates of the batch in one pass: column j of succ/trials → {method suffix: rates}."""
        out: dict[str, np.ndarray] = {}
        if self.rate_method in ("bayes", "all"):
            a = np.array([self.priors[p].alpha if p in self.priors else 0.0 for p in priors])
            b = np.array([self.priors[p].beta if p in self.priors else 0.0 for p in priors])
            with np.errstate(divide="ignore", invalid="ignore"):     # columns without a prior are replaced below
                bayes = (succ + a) / (trials + a + b)
            plain = [j for j, p in enumerate(priors) if p not in self.priors]
            if plain:
                bayes[:, plain] = _plain_rates(succ[:, plain], trials[:, plain])
            out["bayes"] = bayes
        if self.rate_method in ("wilson", "all"):
            out["wilson"] = _wilson_rates(succ, trials)
        if self.rate_method in ("plain", "all"):
            out["plain"] = _plain_rates(succ, trials)
        return [{m: v[:, j] for m, v in out.items()} for j in range(len(priors))]

    def _columns(self, col: dict[str, np.ndarray], contexts: list[ImpressionContext]) -> dict[str, np.ndarray]:
        n = len(contexts)
        # the counts that share the default bucket edges are bucketed together, all rates in one pass
        counts = np.stack([col["t1_impressions"], col["t1_clicks"], col["rt_impressions"], col["rt_clicks"], col["u_requests"]], axis=1)
        cb = soft_bucket_matrix(counts.reshape(-1), self.edges).reshape(n, 5, len(self.edges))
        buckets = {name: cb[:, j] for j, name in enumerate(["t1_imp", "t1_clk", "rt_imp", "rt_clk", "u_requests"])}
        specs = [("v_catalog_like", "like_count", "play_count", "catalog_like")] + [
            (f"{sp}_{name}", f"{sp}_{succ}", f"{sp}_{trials}", prior) for sp in ("t1", "rt")
            for name, succ, trials, prior in (("ctr", "clicks", "impressions", "ctr"), ("vpr", "valid_plays", "clicks", "vpr"),
                                              ("like", "likes", "clicks", "like"))]
        rate_cols = self._rate_block(np.stack([col[x[1]] for x in specs], axis=1), np.stack([col[x[2]] for x in specs], axis=1),
                                     [x[3] for x in specs])
        rates = {x[0]: r for x, r in zip(specs, rate_cols)}

        def put_buckets(name: str, m: np.ndarray) -> None:
            for i in range(m.shape[1]):
                f[f"{name}_b{i}"] = m[:, i]

        def put_rates(prefix: str) -> None:
            for method in ("bayes", "wilson", "plain"):
                if method in rates[prefix]:
                    f[f"{prefix}_{method}"] = rates[prefix][method]

        f: dict[str, np.ndarray] = {}
        # query
        f["q_tokens"] = np.minimum(col["q_tokens"], 10) / 10
        f["q_chars"] = np.minimum(col["q_chars"], 30) / 30
        for t in ENTITY_TYPES:
            f[f"q_ent_{t}"] = np.minimum(col[f"q_ent_{t}"], 2)
        for name in self.intent_names:
            f[f"q_intent_{name}"] = np.fromiter((c.query.intents.get(name, 0.0) for c in contexts), np.float64, n)
        # video: static attributes and quality
        f["v_duration"] = np.log1p(col["duration"]) / 7
        f["v_hd"], f["v_fullhd"] = (col["resolution"] >= 720).astype(np.float64), (col["resolution"] >= 1080).astype(np.float64)
        age = np.where(np.isnan(col["publish_ts"]), 3650.0, np.maximum(0.0, (col["now_ts"] - col["publish_ts"]) / 86400))
        f["v_age"] = np.log1p(age) / 8
        f["example_age"] = self.example_age_column(contexts)
        put_buckets("v_catalog_plays", soft_bucket_matrix(col["play_count"], CATALOG_EDGES))
        put_rates("v_catalog_like")
        # video: T+1 and real-time behaviour
        for span in ("t1", "rt"):
            put_buckets(f"{span}_imp", buckets[f"{span}_imp"])
            put_buckets(f"{span}_clk", buckets[f"{span}_clk"])
            for r in ("ctr", "vpr", "like"):
                put_rates(f"{span}_{r}")
        # user
        req = col["u_requests"]
        f["u_known"] = (req > 0).astype(np.float64)
        put_buckets("u_requests", buckets["u_requests"])
        f["u_click_rate"] = (col["u_clicks"] + 1) / (req * 10 + 8)    # per shown slot, mildly smoothed
        idle = col["now_ts"] - col["u_last_ts"]        # NaN: never seen
        f["u_days_idle"] = np.where(np.isnan(idle), 1.0, np.log1p(np.maximum(0.0, np.nan_to_num(idle)) / 86400) / 5)
        # cross: relevance, recall, user–video affinity
        for k in RELEVANCE_KEYS:
            f[f"rel_{k}"] = col[f"rel_{k}"]
        f["rel_score"] = col["rel_score"]
        for r in ROUTES:
            s = col[f"src_{r}"]
            has = ~np.isnan(s)
            f[f"src_{r}"] = has.astype(np.float64)
            sv = np.nan_to_num(s)
            f[f"src_{r}_score"] = np.where(has, np.log1p(np.maximum(sv, 0.0)) / 6 if r != "vector" else sv, 0.0)
        f["src_n"] = col["src_n"] / 3
        f["x_user_artist"] = col["x_user_artist"]
        f["x_user_language"] = col["x_user_language"]
        f["x_user_category"] = col["x_user_category"]
        f["x_query_artist_in_video"] = col["x_query_artist_in_video"]
        return f

    def example_age_column(self, contexts: list[ImpressionContext]) -> np.ndarray:
        """log1p(days between the example's log time and the training reference) / 5; 0 at serving."""
        if self.example_age_ref is None:
            return np.zeros(len(contexts))
        ts = np.fromiter((self.example_age_ref if c.example_ts is None else c.example_ts for c in contexts), np.float64, len(contexts))
        return np.log1p(np.maximum(0.0, self.example_age_ref - ts) / 86400) / 5

    def dense_raw(self, c: ImpressionContext) -> dict[str, float]:
        """One candidate's features by name (for explain and tests; batches go through `transform`)."""
        return {k: float(v[0]) for k, v in self.columns([c]).items()}

    def sparse_raw(self, c: ImpressionContext) -> dict[str, str]:
        return {**_video_sparse_values(c.video_id, c.doc), "grade": str(c.grade), "top_intent": _top_intent(c.query),
                "query_kind": "+".join(sorted(c.query.entity_types)) or "none"}

    def dense_names(self) -> list[str]:
        return list(self.columns([]))

    def transform(self, contexts: list[ImpressionContext]) -> tuple[np.ndarray, np.ndarray]:
        raw, sparse = self._gather(contexts)
        cols = self._columns(raw, contexts)
        dense = np.empty((len(contexts), len(cols)), dtype=np.float32)
        for j, v in enumerate(cols.values()):
            dense[:, j] = v
        return dense, sparse

    def snapshot(self, dense_row: np.ndarray, sparse_row: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
        """The exact vector the model saw, by name (sparse fields as their vocabulary index)."""
        names = names or self.dense_names()
        out = {n: round(float(v), 6) for n, v in zip(names, dense_row)}
        out.update({f"sparse.{k}": float(v) for k, v in zip(self.vocabs, sparse_row)})
        return out

    def snapshots(self, dense: np.ndarray, sparse: np.ndarray, names: list[str] | None = None) -> list["FeatureSnapshot"]:
        """`snapshot` for a whole batch, lazily: serving scores up to 500 candidates but only the
        shown ones are logged, so a row becomes a dict only when somebody reads it."""
        batch = _SnapshotBatch(list(names or self.dense_names()), [f"sparse.{k}" for k in self.vocabs], dense, sparse)
        return [FeatureSnapshot(batch, i) for i in range(len(dense))]

    def to_dict(self) -> dict[str, Any]:
        return {"rate_method": self.rate_method, "priors": {k: [p.alpha, p.beta] for k, p in self.priors.items()},
                "vocabs": {k: v.to_dict() for k, v in self.vocabs.items()}, "intent_names": self.intent_names, "edges": self.edges,
                "example_age_ref": self.example_age_ref}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureBuilder":
        return cls(d["rate_method"], {k: BetaPrior(*v) for k, v in d["priors"].items()},
                   {k: FrequencyVocab.from_dict(v) for k, v in d["vocabs"].items()}, list(d["intent_names"]), list(d["edges"]),
                   d.get("example_age_ref"))


class _SnapshotBatch:
    __slots__ = ("names", "index", "dense", "sparse")

    def __init__(self, dense_names: list[str], sparse_names: list[str], dense: np.ndarray, sparse: np.ndarray):
        self.names = dense_names + sparse_names
        self.index = {n: i for i, n in enumerate(self.names)}
        self.dense, self.sparse = dense, sparse

    def row(self, i: int) -> list[float]:
        return np.round(self.dense[i].astype(np.float64), 6).tolist() + self.sparse[i].astype(np.float64).tolist()


class FeatureSnapshot(Mapping):
    """One candidate's logged feature vector, by name: the dense values rounded to 6 digits and
    the sparse fields as vocabulary indices (`sparse.<field>`). Read-only view of the batch the
    model scored, so it equals what the model saw."""
    __slots__ = ("_batch", "_i", "_values")

    def __init__(self, batch: _SnapshotBatch, i: int):
        self._batch, self._i, self._values = batch, i, None

    def _row(self) -> list[float]:
        if self._values is None:
            self._values = self._batch.row(self._i)
        return self._values

    def __getitem__(self, name: str) -> float:
        return self._row()[self._batch.index[name]]

    def __iter__(self):
        return iter(self._batch.names)

    def __len__(self) -> int:
        return len(self._batch.names)

    def items(self):  # one materialization instead of one lookup per name
        return zip(self._batch.names, self._row())

    def __repr__(self) -> str:
        return f"FeatureSnapshot({dict(self.items())!r})"

