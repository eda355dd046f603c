"""Agreement statistics against known values, and the qrels export format."""
from __future__ import annotations

import json
import math

import pytest

from search.annotation.export import build_qrels, queries_of, to_jsonl, write_atomic
from search.annotation.quality import batch_quality, cohen, disagreements, fleiss, majority, percent_agreement
from search.annotation.store import AnnotationStore, PairSpec
from search.evaluation import load_judgements


def test_cohen_kappa_textbook_example():
    # Wikipedia "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 → p_o 0.7, p_e 0.5, κ 0.4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert math.isclose(cohen(a, b), 0.4, abs_tol=1e-4)
    assert cohen(a, a) == 1.0
    assert cohen([1, 1, 1], [1, 1, 1]) is None  # one category only: undefined
    assert cohen([1], [0]) is None
    # quadratic weights: adjacent grades count as partial agreement
    assert cohen([3, 2, 1, 0], [3, 2, 1, 0], weights="quadratic") == 1.0
    assert cohen([3, 2, 1, 0], [2, 3, 0, 1], weights="quadratic") > cohen([3, 2, 1, 0], [2, 3, 0, 1])


def test_fleiss_kappa_textbook_example():
    # Wikipedia "Fleiss' kappa": 10 subjects, 14 raters, 5 categories → P̄ = 0.378, P̄e = 0.213, κ = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[c for c, n in enumerate(row) for _ in range(n)] for row in table]
    k, n = fleiss(ratings, [0, 1, 2, 3, 4])
    assert n == 10 and math.isclose(k, 0.2099, abs_tol=5e-4)
    assert math.isclose(percent_agreement(ratings), 0.378, abs_tol=5e-4)


def test_fleiss_by_hand_and_edge_cases():
    # 4 items × 3 raters, 2 categories: P_i = 1, 1/3, 1, 1/3 → P̄ = 2/3; p = (7/12, 5/12) → P̄e = 74/144; κ = (2/3 − 74/144)/(1 − 74/144)
    ratings = [[1, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 1]]
    # counts of 1s: 3, 2, 0, 1 → 6 of 12 are 1s: p = (0.5, 0.5) → P̄e = 0.5 → κ = (2/3 − 1/2)/(1/2) = 1/3
    k, n = fleiss(ratings, [0, 1])
    assert n == 4 and math.isclose(k, 1 / 3, abs_tol=1e-4)
    assert fleiss([[2, 2], [2, 2]], [0, 1, 2, 3]) == (None, 2)  # all one category: undefined
    # items with a different number of raters than the most common count are left out
    k2, n2 = fleiss(ratings + [[1, 0]], [0, 1])
    assert n2 == 4 and k2 == k
    assert fleiss([[1]], [0, 1]) == (None, 0)


def test_majority_ties_take_the_lower_median():
    assert majority([3, 3, 2]) == (3, False)
    assert majority([3, 2]) == (2, True)
    assert majority([3, 3, 0, 0]) == (0, True)
    assert majority([3, 2, 1]) == (2, True)
    assert majority([]) == (None, False)


def _row(pair, who, grade, gold=None, **kw):
    return {"pair_id": pair, "annotator": who, "grade": grade, "is_gold": gold is not None, "gold_grade": gold, "qid": f"q{pair}",
            "query": f"query {pair}", "video_id": f"v{pair}", "created_at": f"2026-01-01T00:00:{pair:02d}+00:00", **kw}


def test_batch_quality_per_annotator_and_gold():
    labels = [_row(1, "a", 3), _row(1, "b", 3), _row(1, "c", 2),
              _row(2, "a", 0), _row(2, "b", 1), _row(2, "c", 0),
              _row(3, "a", 2), _row(3, "b", 2), _row(3, "c", 2),
              _row(4, "a", 3), _row(4, "b", 0), _row(4, "c", 3),
              _row(9, "a", 3, gold=3), _row(9, "b", 1, gold=3)]
    s = batch_quality(labels)
    assert s["pairs_labelled"] == 4 and s["fleiss_items"] == 4 and s["gold_items"] == 2
    ratings = [[3, 3, 2], [0, 1, 0], [2, 2, 2], [3, 0, 3]]
    assert s["fleiss_kappa"] == fleiss(ratings, [0, 1, 2, 3])[0]
    assert s["percent_agreement_binary"] == percent_agreement([[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 0, 1]])
    per = {a["annotator"]: a for a in s["annotators"]}
    assert per["a"]["gold_accuracy"] == 1.0 and per["b"]["gold_accuracy"] == 0.0 and per["b"]["gold_mae"] == 2.0
    assert per["b"]["gold_accuracy_binary"] == 0.0 and s["gold_accuracy"] == 0.5
    # a vs majority of (b, c): pair1 (3,2) tie → skipped; pair2 (1,0) tie → skipped; pair3 → 2; pair4 (0,3) tie → skipped
    assert per["a"]["vs_majority_items"] == 1 and per["a"]["vs_majority_agreement"] == 1.0
    assert per["b"]["grade_distribution"] == {"3": 1, "2": 1, "1": 1, "0": 1}
    pw = {(p["a"], p["b"]): p for p in s["pairwise"]}
    assert pw[("a", "c")]["shared"] == 4 and pw[("a", "c")]["agreement"] == 0.75
    assert pw[("a", "c")]["cohen_kappa"] == cohen([3, 0, 2, 3], [2, 0, 2, 3], labels=[0, 1, 2, 3])
    d = disagreements(labels)
    assert [x["pair_id"] for x in d] == [4, 1, 2]  # widest spread and relevant-vs-not split first
    assert d[0]["binary_split"] and d[0]["spread"] == 3 and d[0]["majority"] == 3


@pytest.fixture()
def labelled(tmp_path):
    st = AnnotationStore(tmp_path / "a.sqlite", scrypt_n=2 ** 10)
    users = [st.create_user(n, f"{n}-password") for n in ("a", "b", "c")]
    lead = st.create_user("lead", "lead-password", "admin")
    pairs = [PairSpec("周杰伦 晴天", "t-qingtian-mv", {"title": "晴天 MV"}), PairSpec("周杰伦 晴天", "t-qingtian-cover", {"title": "cover"}),
             PairSpec("周杰伦 晴天", "t-langlang", {"title": "朗朗晴天"}), PairSpec("hebe", "t-hebe-1", {"title": "小幸运"}),
             PairSpec("hebe", "t-she", {"title": "S.H.E"}), PairSpec("hebe", "t-acdc", {"title": "AC/DC"}),
             PairSpec("gold q", "t-gem", {"title": "G.E.M."}, is_gold=True, gold_grade=0)]
    b = st.create_batch("exp", "upload", pairs, users, per_pair=3, actor=lead)
    grades = {"t-qingtian-mv": [3, 3, 3], "t-qingtian-cover": [2, 2, 3], "t-langlang": [1, 0], "t-hebe-1": [3, 3, 2],
              "t-she": [2, 0, 1], "t-gem": [0, 0, 1]}
    by_pair = {p["id"]: p for p in st.pairs_for_batch(b.id)}
    for idx, u in enumerate(users):
        for t in [t for t in st.tasks_for_batch(b.id) if t["annotator"] == u.name]:
            gs = grades.get(by_pair[t["pair_id"]]["video_id"], [])
            if idx < len(gs):
                st.submit_label(u, t["id"], gs[idx], idempotency_key=f"{u.name}{t['id']}",
                                aspects={"term_match": gs[idx] >= 2, "intent": gs[idx] == 3})
            else:
                st.submit_label(u, t["id"], None, skip=True, idempotency_key=f"{u.name}{t['id']}")
    return st, b, lead, by_pair


def test_export_majority_format_and_extras(labelled, tmp_path):
    st, b, lead, by_pair = labelled
    rows, rep = build_qrels(st, b.id, "majority")
    by = {r["video_id"]: r for r in rows}
    assert set(by) == {"t-qingtian-mv", "t-qingtian-cover", "t-langlang", "t-hebe-1", "t-she"}  # gold left out, AC/DC unlabelled
    assert rep.unlabelled == 1 and rep.gold == 0 and rep.exported == 5 and rep.queries == 2
    for r in rows:
        assert {"qid", "query", "video_id", "grade", "annotators", "method"} <= set(r) and r["grade"] in (0, 1, 2, 3)
    assert by["t-qingtian-cover"] == {**by["t-qingtian-cover"], "grade": 2, "annotators": 3, "method": "majority", "votes": {"3": 1, "2": 2}}
    assert by["t-qingtian-cover"]["agreement"] == round(2 / 3, 4)
    assert by["t-qingtian-mv"]["aspects"] == {"term_match": 1.0, "semantic": None, "intent": 1.0}
    assert by["t-langlang"]["grade"] == 0 and by["t-langlang"]["tie"] is True  # 1 vs 0 → lower median
    assert by["t-she"]["grade"] == 1 and by["t-she"]["tie"] is True  # 2, 0, 1 → median
    assert by["t-qingtian-mv"]["qid"] == by["t-langlang"]["qid"] != by["t-hebe-1"]["qid"]
    # the file is what `mvsearch eval search` reads
    out = write_atomic(tmp_path / "q.jsonl", to_jsonl(rows))
    write_atomic(tmp_path / "queries.jsonl", to_jsonl(queries_of(rows)))
    queries, qrels = load_judgements(tmp_path / "queries.jsonl", out)
    assert sorted(queries.values()) == ["hebe", "周杰伦 晴天"]
    assert qrels[by["t-she"]["qid"]]["t-she"] == 1
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0])["query"] in ("hebe", "周杰伦 晴天")  # UTF-8, not escaped
    # min annotators and gold
    rows3, rep3 = build_qrels(st, b.id, "majority", include_gold=True, min_annotators=3)
    assert rep3.too_few == 1 and rep3.gold == 1
    gold = next(r for r in rows3 if r["method"] == "gold")
    assert gold["grade"] == 0 and gold["video_id"] == "t-gem" and gold["votes"] == {"1": 1, "0": 2}


def test_export_adjudicated(labelled):
    st, b, lead, by_pair = labelled
    pid = {p["video_id"]: i for i, p in by_pair.items()}
    st.adjudicate(pid["t-she"], 2, lead, "related: S.H.E, Hebe's group")
    rows, rep = build_qrels(st, b.id, "adjudicated")
    by = {r["video_id"]: r for r in rows}
    assert by["t-she"]["grade"] == 2 and by["t-she"]["method"] == "adjudicated"
    assert by["t-qingtian-mv"]["method"] == "majority"  # unanimous pairs need no adjudication
    assert "t-qingtian-cover" not in by and "t-langlang" not in by and rep.unadjudicated == 3
    rows_m, _ = build_qrels(st, b.id, "majority")
    assert {r["video_id"]: r["method"] for r in rows_m}["t-she"] == "adjudicated"  # an adjudication always wins
    st.adjudicate(pid["t-she"], 1, lead, "changed my mind")
    assert {r["video_id"]: r["grade"] for r in build_qrels(st, b.id, "adjudicated")[0]}["t-she"] == 1
    with pytest.raises(ValueError):
        build_qrels(st, b.id, "vote")
