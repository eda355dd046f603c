"""The search pipeline: query → understanding → recall → relevance → ranking → rerank.

Each stage is a component with a typed input and output, chosen by name from the config
(`STAGES` registry). A disabled stage is skipped; a stage that fails is skipped with a
warning in the response and the previous stage's order is kept — the pipeline degrades
instead of failing.
"""
from __future__ import annotations

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
        return QueryUnderstanding(ctx.bundle_dir / "dictionary.txt", params, corr, weighter, intent_model)

    register_stage("understanding", "baseline", understanding)
    register_stage("relevance", "text", lambda p, ctx: TextRelevance(p))
    register_stage("ranking", "formula", lambda p, ctx: FormulaRanker(p))
    register_stage("rerank", "identity", lambda p, ctx: IdentityRerank(p))


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
        emb_path = self.bundle / "embedder.npz"
        self.embedder = LsaEmbedder.load(emb_path) if emb_path.exists() else None
        self.recall = Recall(self.engine, self.engine.cfg, self.tokenizer, self.embedder,
                             RewriteTable(self.bundle / "rewrite_table.json"), RecallConfig.from_dict(config.get("recall", {})))
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
        t0 = time.perf_counter()
        now_ts = req.now_ts or self.reference_ts or datetime.now(timezone.utc).timestamp()
        warnings = list(self.startup_warnings)
        stages: dict[str, Any] = {}
        q = self.understand(req.q, req.user_id)
        stages["understanding"] = q.explain
        if not q.terms:
            return SearchResult(q, 0, req.page, req.size, [], warnings + ["query has no searchable terms after normalization"],
                                stages, round((time.perf_counter() - t0) * 1000, 2), self.manifest["version_name"], self.engine.name)
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
        for kind in ("relevance", "ranking", "rerank"):
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
                out: StageOutput = st.run(StageInput(q, cands, req.user_id, now_ts, rw_terms))
                cands = out.candidates
                stages[kind] = out.explain
                warnings.extend(out.warnings)
            except Exception as e:  # degrade: keep the previous stage's order
                log.exception("stage %s failed", kind)
                warnings.append(f"{kind} stage {getattr(st, 'name', kind)!r} failed ({type(e).__name__}: {e}); previous order kept")
                stages[kind] = {"failed": str(e)}
        max_results = int(self.config.get("search", {}).get("max_results", 1000))
        cands = cands[:max_results]
        start = (req.page - 1) * req.size
        page = cands[start : start + req.size]
        return SearchResult(q, len(cands), req.page, req.size, page, warnings, stages,
                            round((time.perf_counter() - t0) * 1000, 2), self.manifest["version_name"], self.engine.name)

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
