from query_understanding.term_weights import ENTITY_FLOOR, TermWeighter, click_factors
from search.engines.base import make_plan
from search.pipeline import SearchRequest


def test_idf_type_and_floor():
    docs = [["周杰伦", "晴天", "的", "mv"]] * 50 + [["林俊杰", "江南", "的"]] * 50 + [["冷门", "的"]]
    w = TermWeighter.fit(docs)
    assert w.weight("冷门", None) > w.weight("晴天", None) > w.weight("的", None)
    assert w.weight("周杰伦", "artist") >= ENTITY_FLOOR > w.weight("周杰伦", None)
    assert w.weight("mv", None) < w.weight("晴天", None)
    assert w.weight("从没见过", None) > 0.5  # unseen words are rare, hence important


def test_click_factors_reward_terms_clicked_results_contain(tmp_path):
    import json

    rows = []
    for i in range(200):
        vid = "a" if i % 2 else "b"           # a's title has 翻唱, b's does not
        rows.append({"query": "晴天 翻唱", "video_id": vid, "clicked": vid == "a" and i % 4 == 1})
    p = tmp_path / "imp.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    cf = click_factors(p, str.split, lambda v: {"晴天", "翻唱"} if v == "a" else {"晴天"})
    assert cf["翻唱"] > 1.0


def test_required_terms_must_match_on_the_engine(embedded_index):
    from search.pipeline import SearchPipeline
    from tests.conftest import pipeline_config

    pipeline = SearchPipeline(pipeline_config(embedded_index, understanding={"params": {"require_entities": True}}))
    q = pipeline.understand("周杰伦 晴天")
    assert q.required == [True, True]
    plan = make_plan(q.terms, q.weights, q.normalized, 50, pipeline.reference_ts, pipeline.recall.cfg, q.required)
    hits = pipeline.engine.text_recall(plan)
    docs = pipeline.engine.get_docs([h.video_id for h in hits])
    for d in docs.values():
        toks = {t for f in ("title", "artists", "songs", "tags", "uploader", "description") for t in d["_fields"][f]}
        toks |= set(d["_fields"]["artist_kw"]) | set(d["_fields"]["song_kw"])
        assert {"周杰伦", "晴天"} <= toks
    assert not any(SearchPipeline(pipeline_config(embedded_index)).understand("周杰伦 晴天").required)  # off by default


def test_single_characters_and_fillers_are_optional(pipeline):
    q = pipeline.understand("适合跑步的歌")
    req = dict(zip(q.terms, q.required))
    assert not req.get("的") and not req.get("歌", False)
    res = pipeline.search(SearchRequest("适合跑步的歌"))
    assert res.hits
