"""The same index on a real Elasticsearch 8.19 (started by the harness): same recall
semantics as the embedded engine, knn vectors, alias swap with zero downtime, clear errors
when ES is down."""
import threading
import time

import pytest

from search.config import load_config
from search.engines.base import EngineUnavailable
from search.indexer import build_index
from search.pipeline import SearchPipeline, SearchRequest
from tests.conftest import REFERENCE_TIME

pytestmark = pytest.mark.es

UNAMBIGUOUS = ["周杰伦 晴天", "hebe", "G.E.M. 光年之外", "AC/DC", "林俊杰 江南", "陈奕迅 十年", "刘大壮 会不会", "田馥甄 小幸运"]


@pytest.fixture(scope="module")
def es_index(es_url, catalog_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("es_bundle")
    res = build_index(catalog_path, d, engine="elasticsearch", es_url=es_url, es_index="videos_test", show_progress=False)
    return d, res


def _pipe(index_dir, es_url=None, kind="elasticsearch", **engine):
    cfg = load_config(None, {"engine": {"kind": kind, "index_dir": str(index_dir), "es_url": es_url or "", "es_index": "videos_test", **engine},
                             "search": {"reference_time": REFERENCE_TIME}})
    return SearchPipeline(cfg)


def test_es_and_embedded_agree_on_unambiguous_queries(es_index, es_url, pipeline):
    d, _ = es_index
    es = _pipe(d, es_url)
    try:
        for q in UNAMBIGUOUS:
            a = [c.video_id for c in es.search(SearchRequest(q, size=3)).hits]
            b = [c.video_id for c in pipeline.search(SearchRequest(q, size=3)).hits]
            assert a[0] == b[0], (q, a, b)
            assert set(a[:2]) == set(b[:2]), (q, a, b)
    finally:
        es.close()


def test_text_recall_scores_match_across_engines(es_index, es_url, pipeline):
    """Same plan → same candidates: the top-20 text recall sets overlap almost fully."""
    from search.engines.base import make_plan

    d, _ = es_index
    es = _pipe(d, es_url)
    try:
        for q in ("周杰伦", "晴天 翻唱", "田馥甄"):
            uq = pipeline.understand(q)
            plan = make_plan(uq.terms, uq.weights, uq.normalized, 20, es.reference_ts, es.recall.cfg)
            a = {h.video_id for h in es.engine.text_recall(plan)}
            b = {h.video_id for h in pipeline.engine.text_recall(plan)}
            assert len(a) == len(b) and len(a & b) >= 0.8 * len(a), (q, len(a), len(a & b))
    finally:
        es.close()


def test_vector_recall_on_dense_vector_knn(es_index, es_url, pipeline):
    d, _ = es_index
    es = _pipe(d, es_url)
    try:
        vec = es.embedder.encode_tokens(["周杰伦", "晴天"])
        a = [h.video_id for h in es.engine.vector_recall(vec, 10)]
        b = [h.video_id for h in pipeline.engine.vector_recall(pipeline.embedder.encode_tokens(["周杰伦", "晴天"]), 10)]
        assert len(set(a[:5]) & set(b[:5])) >= 3
        scores = [h.score for h in es.engine.vector_recall(vec, 5)]
        assert all(-1.0001 <= s <= 1.0001 for s in scores)
    finally:
        es.close()


def test_reindex_swaps_alias_without_downtime(es_index, es_url, catalog_path):
    d, first = es_index
    es = _pipe(d, es_url)
    errors: list[Exception] = []
    answered = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                answered.append(len(es.engine.text_recall(__import__("search.engines.base", fromlist=["make_plan"]).make_plan(
                    ["周杰伦"], None, "周杰伦", 10, time.time(), es.recall.cfg))))
            except Exception as e:  # pragma: no cover - the assertion below reports it
                errors.append(e)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        second = build_index(catalog_path, d, engine="elasticsearch", es_url=es_url, es_index="videos_test", show_progress=False)
    finally:
        stop.set()
        t.join()
        es.close()
    assert not errors and answered and min(answered) > 0
    assert second.extra["es_index"] != first.extra["es_index"]
    assert first.extra["es_index"] in second.extra["previous"]
    from search.engines.elastic import es_client

    aliases = es_client(es_url).indices.get_alias(name="videos_test")
    assert list(aliases) == [second.extra["es_index"]]


def test_unreachable_es_is_a_clear_error_or_falls_back(es_index, embedded_index):
    d, _ = es_index
    with pytest.raises(EngineUnavailable, match="unreachable"):
        _pipe(d, "http://127.0.0.1:9")
    p = _pipe(d, "http://127.0.0.1:9", fallback_index_dir=str(embedded_index))
    try:
        res = p.search(SearchRequest("周杰伦 晴天"))
        assert res.hits and any("unreachable" in w for w in res.warnings)
    finally:
        p.close()


def test_three_node_cluster_keeps_answering_when_a_node_dies(catalog_path, tmp_path):
    """Replicated index on 3 nodes; kill one node; searches through the client still answer."""
    import json

    from index_config import DEFAULT_PATH
    from search import es_local

    raw = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    raw["elasticsearch"]["number_of_replicas"] = 1
    raw["elasticsearch"]["number_of_shards"] = 2
    icfg = tmp_path / "index.json"
    icfg.write_text(json.dumps(raw), encoding="utf-8")
    cluster = es_local.start_cluster(nodes=3, http_port=19300, transport_port=19400, heap="384m", timeout=300)
    try:
        url = ",".join(cluster.urls)
        build_index(catalog_path, tmp_path / "bundle", engine="elasticsearch", es_url=url, es_index="videos_ha",
                    index_config=icfg, show_progress=False)
        from search.engines.elastic import es_client

        es_client(url).cluster.health(wait_for_status="green", timeout="60s")
        cfg = load_config(None, {"engine": {"kind": "elasticsearch", "index_dir": str(tmp_path / "bundle"), "es_url": url,
                                            "es_index": "videos_ha"}, "search": {"reference_time": REFERENCE_TIME}})
        p = SearchPipeline(cfg)
        before = [c.video_id for c in p.search(SearchRequest("周杰伦 晴天", size=5)).hits]
        cluster.kill_node(0)
        after = [c.video_id for c in p.search(SearchRequest("周杰伦 晴天", size=5)).hits]
        assert after and after[0] == before[0]
        p.close()
    finally:
        cluster.stop()
