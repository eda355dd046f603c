"""The search pipeline: query → understanding → recall → relevance → ranking → rerank.

Each stage is a component with a typed input and output, chosen by name from the config
(`STAGES` registry). A disabled stage is skipped; a stage that fails is skipped with a
warning in the response and the previous stage's order is kept — the pipeline degrades
instead of failing.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from query_understanding import QueryInput, QueryUnderstanding, UnderstoodQuery
from query_understanding.tokenize import get_tokenizer

from .config import load_config
from .contracts import Candidate, RecallInput, StageInput, StageOutput
from .embedder import LsaEmbedder
from .engines.base import Engine, EngineUnavailable
from .indexer import bundle_index_config, current_bundle, read_manifest
from .recall import Recall, RecallConfig, RewriteTable

log = logging.getLogger("mvsearch.pipeline")

Factory = Callable[[dict[str, Any], "PipelineContext"], Any]
STAGES: dict[str, dict[str, Factory]] = {"understanding": {}, "relevance": {}, "ranking": {}, "rerank": {}}


def register_stage(kind: str, name: str, factory: Factory) -> None:
    """Make an implementation selectable from config as `[kind] impl = "name"`."""
    STAGES[kind][name] = factory


@dataclass
class PipelineContext:
    bundle_dir: Path
    manifest: dict[str, Any]
    config: dict[str, Any]


_recognizers: dict[tuple[str, str, str], Any] = {}


def clear_query_caches() -> None:
    """Forget loaded recognizers and memoized tokenizations (benchmarks measure cold caches)."""
    from query_understanding.tokenize import clear_memos

    _recognizers.clear()
    clear_memos()


def _entity_recognizer(dictionary: Path, params: dict[str, Any]):
    """Dictionary (bundle) + KB lyric lines + the trained tagger if configured; one per
    process and configuration (the lexicon takes ~1 s to build)."""
    from query_understanding.ner import load_recognizer
    from query_understanding.tokenize import read_dictionary

    model = str(params.get("ner_model") or "")
    if model and not Path(model).exists():
        raise FileNotFoundError(f"[understanding.params] ner_model {model} does not exist; train it with `mvsearch qu train-ner`")
    key = (str(dictionary), model, repr(sorted(params.get("ner_params", {}).items())))
    if key not in _recognizers:
        from .kb import load_kb

        entries = [(e.word, e.tag) for e in read_dictionary(dictionary)] if dictionary.exists() else []
        lyrics = [l["line"] for l in load_kb().lyrics]
        _recognizers[key] = load_recognizer(entries, lyrics, model or None, params.get("ner_params"))
    return _recognizers[key]


def _register_baselines() -> None:
    from ranking import FormulaRanker, IdentityRerank
    from relevance import TextRelevance

    def understanding(params: dict[str, Any], ctx: PipelineContext) -> QueryUnderstanding:
        from query_understanding.correction import CorrectionConfig, Corrector

        corr = None
        path = ctx.bundle_dir / "correction.json.gz"
        if path.exists() and params.get("correction", True):
            cc = CorrectionConfig(**{k: float(v) for k, v in params.get("correction_params", {}).items()})
            corr = Corrector.load(path, cc)
        from query_understanding.term_weights import TermWeighter

        tw = ctx.bundle_dir / "term_weights.json"
        weighter = TermWeighter.load(tw) if tw.exists() else None
        intent_model = None
        if params.get("intent_model"):
            from query_understanding.intent import IntentClassifier

            path = Path(params["intent_model"])
            if not path.exists():
                raise FileNotFoundError(f"[understanding.params] intent_model {path} does not exist; train it with `mvsearch qu train-intent`")
            intent_model = IntentClassifier.load(path)
        recognizer = None
        if params.get("ner", True):
            recognizer = _entity_recognizer(ctx.bundle_dir / "dictionary.txt", params)
        return QueryUnderstanding(ctx.bundle_dir / "dictionary.txt", params, corr, weighter, intent_model, recognizer)

    register_stage("understanding", "baseline", understanding)
    register_stage("relevance", "text", lambda p, ctx: TextRelevance(p))

    def relevance_ensemble(params: dict[str, Any], ctx: PipelineContext) -> Any:
        from relevance.ensemble import EnsembleRelevance  # scikit-learn model + click graph: loaded only when chosen

        return EnsembleRelevance(params, ctx)

    register_stage("relevance", "ensemble", relevance_ensemble)
    register_stage("ranking", "formula", lambda p, ctx: FormulaRanker(p))

    def learned_ranker(params: dict[str, Any], ctx: PipelineContext) -> Any:
        from ranking.learned import LearnedRanker  # torch is imported only when this ranker is chosen

        return LearnedRanker(params)

    register_stage("ranking", "learned", learned_ranker)
    register_stage("rerank", "identity", lambda p, ctx: IdentityRerank(p))

    def dpp_rerank(params: dict[str, Any], ctx: PipelineContext) -> Any:
        # DPP similarity uses the bundle's LSA embedder (every bundle has one, also when the
        # index vectors come from the two-tower model); operator pins of videos recall did not
        # return are rendered from the bundle's doc store.
        from ranking.rerank import DiversityRerank
        from .documents import DocStore

        emb = ctx.bundle_dir / "embedder.npz"
        store: list[DocStore] = []

        def fetch_docs(ids: list[str]) -> dict[str, Any]:
            if not store:
                store.append(DocStore(ctx.bundle_dir / "docstore.sqlite"))
            return store[0].get_many(ids)

        return DiversityRerank(params, LsaEmbedder.load(emb) if emb.exists() else None, fetch_docs)

    register_stage("rerank", "dpp", dpp_rerank)


_register_baselines()


@dataclass
class SearchRequest:
    q: str
    user_id: str | None = None
    page: int = 1
    size: int = 10
    explain: bool = False
    now_ts: float | None = None  # "now" for freshness; the log simulator serves at simulated times


@dataclass
class Retrieval:
    """What `SearchPipeline.retrieve` found for a query: relevance-scored candidates, before ranking."""
    query: UnderstoodQuery
    candidates: list[Candidate]
    stages: dict[str, Any]
    warnings: list[str]
    rewrite_terms: list[list[str]]
    now_ts: float
    took_ms: float = 0.0
    empty: bool = False


@dataclass
class SearchResult:
    query: UnderstoodQuery
    total: int
    page: int
    size: int
    hits: list[Candidate]
    warnings: list[str] = field(default_factory=list)
    stages: dict[str, Any] = field(default_factory=dict)
    took_ms: float = 0.0
    index_version: str = ""
    engine: str = ""


def open_engine(config: dict[str, Any]) -> tuple[Engine, Path, dict[str, Any], list[str]]:
    ec = config["engine"]
    warnings: list[str] = []
    kind = ec.get("kind", "embedded")
    if kind == "embedded":
        from .engines.embedded import EmbeddedEngine

        bundle = current_bundle(ec["index_dir"])
        manifest = read_manifest(bundle)
        icfg = bundle_index_config(bundle)
        if manifest["engine"] != "embedded":
            raise ValueError(f"index at {ec['index_dir']} was built for {manifest['engine']}, not the embedded engine")
        return EmbeddedEngine(bundle, icfg, manifest), bundle, manifest, warnings
    if kind == "elasticsearch":
        from .engines.elastic import ElasticsearchEngine

        bundle = current_bundle(ec["index_dir"])
        manifest = read_manifest(bundle)
        icfg = bundle_index_config(bundle)
        eng = ElasticsearchEngine(bundle, icfg, manifest, url=ec.get("es_url") or None, alias=ec.get("es_index") or None)
        if eng.health()["reachable"]:
            return eng, bundle, manifest, warnings
        eng.close()
        if ec.get("fallback_index_dir"):
            from .engines.embedded import EmbeddedEngine

            fb = current_bundle(ec["fallback_index_dir"])
            warnings.append(f"Elasticsearch at {ec.get('es_url')} unreachable; serving from embedded index {fb.name}")
            return EmbeddedEngine(fb, bundle_index_config(fb), read_manifest(fb)), fb, read_manifest(fb), warnings
        raise EngineUnavailable(f"Elasticsearch at {ec.get('es_url')} is unreachable and no fallback_index_dir is configured")
    raise ValueError(f"unknown engine kind {kind!r}: use embedded or elasticsearch")


def _rewrite_table(config: dict[str, Any], bundle: Path) -> RewriteTable:
    """The configured versioned rewrite table (mvsearch expansion build-rewrites), else the bundle's KB table."""
    table = config.get("recall", {}).get("routes", {}).get("rewrite", {}).get("table") or ""
    return RewriteTable(table, required=True) if table else RewriteTable(bundle / "rewrite_table.json")


class SearchPipeline:
    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.engine, self.bundle, self.manifest, self.startup_warnings = open_engine(config)
        ctx = PipelineContext(self.bundle, self.manifest, config)
        self.stages: dict[str, Any] = {}
        for kind in ("understanding", "relevance", "ranking", "rerank"):
            sc = config.get(kind, {})
            if not sc.get("enabled", True):
                continue
            impl = sc.get("impl")
            if impl not in STAGES[kind]:
                raise ValueError(f"[{kind}] impl = {impl!r} is not registered; available: {sorted(STAGES[kind])}")
            self.stages[kind] = STAGES[kind][impl](sc.get("params", {}), ctx)
        self.tokenizer = get_tokenizer(self.bundle / "dictionary.txt")
        # the query embedder must match the bundle's vectors: two-tower if built with it, else LSA
        from .expansion.two_tower import load_bundle_embedder

        self.embedder = load_bundle_embedder(self.bundle, self.manifest)
        self.recall = Recall(self.engine, self.engine.cfg, self.tokenizer, self.embedder,
                             _rewrite_table(config, self.bundle),
                             RecallConfig.from_dict(config.get("recall", {})))
        self.tokenizer.tokenize("预热 warmup")  # load jieba + dictionary now, not on the first request
        ref = config.get("search", {}).get("reference_time") or ""
        self.reference_ts = datetime.fromisoformat(ref).timestamp() if ref else None

    @classmethod
    def from_config_file(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "SearchPipeline":
        return cls(load_config(path, overrides))

    def understand(self, text: str, user_id: str | None = None) -> UnderstoodQuery:
        st = self.stages.get("understanding")
        if st is None:  # switched off: still normalize+tokenize, or nothing downstream can work
            st = STAGES["understanding"]["baseline"]({}, PipelineContext(self.bundle, self.manifest, self.config))
        return st.run(QueryInput(text, user_id))

    def search(self, req: SearchRequest) -> SearchResult:
        return self.order(self.retrieve(req), req)

    def retrieve(self, req: SearchRequest) -> Retrieval:
        """The query-level half: understanding, recall and relevance. Its result depends on the
        query text and the time only, never on the user, so it can be reused for several requests
        (the log simulator does); `order` then ranks it for one request."""
        t0 = time.perf_counter()
        now_ts = self.now(req)
        warnings = list(self.startup_warnings)
        stages: dict[str, Any] = {}
        q = self.understand(req.q, req.user_id)
        stages["understanding"] = q.explain
        if not q.terms:
            return Retrieval(q, [], stages, warnings + ["query has no searchable terms after normalization"], [], now_ts,
                             (time.perf_counter() - t0) * 1000, empty=True)
        rec = self.recall.run(RecallInput(q, now_ts, req.user_id))
        stages["recall"] = rec.explain
        cands = rec.candidates
        docs = self.engine.get_docs([c.video_id for c in cands])
        cands = [c for c in cands if c.video_id in docs]
        for c in cands:
            c.doc = docs[c.video_id]
            c.explain["recall"] = {"sources": dict(c.sources), "recall_score": round(c.recall_score, 4)}
        rewrites = rec.explain.get("routes", {}).get("rewrite", {}).get("rewrites", [])
        rw_terms = [self.tokenizer.tokenize(r) for r in rewrites]
        cands = self._run_stages(("relevance",), q, cands, req.user_id, now_ts, rw_terms, stages, warnings)
        return Retrieval(q, cands, stages, warnings, rw_terms, now_ts, (time.perf_counter() - t0) * 1000)

    def order(self, r: Retrieval, req: SearchRequest, reuse: bool = False) -> SearchResult:
        """The request-level half: ranking (which may use the user and live counters), rerank and
        the page. `reuse=True` works on copies, so `r` can be ordered again for another request."""
        t0 = time.perf_counter()
        stages, warnings = dict(r.stages), list(r.warnings)
        took = lambda: round(r.took_ms + (time.perf_counter() - t0) * 1000, 2)  # noqa: E731
        if r.empty:
            return SearchResult(r.query, 0, req.page, req.size, [], warnings, stages, took(), self.manifest["version_name"], self.engine.name)
        cands = [dataclasses.replace(c, explain=dict(c.explain)) for c in r.candidates] if reuse else r.candidates
        now_ts = req.now_ts if (reuse and req.now_ts) else r.now_ts
        cands = self._run_stages(("ranking", "rerank"), r.query, cands, req.user_id, now_ts, r.rewrite_terms, stages, warnings)
        max_results = int(self.config.get("search", {}).get("max_results", 1000))
        cands = cands[:max_results]
        start = (req.page - 1) * req.size
        page = cands[start : start + req.size]
        return SearchResult(r.query, len(cands), req.page, req.size, page, warnings, stages, took(),
                            self.manifest["version_name"], self.engine.name)

    def _run_stages(self, kinds: tuple[str, ...], q: UnderstoodQuery, cands: list[Candidate], user_id: str | None, now_ts: float,
                    rw_terms: list[list[str]], stages: dict[str, Any], warnings: list[str]) -> list[Candidate]:
        for kind in kinds:
            if kind == "rerank" and ("ranking" not in self.stages or "failed" in stages.get("ranking", {})):
                # No ranker: the previous stage's order is relevance (or recall) order.
                rel_ok = "relevance" in self.stages and "failed" not in stages.get("relevance", {})
                for c in cands:
                    c.rank_score = c.relevance_score if rel_ok else c.recall_score
                cands = sorted(cands, key=lambda c: -c.rank_score)
            st = self.stages.get(kind)
            if st is None:
                stages[kind] = {"skipped": "disabled in config"}
                continue
            try:
                out: StageOutput = st.run(StageInput(q, cands, user_id, now_ts, rw_terms))
                cands = out.candidates
                stages[kind] = out.explain
                warnings.extend(out.warnings)
            except Exception as e:  # degrade: keep the previous stage's order
                log.exception("stage %s failed", kind)
                warnings.append(f"{kind} stage {getattr(st, 'name', kind)!r} failed ({type(e).__name__}: {e}); previous order kept")
                stages[kind] = {"failed": str(e)}
        return cands

    def now(self, req: SearchRequest) -> float:
        return req.now_ts or self.reference_ts or datetime.now(timezone.utc).timestamp()

    # -- behaviour feedback: real-time counters and user history for the stages that keep them --
    def behaviour_stages(self) -> list[Any]:
        return [st for st in self.stages.values() if callable(getattr(st, "observe", None))]

    def observe(self, user_id: str | None, ts: float, outcomes: list[dict[str, Any]]) -> int:
        """Feed one request's outcomes (video_id, clicked, valid_play, liked) to every stage that
        keeps behaviour state; a later request sees them. Returns how many stages took them."""
        takers = self.behaviour_stages()
        if takers:
            docs = self.engine.get_docs([o["video_id"] for o in outcomes])
            for st in takers:
                st.observe(user_id, ts, outcomes, docs)
        return len(takers)

    def health(self) -> dict[str, Any]:
        h = self.engine.health()
        h["stages"] = {k: getattr(v, "name", k) for k, v in self.stages.items()}
        qu = self.stages.get("understanding")
        h["models_loaded"] = {"embedder": self.embedder.name if self.embedder else None,
                              "intent_model": getattr(qu, "intent_model", None) is not None,
                              "rewrite_table": self.recall.rewrites.version,
                              "spelling_correction": getattr(qu, "corrector", None) is not None,
                              "term_weights": getattr(qu, "weighter", None) is not None}
        return h

    def close(self) -> None:
        self.engine.close()
