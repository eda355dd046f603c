"""Relevance scorer registry: one small interface for every way of scoring (query, video) pairs.

A scorer is built by a factory from a `ScorerContext` and scores aligned lists:

    scorer = build_scorer("text", ctx)
    scores = scorer.score_pairs(queries, docs)   # queries[i] vs docs[i] → np.ndarray, shape (n,)

`queries` are `UnderstoodQuery` objects (the QU stage's output), `docs` are doc-store records
(`search/documents.py`: the stored record plus the tokenized `_fields`). Higher = more
relevant; values need not be in [0, 1] (AUC only needs the order), but scorers that feed the
ensemble should be comparable across queries.

Offline evaluation (`mvsearch eval relevance`), the ensemble's training and the ensemble
pipeline stage all go through this registry, so a new model plugs in with one
`register_scorer(name, factory)` call (the aspect model of part B registers `aspect` and
`aspect_ft` from `relevance/aspect_model.py`; see `_load_optional`). A factory that cannot
build its scorer (missing model file, engine without a local text index) raises
`ScorerUnavailable` with the reason, which reports show as "not available".
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from query_understanding import UnderstoodQuery

log = logging.getLogger("mvsearch.relevance")


class ScorerUnavailable(RuntimeError):
    """The scorer cannot be built here (the message says why and what to do)."""


class PairScorer(Protocol):
    name: str

    def score_pairs(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> np.ndarray: ...


@dataclass
class ScorerContext:
    """What a scorer factory may use. Everything is optional so tiny test fixtures can build
    scorers without an index; a factory raises `ScorerUnavailable` when it lacks something."""
    bundle_dir: Path | None = None                 # index bundle (dictionary, tantivy index, doc store)
    config: dict[str, Any] = field(default_factory=dict)   # full engine config (search/default_config.toml)
    params: dict[str, Any] = field(default_factory=dict)   # per-scorer params: params[name] = {...}
    understand: Callable[[str], UnderstoodQuery] | None = None
    get_docs: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None
    cache: dict[str, Any] = field(default_factory=dict)    # shared objects (BM25 lookup, loaded models)

    def scorer_params(self, name: str) -> dict[str, Any]:
        """Params of one scorer: `[relevance.scorers.<name>]` in the config, overridden by `params[name]`."""
        base = dict(self.config.get("relevance", {}).get("scorers", {}).get(name, {}))
        base.update(self.params.get(name, {}))
        return base

    def pair_inputs(self, pairs: list[Any]) -> tuple[list[Any], list[UnderstoodQuery], list[dict[str, Any]]]:
        """(pairs whose video is in the doc store, their understood queries, their docs): each
        distinct query is understood once, the docs are read in one batch."""
        docs = self.get_docs(sorted({p.video_id for p in pairs}))
        kept = [p for p in pairs if p.video_id in docs]
        understood: dict[str, UnderstoodQuery] = {}
        for p in kept:
            if p.query not in understood:
                understood[p.query] = self.understand(p.query)
        return kept, [understood[p.query] for p in kept], [docs[p.video_id] for p in kept]


ScorerFactory = Callable[[ScorerContext], PairScorer]
SCORERS: dict[str, ScorerFactory] = {}
# Modules that register further scorers when imported; missing ones are simply not available.
OPTIONAL_SCORER_MODULES = ("relevance.aspect_model",)


def register_scorer(name: str, factory: ScorerFactory) -> None:
    SCORERS[name] = factory


def _load_optional() -> None:
    for mod in OPTIONAL_SCORER_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError as e:  # not landed yet / torch missing: its scorers are not available
            log.debug("optional scorer module %s not loaded: %s", mod, e)


def available_scorers() -> list[str]:
    _load_optional()
    return sorted(SCORERS)


def build_scorer(name: str, ctx: ScorerContext) -> PairScorer:
    _load_optional()
    if name not in SCORERS:
        raise ScorerUnavailable(f"unknown scorer {name!r}; registered: {', '.join(sorted(SCORERS))}")
    return SCORERS[name](ctx)


# --------------------------------------------------------------------------- BM25 lookup


class Bm25Lookup:
    """Pure BM25 (field boosts and term weights, no closeness/hotness/freshness) of given videos
    for a query, computed by the bundle's tantivy index, divided by the best BM25 of that query
    over the whole index — so values are in [0, 1] and comparable across queries (the pipeline
    normalizes its text score by the best candidate in the same spirit)."""

    def __init__(self, bundle_dir: Path):
        import tantivy

        from index_config import IndexConfig

        tdir = Path(bundle_dir) / "tantivy"
        if not tdir.exists():
            raise ScorerUnavailable(f"no local text index in {bundle_dir} (bm25 needs an embedded-engine bundle)")
        from search.indexer import bundle_index_config

        self.cfg: IndexConfig = bundle_index_config(Path(bundle_dir))
        self.index = tantivy.Index.open(str(tdir))
        self.schema = self.index.schema
        self.searcher = self.index.searcher()
        self._top: dict[tuple[str, ...], float] = {}

    def _query(self, terms: list[str], weights: list[float]) -> Any:
        import tantivy

        Q, Occur = tantivy.Query, tantivy.Occur
        seen: dict[str, float] = {}
        for t, w in zip(terms, weights):
            seen[t] = max(seen.get(t, 0.0), float(w))
        clauses = []
        for t, w in seen.items():
            per_field = [Q.boost_query(Q.term_query(self.schema, f.name, t), f.boost) for f in self.cfg.text_fields]
            clauses.append((Occur.Should, Q.boost_query(Q.disjunction_max_query(per_field, float(self.cfg.recall["tie_breaker"])), w)))
        return Q.boolean_query(clauses)

    def scores(self, terms: list[str], weights: list[float], video_ids: list[str]) -> dict[str, float]:
        import tantivy

        if not terms or not video_ids:
            return {}
        Q, Occur = tantivy.Query, tantivy.Occur
        q = self._query(terms, weights)
        key = tuple(f"{t}\x00{w:.4f}" for t, w in zip(terms, weights))
        top = self._top.get(key)
        if top is None:
            res = self.searcher.search(q, 1, count=False)
            top = float(res.hits[0][0]) if res.hits else 0.0
            if len(self._top) > 50_000:  # bounded: a serving process sees unboundedly many queries
                self._top.clear()
            self._top[key] = top
        if top <= 0:
            return {}
        ids = list(dict.fromkeys(video_ids))
        filt = Q.const_score_query(Q.term_set_query(self.schema, "video_id", ids), 0.0)
        res = self.searcher.search(Q.boolean_query([(Occur.Must, q), (Occur.Must, filt)]), len(ids), count=False)
        out: dict[str, float] = {}
        for score, addr in res.hits:
            out[self.searcher.doc(addr).get_first("video_id")] = min(1.0, float(score) / top)
        return out


def bm25_lookup(ctx: ScorerContext) -> Bm25Lookup:
    if "bm25" not in ctx.cache:
        if ctx.bundle_dir is None:
            raise ScorerUnavailable("bm25 needs an index bundle (give the engine/index options)")
        ctx.cache["bm25"] = Bm25Lookup(ctx.bundle_dir)
    return ctx.cache["bm25"]


def bm25_values(lookup: Bm25Lookup | None, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> np.ndarray:
    """Per pair normalized BM25, one tantivy search per distinct query."""
    out = np.zeros(len(docs), dtype=np.float64)
    if lookup is None:
        return out
    groups: dict[int, list[int]] = {}
    by_id: dict[int, UnderstoodQuery] = {}
    for i, q in enumerate(queries):
        groups.setdefault(id(q), []).append(i)
        by_id[id(q)] = q
    for qid, idx in groups.items():
        q = by_id[qid]
        vals = lookup.scores(q.terms, q.weights, [docs[i]["video_id"] for i in idx])
        for i in idx:
            out[i] = vals.get(docs[i]["video_id"], 0.0)
    return out


# --------------------------------------------------------------------------- built-in scorers


class Bm25Scorer:
    name = "bm25"

    def __init__(self, lookup: Bm25Lookup):
        self.lookup = lookup

    def score_pairs(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> np.ndarray:
        return bm25_values(self.lookup, queries, docs)


class TextScorer:
    """The text-relevance stage's features and combined score for arbitrary pairs; the BM25
    feature comes from `Bm25Lookup` when an index is there (0 otherwise)."""
    name = "text"

    def __init__(self, params: dict[str, Any], lookup: Bm25Lookup | None):
        from .text_relevance import TextRelevanceWeights

        self.weights = TextRelevanceWeights.from_dict(params)
        self.lookup = lookup

    def features(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> list[dict[str, float]]:
        from .text_relevance import query_entities, text_features

        bm = bm25_values(self.lookup, queries, docs)
        out = []
        ents_cache: dict[int, dict[str, set[str]]] = {}
        for q, d, b in zip(queries, docs, bm):
            ents = ents_cache.get(id(q))
            if ents is None:
                ents = ents_cache[id(q)] = query_entities(q)
            out.append(text_features(q.terms, q.weights, ents, d.get("_fields", {}), float(b)))
        return out

    def score_features(self, feats: list[dict[str, float]], queries: list[UnderstoodQuery]) -> np.ndarray:
        from .text_relevance import combine

        return np.array([combine(f, self.weights, bool(q.entities))[0] for f, q in zip(feats, queries)], dtype=np.float64)

    def score_pairs(self, queries: list[UnderstoodQuery], docs: list[dict[str, Any]]) -> np.ndarray:
        return self.score_features(self.features(queries, docs), queries)


def _text_factory(ctx: ScorerContext) -> TextScorer:
    lookup = None
    if ctx.bundle_dir is not None:
        try:
            lookup = bm25_lookup(ctx)
        except ScorerUnavailable:
            lookup = None
    # the text weights of [relevance.params] (unknown keys such as the ensemble's `model` are ignored)
    params = dict(ctx.config.get("relevance", {}).get("params", {}))
    params.update(ctx.scorer_params("text"))
    return TextScorer(params, lookup)


register_scorer("bm25", lambda ctx: Bm25Scorer(bm25_lookup(ctx)))
register_scorer("text", _text_factory)


def _register_models() -> None:
    # click graph and ensemble live in their own files; importing them registers their scorers
    from . import click_graph, ensemble  # noqa: F401


_register_models()
