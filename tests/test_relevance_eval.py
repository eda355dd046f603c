"""Offline relevance evaluation: the AUC report against scikit-learn, pairwise accuracy by hand,
frequency bands, the report files, annotation exports, and the text / bm25 scorers on tiny
fixtures (an exact-match pair beats an unrelated pair)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from query_understanding import Entity, QueryToken, UnderstoodQuery
from relevance.evaluation import (LabelledPair, article_auc, evaluate_relevance, frequency_bands, load_labels,
                                  pairwise_accuracy, select_split, split_of, write_report)
from relevance.scorers import SCORERS, ScorerContext, build_scorer, register_scorer
from relevance.text_relevance import entity_scores, query_entities, text_features


def _q(text, entities=()):
    toks = text.split()
    ents = [Entity(t, typ, toks.index(t), toks.index(t) + 1) for t, typ in entities]
    return UnderstoodQuery(text, text, [QueryToken(t, 1.0, dict(entities).get(t)) for t in toks], ents)


DOCS = {
    "mv": {"video_id": "mv", "title": "周杰伦 晴天 MV", "_fields": {
        "title": ["周杰伦", "晴天", "mv"], "artists": ["周杰伦"], "songs": ["晴天"], "tags": ["周杰伦", "晴天"], "uploader": ["官方"],
        "description": [], "artist_kw": ["周杰伦"], "song_kw": ["晴天"]}},
    "cover": {"video_id": "cover", "title": "晴天 翻唱", "_fields": {
        "title": ["晴天", "翻唱"], "artists": ["小乐哥"], "songs": ["晴天"], "tags": ["翻唱"], "uploader": ["小乐哥"],
        "description": ["原唱", "周杰伦"], "artist_kw": ["小乐哥"], "song_kw": ["晴天"]}},
    "cat": {"video_id": "cat", "title": "猫咪 搞笑", "_fields": {
        "title": ["猫咪", "搞笑"], "artists": [], "songs": [], "tags": ["萌宠"], "uploader": ["喵"], "description": [],
        "artist_kw": [], "song_kw": []}},
}
QUERY = _q("周杰伦 晴天", [("周杰伦", "artist"), ("晴天", "song")])


def _ctx(**kw):
    queries = {"周杰伦 晴天": QUERY, "猫咪": _q("猫咪"), "晴天": _q("晴天", [("晴天", "song")])}
    return ScorerContext(understand=lambda t: queries[t], get_docs=lambda ids: {i: DOCS[i] for i in ids if i in DOCS}, **kw)


# ---------------------------------------------------------------- text features


def test_entity_match_per_aspect():
    ents = query_entities(QUERY)
    assert ents == {"artist": {"周杰伦"}, "song": {"晴天"}}
    assert entity_scores(ents, DOCS["mv"]["_fields"]) == (1.0, 0.0)
    # the cover: the song matches; the artist is another person (conflict) and 周杰伦 only
    # appears in the description (half credit)
    match, conflict = entity_scores(ents, DOCS["cover"]["_fields"])
    assert match == pytest.approx((0.5 + 1.0) / 2) and conflict == pytest.approx(0.5)
    # an artist name in the song field is not an artist match
    swapped = {"artist": {"晴天"}}
    assert entity_scores(swapped, DOCS["mv"]["_fields"]) == (0.5, 1.0)


def test_text_scorer_exact_match_beats_unrelated():
    scorer = build_scorer("text", _ctx())
    s = scorer.score_pairs([QUERY] * 3, [DOCS["mv"], DOCS["cover"], DOCS["cat"]])
    assert s[0] > s[1] > s[2]
    f = text_features(QUERY.terms, QUERY.weights, query_entities(QUERY), DOCS["mv"]["_fields"], 0.0)
    assert f["closeness"] == 1.0 and f["coverage"] == 1.0


def test_bm25_scorer_on_index(embedded_index):
    from search.documents import DocStore
    from search.indexer import current_bundle

    bundle = current_bundle(embedded_index)
    store = DocStore(bundle / "docstore.sqlite")
    try:
        docs = store.get_many(["t-qingtian-mv", "t-qingtian-cover"])
        other = next(v for v in store.iter_ids() if v not in docs)
        docs.update(store.get_many([other]))
        ctx = ScorerContext(bundle_dir=bundle)
        scorer = build_scorer("bm25", ctx)
        s = scorer.score_pairs([QUERY] * 2, [docs["t-qingtian-mv"], docs[other]])
        assert 0 < s[0] <= 1.0 and s[0] > s[1]
        # the same text scorer, now with BM25 from the index
        t = build_scorer("text", ctx).score_pairs([QUERY] * 2, [docs["t-qingtian-mv"], docs[other]])
        assert t[0] > t[1]
    finally:
        store.close()


# ---------------------------------------------------------------- metrics


def test_auc_report_equals_sklearn(tmp_path):
    rng = np.random.default_rng(3)
    pairs = []
    for qi in range(12):
        for vi, vid in enumerate(DOCS):
            pairs.append(LabelledPair(f"q{qi}", ["周杰伦 晴天", "猫咪", "晴天"][qi % 3], vid, int(rng.integers(0, 4)),
                                      ["artist_song", "mood"][qi % 2]))
    table = {(p.qid, p.video_id): float(rng.random()) for p in pairs}
    order = iter(table.values())

    class Fixed:
        name = "fixed"

        def score_pairs(self, queries, docs):
            return np.array([next(order) for _ in docs])

    register_scorer("test_fixed", lambda ctx: Fixed())
    try:
        rep = evaluate_relevance(pairs, ["test_fixed", "no_such_scorer"], _ctx(), progress=False)
    finally:
        SCORERS.pop("test_fixed", None)
    grades = np.array([p.grade for p in pairs])
    scores = np.array([table[(p.qid, p.video_id)] for p in pairs])
    m = grades != 1
    expected = roc_auc_score((grades[m] >= 2).astype(int), scores[m])
    res = rep.results[0]
    assert res.auc == pytest.approx(expected)
    for intent in ("artist_song", "mood"):
        mi = np.array([p.intent == intent for p in pairs]) & m
        assert res.by_intent[intent] == pytest.approx(roc_auc_score((grades[mi] >= 2).astype(int), scores[mi]))
    assert not rep.results[1].available and "unknown scorer" in rep.results[1].reason
    paths = write_report(rep, tmp_path / "out", "mvsearch eval relevance ...")
    j = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert j["scorers"][0]["auc"] == round(expected, 4)
    assert "not available" in paths["md"].read_text(encoding="utf-8")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_pairwise_accuracy_by_hand():
    # one query: grades 3, 2, 0 scored 0.9, 0.95, 0.1 → pairs (3>2 wrong), (3>0 right), (2>0 right) = 2/3
    # another query: grades 1, 0 with tied scores → 1/2
    acc, n = pairwise_accuracy(["a", "a", "a", "b", "b"], np.array([3, 2, 0, 1, 0]), np.array([0.9, 0.95, 0.1, 0.5, 0.5]))
    assert n == 4 and acc == pytest.approx((2 + 0.5) / 4)
    assert article_auc(np.array([1, 1]), np.array([0.1, 0.2])) is None


def test_frequency_bands_from_labels_and_logs(tmp_path):
    qids = ["a"] * 6 + ["b"] * 3 + ["c"]
    bands, src = frequency_bands(qids, ["x"] * 10, None)
    assert bands == {"a": "head", "b": "torso", "c": "tail"} and "labelled set" in src
    logs = tmp_path / "imp.jsonl"
    rows = [{"query": "周杰伦", "position": 1}] * 10 + [{"query": "晴天", "position": 1}] * 5 + [{"query": "晴天", "position": 2}] * 50
    logs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    bands, src = frequency_bands(["q1", "q2", "q3"], ["周杰伦", "晴天", "没搜过"], logs)
    assert bands == {"q1": "head", "q2": "torso", "q3": "tail"} and "search log" in src


def test_labels_from_annotation_export_and_split(tmp_path):
    from search.annotation.export import to_jsonl

    rows = [{"qid": f"q{i}", "query": "晴天", "video_id": "mv", "grade": i % 4, "annotators": 3, "method": "majority",
             "votes": {"3": 2}, "agreement": 0.67, "aspects": {"term_match": 1.0}, "batch": "b1", "stratum": "top"} for i in range(40)]
    p = tmp_path / "export.jsonl"
    p.write_text(to_jsonl(rows), encoding="utf-8")
    pairs = load_labels(p)
    assert len(pairs) == 40 and pairs[3].grade == 3
    fit, held = select_split(pairs, "fit"), select_split(pairs, "heldout")
    assert fit and held and len(fit) + len(held) == 40
    assert {x.qid for x in fit}.isdisjoint({x.qid for x in held})
    assert all(split_of(x.qid) == "heldout" for x in held)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": "q", "query": "x", "video_id": "v", "grade": 7}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="0-3"):
        load_labels(bad)
    bad.write_text('{"qid": "q", "video_id": "v", "grade": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="missing query"):
        load_labels(bad)


def test_eval_relevance_command(embedded_index, tmp_path):
    from search.cli import main

    labels = tmp_path / "qrels.jsonl"
    rows = [{"qid": "q1", "query": "周杰伦 晴天", "video_id": "t-qingtian-mv", "grade": 3, "intent": "artist_song"},
            {"qid": "q1", "query": "周杰伦 晴天", "video_id": "t-qingtian-cover", "grade": 2, "intent": "artist_song"},
            {"qid": "q1", "query": "周杰伦 晴天", "video_id": "no-such-video", "grade": 0}]
    from search.documents import DocStore
    from search.indexer import current_bundle

    store = DocStore(current_bundle(embedded_index) / "docstore.sqlite")
    others = [v for v in store.iter_ids() if not v.startswith("t-")][:3]
    store.close()
    rows += [{"qid": "q1", "query": "周杰伦 晴天", "video_id": v, "grade": 0, "intent": "artist_song"} for v in others]
    labels.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "rep"
    rc = main(["eval", "relevance", "--labels", str(labels), "--scorer", "text", "--scorer", "bm25", "--scorer", "click_graph_cos",
               "--index-dir", str(embedded_index), "--out", str(out), "--json"])
    assert rc == 0
    j = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert j["pairs"] == 5 and j["pairs_without_doc"] == 1
    by = {s["scorer"]: s for s in j["scorers"]}
    assert by["text"]["available"] and by["text"]["auc"] is not None
    assert not by["click_graph_cos"]["available"]
