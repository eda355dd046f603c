import json

from query_understanding.intent import IntentClassifier, evaluate_intents, rule_label, training_set
from search.pipeline import SearchPipeline, SearchRequest
from tests.conftest import pipeline_config


def test_rules_read_entities_versions_and_clicks(pipeline):
    u = pipeline.understand
    assert rule_label(u("周杰伦 晴天"), []) == "artist_song"
    assert rule_label(u("晴天 翻唱"), []) == "version"
    assert rule_label(u("周杰伦"), []) == "artist"
    mixes = [{"tags": ["运动", "歌单"], "songs": [], "uploader": "x"}] * 3
    assert rule_label(u("一起跑起来"), mixes) == "mood"            # clicks say: descriptive
    lyric_clicks = [{"tags": [], "songs": ["晴天"], "uploader": "a"}, {"tags": [], "songs": ["晴天"], "uploader": "b"}]
    assert rule_label(u("故事的小黄花"), lyric_clicks) == "lyric"   # a song the query does not name


def test_train_on_logs_predict_and_serve(pipeline, embedded_index, tmp_path):
    # A tiny log: requests with clicks, in the SPEC impression schema.
    rows = []
    queries = {"周杰伦 晴天": "t-qingtian-mv", "田馥甄 小幸运": "t-hebe-1", "林俊杰 江南": "t-jjlin", "陈奕迅 十年": "t-eason",
               "晴天 翻唱": "t-qingtian-cover", "会不会 翻唱": "t-hbh-1", "江南 live": "t-jjlin", "小幸运 现场": "t-hebe-1",
               "周杰伦": "t-qingtian-mv", "田馥甄": "t-hebe-2", "林俊杰": "t-jjlin", "陈奕迅": "t-eason"}
    for i, (q, vid) in enumerate(queries.items()):
        for rep in range(3):
            rows.append({"request_id": f"r{i}-{rep}", "ts": i, "user_id": "u", "query": q, "video_id": vid, "position": 1,
                         "clicked": True, "play_time_s": 60, "liked": False, "shared": False, "followed": False, "split": "train"})
    rows.append({**rows[0], "request_id": "test-1", "split": "test"})  # must not be learned from
    log = tmp_path / "imp.jsonl"
    log.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    texts, labels = training_set(log, pipeline.understand, pipeline.engine.get_docs)
    assert len(texts) == len(queries) and set(labels) == {"artist_song", "version", "artist"}
    clf = IntentClassifier.train(texts, labels)
    model = tmp_path / "intent.joblib"
    clf.save(model)
    p = SearchPipeline(pipeline_config(embedded_index, understanding={"params": {"intent_model": str(model)}}))
    try:
        res = p.search(SearchRequest("邓紫棋 光年之外"))
        assert res.query.intents and max(res.query.intents, key=res.query.intents.get) == "artist_song"
        assert "intent" in res.stages["understanding"]["steps"] and p.health()["models_loaded"]["intent_model"]
    finally:
        p.close()
    rep = evaluate_intents(pipeline.understand, clf, [{"query": "五月天 倔强", "kind": "artist_song"}, {"query": "五月天", "kind": "artist"}])
    assert rep["queries"] == 2 and rep["classifier_accuracy"] is not None


def test_fast_predict_equals_sklearn():
    import numpy as np

    texts = ["周杰伦 晴天 || artist song", "晴天 翻唱 || song version", "周杰伦 || artist", "适合跑步的歌 || mood word",
             "故事的小黄花 || lyric", "田馥甄 小幸运 || artist song", "小幸运 live || song version", "田馥甄 || artist"] * 3
    labels = ["artist_song", "version", "artist", "mood", "lyric", "artist_song", "version", "artist"] * 3
    clf = IntentClassifier.train(texts, labels)
    for t in texts[:8] + ["没见过的 查询 || word word", " || word"]:
        np.testing.assert_allclose(clf.predict_proba_one(t), clf.model.predict_proba([t])[0], atol=1e-12)
