"""Embedded engine: tantivy for text (BM25, phrase/slop closeness, hotness through a fast
field) and faiss for vectors. No server; the index is a directory built by `search.indexer`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import tantivy

from index_config import IndexConfig

from ..documents import DocStore
from .base import EngineHit, TextQueryPlan

TANTIVY_DIR = "tantivy"
FAISS_FILE = "vectors.faiss"
VECTOR_IDS = "vector_ids.json"


def tantivy_schema(cfg: IndexConfig) -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_text_field("video_id", stored=True, tokenizer_name="raw")
    for f in cfg.text_fields:
        sb.add_text_field(f.name, stored=False, tokenizer_name="whitespace", index_option="position")
    for f in cfg.keyword_fields:
        sb.add_text_field(f.name, stored=False, tokenizer_name="raw", index_option="basic")
    for name in ("category", "language", "uploader_raw"):
        sb.add_text_field(name, stored=False, tokenizer_name="raw", index_option="basic")
    sb.add_float_field("hot_weight", stored=False, fast=True)
    sb.add_integer_field("publish_ts", stored=True, indexed=True, fast=True)
    sb.add_integer_field("play_count", stored=False, indexed=False, fast=True)
    return sb.build()


def build_tantivy(out_dir: Path, docs: Iterable[dict[str, Any]], cfg: IndexConfig) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = tantivy_schema(cfg)
    index = tantivy.Index(schema, path=str(out_dir))
    writer = index.writer(heap_size=256_000_000, num_threads=1)
    n = 0
    for d in docs:
        fields: dict[str, Any] = {"video_id": d["video_id"]}
        for f in cfg.text_fields:
            fields[f.name] = " ".join(d[f.name])
        for f in cfg.keyword_fields:
            fields[f.name] = list(d[f.name])
        for name in ("category", "language", "uploader_raw"):
            fields[name] = d[name]
        fields["hot_weight"] = float(d["hot_weight"])
        fields["publish_ts"] = int(d["publish_ts"])
        fields["play_count"] = int(d["play_count"])
        writer.add_document(tantivy.Document(**fields))
        n += 1
    writer.commit()
    writer.wait_merging_threads()
    return n


def build_faiss(out_dir: Path, ids: list[str], vectors: np.ndarray, cfg: IndexConfig) -> None:
    import faiss

    vc = cfg.vectors["faiss"]
    d = vectors.shape[1]
    kind = vc["small"] if len(ids) <= int(vc["small_catalog_max"]) else vc["large"]
    # Cosine similarity = inner product on L2-normalized vectors.
    index = faiss.index_factory(d, kind, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(out_dir / FAISS_FILE))
    (out_dir / VECTOR_IDS).write_text(json.dumps(ids), encoding="utf-8")


class EmbeddedEngine:
    name = "embedded"

    def __init__(self, bundle_dir: str | Path, cfg: IndexConfig, manifest: dict[str, Any]):
        import faiss

        self.dir = Path(bundle_dir)
        self.cfg = cfg
        self.manifest = manifest
        self.index = tantivy.Index.open(str(self.dir / TANTIVY_DIR))
        self.schema = self.index.schema
        self.searcher = self.index.searcher()
        self.docstore = DocStore(self.dir / "docstore.sqlite")
        self.faiss = faiss.read_index(str(self.dir / FAISS_FILE))
        if hasattr(self.faiss, "hnsw"):
            self.faiss.hnsw.efSearch = int(cfg.vectors["faiss"].get("ef_search", 128))
        self.vector_ids: list[str] = json.loads((self.dir / VECTOR_IDS).read_text(encoding="utf-8"))

    @property
    def index_version(self) -> str:
        return self.manifest["version_name"]

    def _compile(self, plan: TextQueryPlan) -> tantivy.Query:
        Q, Occur = tantivy.Query, tantivy.Occur
        rc = self.cfg.recall
        should: list[tuple[Any, Any]] = []
        for i, (term, w) in enumerate(zip(plan.terms, plan.weights)):
            per_field = [Q.boost_query(Q.term_query(self.schema, f.name, term), f.boost) for f in self.cfg.text_fields]
            per_field += [Q.boost_query(Q.term_query(self.schema, f.name, term), f.boost) for f in self.cfg.keyword_fields if f.name != "title_raw"]
            occur = Occur.Must if plan.is_required(i) else Occur.Should
            should.append((occur, Q.boost_query(Q.disjunction_max_query(per_field, float(rc["tie_breaker"])), w)))
        cl = rc["closeness"]
        if len(plan.phrase) >= 2:
            should.append((Occur.Should, Q.boost_query(Q.phrase_query(self.schema, cl["field"], list(plan.phrase), int(cl["slop"])), float(cl["boost"]))))
            should.append((Occur.Should, Q.boost_query(Q.phrase_query(self.schema, cl["field"], list(plan.phrase), 0), float(cl["exact_phrase_boost"]))))
        if plan.full_text:
            tr = next(f for f in self.cfg.keyword_fields if f.name == "title_raw")
            should.append((Occur.Should, Q.boost_query(Q.term_query(self.schema, "title_raw", plan.full_text), tr.boost)))
        return Q.boolean_query(should)

    def text_recall(self, plan: TextQueryPlan) -> list[EngineHit]:
        if not plan.terms:
            return []
        query = self._compile(plan)
        window = max(plan.size, int(self.cfg.recall["window"]))
        res = self.searcher.search(query, window, count=False, weight_by_field="hot_weight")
        hits: list[EngineHit] = []
        for score, addr in res.hits:
            doc = self.searcher.doc(addr)
            vid = doc.get_first("video_id")
            pts = doc.get_first("publish_ts") or 0
            age_days = (plan.now_ts - pts) / 86400.0
            fresh = self.cfg.freshness_factor(age_days)
            hits.append(EngineHit(vid, float(score) * fresh, {"text_hot": float(score), "freshness": round(fresh, 4)}))
        hits.sort(key=lambda h: -h.score)
        return hits[: plan.size]

    def vector_recall(self, vector: np.ndarray, k: int) -> list[EngineHit]:
        if vector is None or not np.any(vector):
            return []
        k = min(k, len(self.vector_ids))
        scores, idx = self.faiss.search(np.asarray(vector, dtype=np.float32).reshape(1, -1), k)
        return [EngineHit(self.vector_ids[i], float(s), {"cosine": round(float(s), 4)}) for s, i in zip(scores[0], idx[0]) if i >= 0]

    def get_docs(self, video_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.docstore.get_many(video_ids)

    def health(self) -> dict[str, Any]:
        return {"engine": self.name, "reachable": True, "docs": int(self.searcher.num_docs), "index_version": self.index_version}

    def close(self) -> None:
        self.docstore.close()
