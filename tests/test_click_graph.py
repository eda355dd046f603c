"""Click-graph model: propagation against a hand-computed 3-node graph, scoring on a tiny log,
n-gram vectors for unseen queries, the versioned file and the synonym export."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from query_understanding import QueryToken, UnderstoodQuery
from relevance.click_graph import ClickGraphConfig, ClickGraphModel, propagate, synonym_candidates, train_click_graph


def test_propagation_three_nodes_by_hand():
    # One query q clicked on v1 (smoothed CTR 0.8) and v2 (0.2); vocabulary [a, b, c];
    # v1's title is "a b", v2's title is "c".
    C = sp.csr_matrix(np.array([[0.8, 0.2]]))
    D0 = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    it, Q, D = next(iter(propagate(C, D0, iterations=1, top_words=20)))
    assert it == 1
    # by hand: v1 = (1/√2, 1/√2, 0), v2 = (0, 0, 1)
    # q = 0.8·v1 + 0.2·v2 = (0.565685, 0.565685, 0.2); |q| = √(0.32 + 0.32 + 0.04) = √0.68 = 0.824621
    # q/|q| = (0.685994, 0.685994, 0.242536)
    expected_q = [0.685994, 0.685994, 0.242536]
    assert Q.toarray()[0] == pytest.approx(expected_q, abs=1e-6)
    # each video has only q as neighbour, so after normalization both equal q
    assert D.toarray()[0] == pytest.approx(expected_q, abs=1e-6)
    assert D.toarray()[1] == pytest.approx(expected_q, abs=1e-6)


def test_propagation_truncates_then_normalizes():
    C = sp.csr_matrix(np.array([[0.8, 0.2]]))
    D0 = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    _, Q, _ = next(iter(propagate(C, D0, iterations=1, top_words=2)))
    # q before truncation (0.565685, 0.565685, 0.2): the top 2 words are a, b → (1/√2, 1/√2, 0)
    assert Q.toarray()[0] == pytest.approx([0.707107, 0.707107, 0.0], abs=1e-6)


# ---------------------------------------------------------------- tiny log

DOCS = {
    "v1": {"video_id": "v1", "_fields": {"title": ["周杰伦", "晴天", "mv"]}},
    "v2": {"video_id": "v2", "_fields": {"title": ["晴天", "live"]}},
    "v3": {"video_id": "v3", "_fields": {"title": ["薛之谦", "演员", "mv"]}},
    "v4": {"video_id": "v4", "_fields": {"title": ["猫咪", "搞笑"]}},
}


def _impressions(path):
    rows = []
    def imp(q, v, clicked, n=1, split="train"):
        for _ in range(n):
            rows.append({"query": q, "video_id": v, "clicked": clicked, "position": 1, "split": split})
    imp("周杰伦 晴天", "v1", True, 8); imp("周杰伦 晴天", "v2", True, 3); imp("周杰伦 晴天", "v4", False, 10)
    imp("jay 晴天", "v1", True, 5)
    imp("薛之谦", "v3", True, 6); imp("薛之谦", "v4", False, 4)
    imp("猫", "v4", True, 5)
    imp("周杰伦 晴天", "v3", True, 50, split="test")  # not the train split: must not count
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _q(text):
    toks = text.split()
    return UnderstoodQuery(text, text, [QueryToken(t) for t in toks], [])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    logs = _impressions(tmp_path_factory.mktemp("cg") / "imp.jsonl")
    get_docs = lambda ids: {i: DOCS[i] for i in ids if i in DOCS}  # noqa: E731
    model, history = train_click_graph(logs, str.split, get_docs, None, ClickGraphConfig(iterations=3), progress=False)
    return model, history


def test_train_split_only_and_exact_match_beats_unrelated(tiny_model):
    model, history = tiny_model
    assert [h["iteration"] for h in history] == [1, 2, 3]
    assert model.meta["queries"] == 4  # jay 晴天, 周杰伦 晴天, 猫, 薛之谦
    q = _q("周杰伦 晴天")
    cos, kl = model.score_pairs([q, q], [DOCS["v1"], DOCS["v4"]])
    assert cos[0] > cos[1] and kl[0] > kl[1]
    assert 0 < kl[0] <= 1
    # the test-split clicks on v3 must not tie v3 to the query
    cos3, _ = model.score_pairs([q], [DOCS["v3"]])
    assert cos3[0] < cos[0]
    # the fast per-query path gives the same numbers as the row-aligned sparse one
    q2 = _q("薛之谦")
    qs, ds = [q, q2, q, q2], [DOCS["v1"], DOCS["v3"], DOCS["v4"], DOCS["v1"]]
    fast = model.score_pairs(qs, ds)
    qv = sp.vstack([model.query_vectors([x])[0] for x in qs]).tocsr()
    dv = model.video_vectors([d["video_id"] for d in ds], [d["_fields"]["title"] for d in ds])
    slow = model.score(qv, dv)
    assert fast[0] == pytest.approx(slow[0]) and fast[1] == pytest.approx(slow[1])


def test_unseen_query_gets_an_ngram_vector(tiny_model):
    model, _ = tiny_model
    q = _q("晴天 周杰伦 官方")  # never searched; its words are components
    assert q.normalized not in model.query_index
    cos, kl = model.score_pairs([q, q], [DOCS["v1"], DOCS["v3"]])
    assert cos[0] > 0 and cos[0] > cos[1] and kl[0] > kl[1]
    # a video indexed after training gets a vector from its title
    new_doc = {"video_id": "v9", "_fields": {"title": ["晴天", "钢琴"]}}
    c9, _ = model.score_pairs([_q("周杰伦 晴天")], [new_doc])
    assert c9[0] > 0


def test_save_load_roundtrip_and_version_check(tiny_model, tmp_path):
    model, _ = tiny_model
    p = model.save(tmp_path / "cg.npz")
    m2 = ClickGraphModel.load(p)
    q = _q("薛之谦")
    assert m2.score_pairs([q], [DOCS["v3"]])[0][0] == pytest.approx(model.score_pairs([q], [DOCS["v3"]])[0][0])
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array(json.dumps({"kind": "something_else", "format_version": 99})))
    with pytest.raises(ValueError, match="not a click-graph model"):
        ClickGraphModel.load(bad)
    with pytest.raises(FileNotFoundError):
        ClickGraphModel.load(tmp_path / "missing.npz")


def test_kl_similarity_by_hand():
    # query distribution (1/2, 1/2) over words 0,1; video (1, 0); background (0.25, 0.25, 0.5), λ = 0.2
    model = ClickGraphModel(["a", "b", "c"], {}, {}, sp.csr_matrix((0, 3)), sp.csr_matrix((0, 3)), {}, np.zeros(0),
                            sp.csr_matrix((0, 3)), sp.csr_matrix((0, 3)), np.array([0.25, 0.25, 0.5]), {}, 0.2)
    q = sp.csr_matrix(np.array([[1.0, 1.0, 0.0]]) / math.sqrt(2))
    d = sp.csr_matrix(np.array([[1.0, 0.0, 0.0]]))
    cos, kl = model.score(q, d)
    assert cos[0] == pytest.approx(1 / math.sqrt(2))
    p_a = 0.8 * 1.0 + 0.2 * 0.25   # 0.85
    p_b = 0.8 * 0.0 + 0.2 * 0.25   # 0.05
    expected = math.exp(-(0.5 * math.log(0.5 / p_a) + 0.5 * math.log(0.5 / p_b)))
    assert kl[0] == pytest.approx(expected)


def test_synonym_candidates(tiny_model):
    model, _ = tiny_model
    rows = synonym_candidates(model, top=50, per_word=5, min_weight=0.0, min_queries=1, stop_top=0)
    pairs = {(a, b) for a, b, _, _ in rows}
    # "jay" was only ever clicked on 周杰伦's 晴天 MV: its word bag holds 周杰伦
    assert ("jay", "周杰伦") in pairs
    assert all(a != b for a, b, _, _ in rows)
    ranks = [w * math.log1p(n) for _, _, w, n in rows]
    assert ranks == sorted(ranks, reverse=True)
    # words of a single query are not offered by default
    assert all(n >= 2 for _, _, _, n in synonym_candidates(model, min_weight=0.0, stop_top=0))


def test_click_graph_synonyms_feed_rewrite_candidates(tiny_model, tmp_path):
    from search.expansion.rewrites import gather_candidates

    model, _ = tiny_model
    path = model.save(tmp_path / "cg.npz")
    params = {"min_weight": 0.0, "min_queries": 1, "stop_top": 0}
    cands = gather_candidates(None, None, None, click_graph=path, log=lambda *_: None, click_graph_params=params)
    mined = {(c.query, c.rewrite) for c in cands.values() if "click_graph" in c.sources}
    assert ("jay", "周杰伦") in mined
    with pytest.raises(FileNotFoundError):
        gather_candidates(None, None, None, click_graph=tmp_path / "missing.npz", log=lambda *_: None)
