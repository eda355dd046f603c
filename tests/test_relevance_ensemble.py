"""Relevance ensemble: fit on a toy labelled set, feature-name checks, the grade-0 rule and the
pipeline stage (loaded from config; a missing model file fails loudly and the pipeline degrades)."""
from __future__ import annotations

import numpy as np
import pytest

from query_understanding import Entity, QueryToken, UnderstoodQuery
from relevance.ensemble import (EnsembleFeatures, EnsembleModel, FeatureMismatch, demote_grade0, feature_names,
                                fit_ensemble)
from relevance.scorers import ScorerContext
from search.contracts import Candidate


def _q(text, entities=()):
    toks = text.split()
    ents = [Entity(t, typ, toks.index(t), toks.index(t) + 1) for t, typ in entities]
    return UnderstoodQuery(text, text, [QueryToken(t, 1.0, dict(entities).get(t)) for t in toks], ents)


def _doc(vid, title, artists=(), songs=()):
    t = title.split()
    return {"video_id": vid, "_fields": {"title": t, "artists": list(artists), "songs": list(songs), "tags": [], "uploader": [],
                                         "description": [], "artist_kw": list(artists), "song_kw": list(songs)}}


def _toy_set():
    """Per query: the exact video (3), a cover by someone else (2), an unrelated video (0)."""
    names = [("周杰伦", "晴天"), ("薛之谦", "演员"), ("梁静茹", "勇气"), ("陈奕迅", "十年"), ("林俊杰", "江南"), ("邓紫棋", "泡沫")]
    queries, docs, grades = [], [], []
    for i, (a, s) in enumerate(names):
        q = _q(f"{a} {s}", [(a, "artist"), (s, "song")])
        for d, g in ((_doc(f"{i}-mv", f"{a} {s} mv", [a], [s]), 3), (_doc(f"{i}-cover", f"{s} 翻唱", ["路人"], [s]), 2),
                     (_doc(f"{i}-x", f"猫咪 搞笑 {i}"), 0)):
            queries.append(q)
            docs.append(d)
            grades.append(g)
    return queries, docs, np.array(grades)


def test_fit_and_predict_exact_beats_unrelated(tmp_path):
    queries, docs, grades = _toy_set()
    feats = EnsembleFeatures(["text"], ScorerContext())
    X = feats.matrix(queries, docs)
    assert X.shape == (len(docs), len(feature_names(["text"])))
    model = EnsembleModel(["text"], feats.names, fit_ensemble(X, grades, "lr"), "lr")
    score, grade, proba = model.predict(X)
    assert np.all((score >= 0) & (score <= 1)) and np.allclose(proba.sum(axis=1), 1.0)
    assert score[0] > score[2] and grade[0] >= 2 and grade[2] == 0
    # unseen query: an exact pair still beats an unrelated one
    q = _q("张学友 吻别", [("张学友", "artist"), ("吻别", "song")])
    s2, _, _ = model.predict(feats.matrix([q, q], [_doc("n1", "张学友 吻别 live", ["张学友"], ["吻别"]), _doc("n2", "狗狗 日常")]))
    assert s2[0] > s2[1]
    # the file keeps the feature names
    p = model.save(tmp_path / "ens.joblib")
    m2 = EnsembleModel.load(p)
    assert m2.feature_names == feats.names
    assert np.allclose(m2.predict(X)[0], score)


def test_feature_mismatch_is_refused():
    queries, docs, grades = _toy_set()
    feats = EnsembleFeatures(["text"], ScorerContext())
    X = feats.matrix(queries, docs)
    model = EnsembleModel(["text"], feats.names, fit_ensemble(X, grades, "hgb"), "hgb")
    with pytest.raises(FeatureMismatch, match="expects"):
        model.predict(X[:, :-1])
    with pytest.raises(FeatureMismatch, match="retrain"):
        model.check_features(feature_names(["text", "click_graph_cos"]))


def test_demote_grade0_keeps_page_one_clean():
    cands = [Candidate("bad1", grade=0), Candidate("g1", grade=3), Candidate("bad2", grade=0)] + \
            [Candidate(f"g{i}", grade=1) for i in range(2, 12)]
    out = demote_grade0(cands, page_size=10)
    assert [c.video_id for c in out[:10]] == ["g1"] + [f"g{i}" for i in range(2, 11)]
    assert out[-2:] == [cands[0], cands[2]] and cands[0].explain["relevance"]["demoted"] and cands[2].explain["relevance"]["demoted"]
    # with fewer better results grade 0 only follows them
    few = [Candidate("bad", grade=0), Candidate("ok", grade=2)]
    assert [c.video_id for c in demote_grade0(few, 10)] == ["ok", "bad"]


def test_pipeline_stage_from_config(embedded_index, tmp_path):
    from search.documents import DocStore
    from search.indexer import current_bundle
    from search.pipeline import SearchPipeline, SearchRequest

    from conftest import pipeline_config

    bundle = current_bundle(embedded_index)
    store = DocStore(bundle / "docstore.sqlite")
    ids = list(store.iter_ids())
    docs = store.get_many(ids[:60] + ["t-qingtian-mv", "t-qingtian-cover"])
    store.close()
    q = _q("周杰伦 晴天", [("周杰伦", "artist"), ("晴天", "song")])
    pairs = [(docs["t-qingtian-mv"], 3), (docs["t-qingtian-cover"], 2)] + [(docs[v], 0) for v in ids[:60] if not v.startswith("t-")][:20]
    ctx = ScorerContext(bundle_dir=bundle)
    feats = EnsembleFeatures(["text"], ctx)
    X = feats.matrix([q] * len(pairs), [d for d, _ in pairs])
    y = np.array([g for _, g in pairs])
    path = EnsembleModel(["text"], feats.names, fit_ensemble(X, y, "lr"), "lr").save(tmp_path / "ens.joblib")

    cfg = pipeline_config(embedded_index, relevance={"impl": "ensemble", "params": {"model": str(path)}})
    pipe = SearchPipeline(cfg)
    try:
        res = pipe.search(SearchRequest("周杰伦 晴天", size=10))
        assert not res.warnings and res.hits
        top = res.hits[0]
        assert top.grade is not None and 0 <= top.relevance_score <= 1
        assert top.explain["relevance"]["scorer"] == "ensemble" and "closeness" in top.explain["relevance"]
        assert set(top.relevance) >= {"bm25", "coverage", "title_coverage", "entity_match", "closeness", "field_coverage", "text"}
    finally:
        pipe.close()

    missing = pipeline_config(embedded_index, relevance={"impl": "ensemble", "params": {"model": str(tmp_path / "nope.joblib")}})
    pipe = SearchPipeline(missing)  # starts, but every request says why relevance is missing
    try:
        res = pipe.search(SearchRequest("周杰伦 晴天", size=10))
        assert res.hits and any("relevance stage 'ensemble' failed" in w and "train-ensemble" in w for w in res.warnings)
    finally:
        pipe.close()


def test_rewrite_query_counts_alias_as_name_match():
    from relevance.ensemble import rewrite_query
    from relevance.text_relevance import entity_scores, query_entities

    original = _q("liangjingru")
    rq = rewrite_query(["梁静茹"], original)
    assert rq.terms == ["梁静茹"] and rq.normalized == "梁静茹"
    ents = query_entities(rq)
    assert entity_scores(ents, _doc("v", "梁静茹 勇气", ["梁静茹"], ["勇气"])["_fields"])[0] == 1.0
    assert entity_scores(ents, _doc("w", "猫咪 搞笑")["_fields"])[0] == 0.0


def test_numpy_prediction_equals_sklearn():
    import numpy as np

    from relevance.ensemble import EnsembleModel, fit_ensemble

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) * [1.0, 5.0, 0.1] + [0.0, 2.0, -1.0]
    grades = np.clip((X[:, 0] + X[:, 1] / 5 + rng.normal(scale=0.3, size=200)).round().astype(int) + 1, 0, 3)
    est = fit_ensemble(X, grades, kind="lr")
    model = EnsembleModel(["a", "b", "c"], ["a", "b", "c"], est, "lr")
    np.testing.assert_allclose(model._lr_proba(X), est.predict_proba(X), atol=1e-12)
