"""Elasticsearch engine (8.x): the same index definition and recall semantics as the
embedded engine, compiled to the ES query DSL (never a query-string parser).

Uses only what the minimal server distribution has: the built-in `whitespace` analyzer over
text we already normalized and tokenized, `keyword` fields, BM25, `dis_max`/`bool` with
field boosts, `match_phrase` with slop, `function_score` (field_value_factor + gauss decay),
`dense_vector` + `knn`, and aliases for zero-downtime swaps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np

from index_config import IndexConfig

from ..documents import DocStore
from .base import EngineHit, EngineUnavailable, TextQueryPlan


def es_client(url: str, timeout: float = 10.0):
    """`url` may list several nodes, comma-separated: the client fails over between them."""
    from elasticsearch import Elasticsearch

    hosts = [u.strip() for u in url.split(",") if u.strip()]
    return Elasticsearch(hosts, request_timeout=timeout, retry_on_timeout=True, max_retries=3)


def index_body(cfg: IndexConfig) -> dict[str, Any]:
    props: dict[str, Any] = {"video_id": {"type": "keyword"}}
    for f in cfg.text_fields:
        props[f.name] = {"type": "text", "analyzer": "whitespace", "similarity": "mv_bm25"}
    for f in cfg.keyword_fields:
        props[f.name] = {"type": "keyword"}
    for name in ("category", "language", "uploader_raw"):
        props[name] = {"type": "keyword"}
    for name in ("play_count", "like_count", "comment_count", "share_count", "resolution"):
        props[name] = {"type": "long"}
    props["duration_s"] = {"type": "float"}
    props["hot_weight"] = {"type": "double"}
    props["publish_time"] = {"type": "date", "format": "epoch_second"}
    v = cfg.vectors
    props[v["field"]] = {"type": "dense_vector", "dims": int(v["dims"]), "index": True, "similarity": v["similarity"]}
    return {
        "settings": {
            "number_of_shards": int(cfg.elasticsearch["number_of_shards"]),
            "number_of_replicas": int(cfg.elasticsearch["number_of_replicas"]),
            "similarity": {"mv_bm25": {"type": "BM25", "k1": cfg.bm25["k1"], "b": cfg.bm25["b"]}},
        },
        "mappings": {"dynamic": "strict", "properties": props},
    }


def es_document(doc: dict[str, Any], vector: np.ndarray, cfg: IndexConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"video_id": doc["video_id"]}
    for f in cfg.text_fields:
        out[f.name] = " ".join(doc[f.name])
    for f in cfg.keyword_fields:
        out[f.name] = doc[f.name]
    for name in ("category", "language", "uploader_raw", "play_count", "like_count", "comment_count", "share_count",
                 "resolution", "duration_s", "hot_weight"):
        out[name] = doc[name]
    out["publish_time"] = int(doc["publish_ts"])
    if np.any(vector):  # ES rejects all-zero vectors for cosine; such docs simply have none
        out[cfg.vectors["field"]] = [round(float(x), 6) for x in vector]
    return out


def build_es_index(url: str, alias: str, version_name: str, docs: Iterable[tuple[dict[str, Any], np.ndarray]],
                   cfg: IndexConfig, keep_old: int = 1) -> dict[str, Any]:
    """Create `{alias}-{version_name}`, bulk-load, refresh, then swap the alias in one
    atomic `_aliases` call, so searches never see a half-built index."""
    from elasticsearch import helpers

    es = es_client(url, timeout=120)
    name = f"{alias}-{version_name}".lower()
    if es.indices.exists(index=name):
        es.indices.delete(index=name)
    body = index_body(cfg)
    es.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
    es.indices.put_settings(index=name, settings={"refresh_interval": "-1"})
    actions = ({"_index": name, "_id": d["video_id"], "_source": es_document(d, v, cfg)} for d, v in docs)
    ok, errors = 0, []
    for success, info in helpers.streaming_bulk(es, actions, chunk_size=1000, raise_on_error=False, max_retries=3):
        if success:
            ok += 1
        else:
            errors.append(info)
    if errors:
        es.indices.delete(index=name)
        raise RuntimeError(f"bulk indexing failed for {len(errors)} documents, first: {errors[0]}; new index dropped, alias unchanged")
    es.indices.put_settings(index=name, settings={"refresh_interval": "1s"})
    es.indices.refresh(index=name)
    es.indices.forcemerge(index=name, max_num_segments=1)
    actions_list: list[dict[str, Any]] = []
    old: list[str] = []
    if es.indices.exists_alias(name=alias):
        old = sorted(es.indices.get_alias(name=alias).keys())
        actions_list += [{"remove": {"index": o, "alias": alias}} for o in old]
    elif es.indices.exists(index=alias):
        raise RuntimeError(f"{alias!r} is a concrete index, not an alias; delete it or choose another --index name")
    actions_list.append({"add": {"index": name, "alias": alias}})
    es.indices.update_aliases(actions=actions_list)
    # Keep the previous version for rollback; drop older ones.
    prefix = f"{alias}-".lower()
    all_versions = sorted(i for i in es.indices.get(index=f"{prefix}*").keys() if i != name)
    for stale in all_versions[: max(0, len(all_versions) - keep_old)]:
        es.indices.delete(index=stale)
    return {"es_index": name, "docs": ok, "previous": old}


class ElasticsearchEngine:
    name = "elasticsearch"

    def __init__(self, bundle_dir: str | Path, cfg: IndexConfig, manifest: dict[str, Any], url: str | None = None,
                 alias: str | None = None):
        self.cfg = cfg
        self.manifest = manifest
        self.url = url or manifest["es_url"]
        self.alias = alias or manifest["es_alias"]
        self.es = es_client(self.url)
        self.docstore = DocStore(Path(bundle_dir) / "docstore.sqlite")

    @property
    def index_version(self) -> str:
        return self.manifest["version_name"]

    def compile(self, plan: TextQueryPlan) -> dict[str, Any]:
        rc = self.cfg.recall
        should: list[dict[str, Any]] = []
        must: list[dict[str, Any]] = []
        for i, (term, w) in enumerate(zip(plan.terms, plan.weights)):
            per_field = [{"term": {f.name: {"value": term, "boost": f.boost}}} for f in self.cfg.text_fields]
            per_field += [{"term": {f.name: {"value": term, "boost": f.boost}}} for f in self.cfg.keyword_fields if f.name != "title_raw"]
            clause = {"dis_max": {"queries": per_field, "tie_breaker": float(rc["tie_breaker"]), "boost": w}}
            (must if plan.is_required(i) else should).append(clause)
        cl = rc["closeness"]
        if len(plan.phrase) >= 2:
            phrase = " ".join(plan.phrase)
            should.append({"match_phrase": {cl["field"]: {"query": phrase, "slop": int(cl["slop"]), "boost": float(cl["boost"])}}})
            should.append({"match_phrase": {cl["field"]: {"query": phrase, "slop": 0, "boost": float(cl["exact_phrase_boost"])}}})
        if plan.full_text:
            tr = next(f for f in self.cfg.keyword_fields if f.name == "title_raw")
            should.append({"term": {"title_raw": {"value": plan.full_text, "boost": tr.boost}}})
        text = {"bool": {"must": must, "should": should, "minimum_should_match": plan.minimum_should_match}}
        hot = {"function_score": {"query": text, "functions": [
            {"field_value_factor": {"field": "hot_weight", "modifier": "ln2p", "missing": 0}}],
            "boost_mode": "multiply"}}
        fr = rc["freshness"]
        origin = str(int(plan.now_ts))  # the field's format is epoch_second
        return {"function_score": {"query": hot, "functions": [
            {"weight": 1.0 - float(fr["weight"])},
            {"gauss": {"publish_time": {"origin": origin, "scale": f"{fr['scale_days']}d", "offset": f"{fr['offset_days']}d",
                                        "decay": float(fr["decay"])}}, "weight": float(fr["weight"])}],
            "score_mode": "sum", "boost_mode": "multiply"}}

    def _search(self, **kw: Any) -> Any:
        from elasticsearch import ConnectionError as EsConnectionError

        try:
            return self.es.search(index=self.alias, **kw)
        except EsConnectionError as e:
            raise EngineUnavailable(f"Elasticsearch at {self.url} is unreachable: {e}") from e

    def text_recall(self, plan: TextQueryPlan) -> list[EngineHit]:
        if not plan.terms:
            return []
        res = self._search(query=self.compile(plan), size=plan.size, source=["video_id"], track_total_hits=False)
        return [EngineHit(h["_id"], float(h["_score"])) for h in res["hits"]["hits"]]

    def vector_recall(self, vector: np.ndarray, k: int) -> list[EngineHit]:
        if vector is None or not np.any(vector):
            return []
        knn = {"field": self.cfg.vectors["field"], "query_vector": [float(x) for x in vector], "k": k,
               "num_candidates": max(100, 2 * k)}
        res = self._search(knn=knn, size=k, source=["video_id"])
        # ES reports cosine as (1+cos)/2; undo it so both engines return cosine.
        return [EngineHit(h["_id"], 2.0 * float(h["_score"]) - 1.0) for h in res["hits"]["hits"]]

    def get_docs(self, video_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.docstore.get_many(video_ids)

    def health(self) -> dict[str, Any]:
        try:
            es = self.es.options(request_timeout=3)
            h = es.cluster.health()
            cnt = es.count(index=self.alias)["count"]
            return {"engine": self.name, "reachable": True, "cluster_status": h["status"], "docs": cnt,
                    "index_version": self.index_version, "alias": self.alias}
        except Exception as e:  # health must answer, never raise
            return {"engine": self.name, "reachable": False, "error": str(e)[:300], "index_version": self.index_version}

    def close(self) -> None:
        self.docstore.close()
        self.es.close()
