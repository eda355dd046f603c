"""Rewrite candidates and the versioned rewrite table; the recall merge keeps every route;
the recall evaluation's per-route quota union."""
from __future__ import annotations

import json

from query_understanding import QueryToken, UnderstoodQuery


def _uq(text: str) -> UnderstoodQuery:
    return UnderstoodQuery(text, text, [QueryToken(t) for t in text.split()])


def test_session_reformulations_need_click_on_the_later_query(tmp_path):
    from search.expansion.rewrites import session_reformulations

    ses = tmp_path / "sessions.jsonl"
    imp = tmp_path / "impressions.jsonl"
    sessions = [{"session_id": "s1", "queries": [{"query": "mingrizhizi", "request_id": "s1-0"}, {"query": "明日之子", "request_id": "s1-1"}]},
                {"session_id": "s2", "queries": [{"query": "周杰伦", "request_id": "s2-0"}, {"query": "林俊杰", "request_id": "s2-1"}]},
                {"session_id": "s3", "queries": [{"query": "晴天", "request_id": "s3-0"}]}]
    ses.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in sessions), encoding="utf-8")
    imps = [{"session_id": "s1", "request_id": "s1-0", "clicked": False, "split": "train"},
            {"session_id": "s1", "request_id": "s1-1", "clicked": True, "split": "train"},
            {"session_id": "s2", "request_id": "s2-0", "clicked": True, "split": "train"},   # first one satisfied: not a reformulation
            {"session_id": "s2", "request_id": "s2-1", "clicked": True, "split": "train"}]
    imp.write_text("\n".join(json.dumps(r) for r in imps), encoding="utf-8")
    got = session_reformulations(ses, imp)
    assert dict(got) == {("mingrizhizi", "明日之子"): 1}


def test_rewrite_table_written_and_looked_up(tmp_path):
    from search.expansion.rewrites import RewriteCandidate, write_rewrite_table
    from search.recall import RewriteTable

    path = tmp_path / "rw.json"
    chosen = [RewriteCandidate("hebe", "田馥甄", {"kb": 1.0}),
              RewriteCandidate("mingrizhizi", "明日之子", {"session": 3}, 0.93),
              RewriteCandidate("mingrizhizi", "明日之子 第二季", {"embedding": 0.9}, 0.71)]
    version = write_rewrite_table(path, chosen, {"threshold": 0.7})
    table = RewriteTable(path)
    assert table.version == version and version.startswith("rw-")
    assert table.rewrite(_uq("mingrizhizi")) == ["明日之子", "明日之子 第二季"]
    # token-level substitution keeps the rest of the query
    assert table.rewrite(_uq("hebe 小幸运")) == ["田馥甄 小幸运"]
    assert table.rewrite(_uq("没有 改写")) == []
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["details"]["mingrizhizi"][0]["sources"] == {"session": 3}


def test_merge_keeps_routes_and_scores():
    from search.recall import merge_routes

    routes = {"text": [("a", 10.0), ("b", 5.0)], "rewrite": [("b", 8.0), ("c", 4.0)], "vector": [("c", 0.9), ("d", 0.8)]}
    cands = {c.video_id: c for c in merge_routes(routes, 10)}
    assert set(cands) == {"a", "b", "c", "d"}
    assert cands["b"].sources == {"text": 5.0, "rewrite": 8.0}
    assert cands["c"].sources == {"rewrite": 4.0, "vector": 0.9}
    # agreement between routes counts
    assert cands["b"].recall_score > 1.0


def test_quota_union_gives_each_route_its_share():
    from search.expansion.recall_eval import _quota_union, recall_at

    by_route = {"text": [f"t{i}" for i in range(10)], "vector": [f"v{i}" for i in range(10)]}
    u = _quota_union(by_route, ["text", "vector"], {"text": 300, "vector": 100}, 8)
    assert u == ["t0", "t1", "t2", "t3", "t4", "t5", "v0", "v1"]
    # a route short of its quota leaves the budget to the other
    u = _quota_union({"text": ["t0"], "vector": [f"v{i}" for i in range(10)]}, ["text", "vector"], {"text": 300, "vector": 100}, 4)
    assert u == ["t0", "v0", "v1", "v2"]
    assert recall_at(u, {"v2", "zz"}, 4) == 0.5


def test_configured_rewrite_table_must_exist(tmp_path):
    import pytest

    from search.recall import RewriteTable

    with pytest.raises(FileNotFoundError, match="rewrite table not found"):
        RewriteTable(tmp_path / "missing.json", required=True)
    assert RewriteTable(tmp_path / "missing.json").version == "none"   # a bundle without one: empty table
