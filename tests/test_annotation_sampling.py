"""Where labelling pairs come from: search results, logs (CTR tiers), uploads, intent
types, model disagreement, gold mixing; and a batch built from them end to end."""
from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from search.annotation import sampling
from search.annotation.service import AnnotationService, BatchRequest
from search.annotation.store import AnnotationStore, Invalid, PairSpec


def _log_line(i, q, vid, pos, clicked, play=0.0):
    return json.dumps({"request_id": f"r{i}", "ts": "2026-10-01T12:00:00+08:00", "user_id": f"u{i % 7}", "query": q,
                       "video_id": vid, "position": pos, "clicked": clicked, "play_time_s": play, "liked": False,
                       "shared": False, "followed": False}, ensure_ascii=False)


@pytest.fixture(scope="module")
def impressions_log(tmp_path_factory):
    """A small impressions log in the SPEC's search-log schema: for 周杰伦 晴天 the MV is
    clicked almost always, the live clip half the time, the anime edit never; for hebe
    her MV often, S.H.E sometimes, AC/DC never. Plus a malformed line and a rare pair."""
    plan = [("周杰伦 晴天", "t-qingtian-mv", 1, 20, 18), ("周杰伦 晴天", "t-qingtian-live", 2, 20, 9),
            ("周杰伦 晴天", "t-qingtian-cover", 3, 20, 5), ("周杰伦 晴天", "t-langlang", 4, 20, 0),
            ("hebe", "t-hebe-1", 1, 20, 15), ("hebe", "t-hebe-2", 2, 20, 8), ("hebe", "t-she", 3, 20, 2),
            ("hebe", "t-acdc", 4, 20, 0), ("会不会 翻唱", "t-hbh-1", 1, 12, 6), ("会不会 翻唱", "not-in-catalog", 2, 12, 1)]
    lines, i = [], 0
    for q, vid, pos, n, clicks in plan:
        for k in range(n):
            lines.append(_log_line(i, q, vid, pos, k < clicks, 120.0 if k < clicks else 0.0))
            i += 1
    random.Random(1).shuffle(lines)
    lines.insert(5, "{not json")
    lines.insert(9, json.dumps({"query": "", "video_id": "t-gem"}))
    lines.append(_log_line(i, "g.e.m.", "t-gem", 1, True))  # one impression: below min_impressions
    p = tmp_path_factory.mktemp("logs") / "impressions.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_intent_type_rule(pipeline):
    cases = {"周杰伦": "artist", "hebe": "artist", "晴天": "song", "周杰伦 晴天": "artist_song", "晴天 翻唱": "version",
             "会不会 cover": "version", "田馥甄 小幸运 live": "version", "舞蹈教学": "version", "适合跑步的歌": "descriptive",
             "伤感 歌曲": "descriptive", "asdfgh": "other"}
    got = {q: sampling.intent_type(pipeline.understand(q)) for q in cases}
    assert got == cases


def test_from_logs_ctr_tiers(pipeline, impressions_log):
    pairs, rep = sampling.from_logs(impressions_log, pipeline, min_impressions=3)
    assert rep.lines == 187 and rep.kept == 185 and any("line 6: invalid JSON" in e for e in rep.errors)
    assert any("line 10" in e and "query" in e for e in rep.errors)
    assert any("not in the catalog" in e for e in rep.notes) and any("fewer than 3 impressions" in e for e in rep.notes)
    assert len(rep.errors) == 2 and "2 skipped" in rep.summary()
    by = {(p.query, p.video_id): p for p in pairs}
    assert len(pairs) == 9 and ("g.e.m.", "t-gem") not in by
    mv = by[("周杰伦 晴天", "t-qingtian-mv")]
    assert mv.meta["impressions"] == 20 and mv.meta["clicks"] == 18 and mv.meta["ctr"] == 0.9 and mv.meta["valid_plays"] == 18
    assert mv.meta["mean_position"] == 1.0 and mv.video["title"] == "【周杰伦】晴天 官方MV"
    tiers = {k: p.stratum for k, p in by.items()}
    assert tiers[("周杰伦 晴天", "t-qingtian-mv")] == "high" and tiers[("hebe", "t-hebe-1")] == "high"
    assert tiers[("周杰伦 晴天", "t-langlang")] == "low" and tiers[("hebe", "t-acdc")] == "low"
    assert Counter(tiers.values()) == {"high": 3, "medium": 3, "low": 3}
    # smoothed CTR orders the pairs like the raw CTR here
    ordered = sorted(pairs, key=lambda p: -p.meta["ctr_smoothed"])
    assert ordered[0].video_id == "t-qingtian-mv" and ordered[-1].meta["clicks"] == 0
    chosen = sampling.select("logs", pairs, 6, pipeline, seed=0)
    assert Counter(p.stratum for p in chosen) == {"high": 2, "medium": 2, "low": 2}


def test_from_search_and_sample_queries(pipeline):
    pairs, rep = sampling.from_search(pipeline, ["周杰伦 晴天", "hebe", "", "zzzzqqqq"], top_k=4)
    assert rep.kept == 2 and len(rep.errors) == 2
    assert len(pairs) == 8 and pairs[0].query == "周杰伦 晴天" and pairs[0].meta["rank"] == 1
    assert pairs[0].video_id in ("t-qingtian-mv", "t-qingtian-live") and pairs[0].meta["predicted_grade"] == 3
    assert "_fields" not in pairs[0].video and pairs[0].video["artists"] == ["周杰伦"]
    qs = sampling.sample_queries(pipeline, 12, seed=5)
    assert len(qs) == 12 and len(set(qs)) == 12
    assert qs == sampling.sample_queries(pipeline, 12, seed=5)  # seeded
    res = [pipeline.search(__import__("search.pipeline", fromlist=["SearchRequest"]).SearchRequest(q, size=3)) for q in qs]
    assert sum(1 for r in res if r.hits) >= 10  # sampled queries find videos of this catalog


def test_intent_strategy_stratifies(pipeline):
    qs = ["周杰伦", "hebe", "晴天", "小幸运", "周杰伦 晴天", "田馥甄 小幸运", "晴天 翻唱", "会不会 cover", "适合跑步的歌", "伤感 歌曲"]
    pool, _ = sampling.from_search(pipeline, qs, top_k=5)
    chosen = sampling.select("intent", pool, 12, pipeline, seed=1)
    c = Counter(p.stratum for p in chosen)
    assert set(c) == {"artist", "song", "artist_song", "version", "descriptive"} and max(c.values()) - min(c.values()) <= 1
    assert all(p.meta["intent_type"] == p.stratum for p in chosen)


def test_disagreement_strategy_picks_largest_rank_gaps(pipeline):
    pool, _ = sampling.from_search(pipeline, ["周杰伦 晴天", "hebe", "会不会", "g.e.m."], top_k=8)
    # pairs that were not in the results (uploaded or from logs) are scored too
    extra, _ = sampling.from_jsonl(json.dumps({"query": "hebe", "video_id": "t-langlang"}).encode(), pipeline)
    pool += extra
    chosen = sampling.select("disagreement", pool, 5, pipeline)
    allp = sorted(pool, key=lambda p: -p.meta["disagreement"])
    assert [p.meta["disagreement"] for p in chosen] == [p.meta["disagreement"] for p in allp[:5]]
    for p in pool:
        m = p.meta
        assert 0 <= m["rank_text"] <= 1 and 0 <= m["rank_vector"] <= 1
        assert m["disagreement"] == pytest.approx(abs(m["rank_text"] - m["rank_vector"]), abs=2e-4)
        assert -1.0001 <= m["vector_cosine"] <= 1.0001
    # the scorers are the pipeline's text relevance and the LSA cosine
    lang = next(p for p in pool if p.video_id == "t-langlang")
    assert lang.meta["text_relevance"] < 0.5
    q = pipeline.understand("hebe")
    doc = pipeline.engine.get_docs(["t-hebe-1"])["t-hebe-1"]["_fields"]
    v = pipeline.embedder.encode_tokens(doc["title"] + doc["artists"] + doc["songs"] + doc["tags"])
    want = float((pipeline.embedder.encode_tokens(q.terms) * v).sum())
    assert abs(next(p for p in pool if p.video_id == "t-hebe-1" and p.query == "hebe").meta["vector_cosine"] - want) < 1e-3
    assert {p.stratum for p in chosen} <= {"text>vector", "vector>text", "tie"}


def test_upload_reports_bad_lines_and_accepts_embedded_videos(pipeline):
    data = "\n".join([
        json.dumps({"query": "周杰伦 晴天", "video_id": "t-qingtian-mv", "qid": "7"}, ensure_ascii=False),
        "not json",
        json.dumps({"query": "晴天", "video_id": "missing-video"}, ensure_ascii=False),
        json.dumps({"query": "晴天", "video_id": "own", "video": {"title": "<b>bold</b>", "tags": "one"}}, ensure_ascii=False),
        json.dumps({"query": "周杰伦 晴天", "video_id": "t-qingtian-mv"}, ensure_ascii=False),
        json.dumps(["list"]),
    ]).encode("utf-8")
    pairs, rep = sampling.from_jsonl(data, pipeline)
    assert [(p.query, p.video_id) for p in pairs] == [("周杰伦 晴天", "t-qingtian-mv"), ("晴天", "own")]
    assert pairs[0].qid == "7" and pairs[1].video["title"] == "<b>bold</b>" and pairs[1].video["tags"] == ["one"]
    errs = " | ".join(rep.errors)
    assert "line 2: invalid JSON" in errs and "line 3: video 'missing-video'" in errs and "line 5: duplicate" in errs
    assert "line 6: not a JSON object" in errs
    gold, grep = sampling.from_jsonl(b'{"query":"q","video_id":"t-gem","grade":2}\n{"query":"q","video_id":"t-she","grade":5}\n'
                                     b'{"query":"q","video_id":"t-acdc"}\n', pipeline, gold=True)
    assert len(gold) == 1 and gold[0].is_gold and gold[0].gold_grade == 2 and len(grep.errors) == 2


def test_gold_mixing_rate_and_order():
    regular = [PairSpec(f"q{i // 4}", f"v{i}", {}) for i in range(40)]
    gold = [PairSpec(f"g{i}", f"gv{i}", {}, is_gold=True, gold_grade=i % 4) for i in range(20)]
    seq = sampling.mix_gold(regular, gold, 0.1, seed=3)
    n_gold = sum(p.is_gold for p in seq)
    assert n_gold == 5 and len(seq) == 45  # 5 / 45 ≈ 0.11: ceil(0.1 · 40 / 0.9)
    # regular pairs of one query stay together, in their original order
    regs = [p for p in seq if not p.is_gold]
    for q in {p.query for p in regs}:
        idx = [i for i, p in enumerate(regs) if p.query == q]
        assert idx == list(range(idx[0], idx[0] + len(idx)))
    assert seq == sampling.mix_gold(regular, gold, 0.1, seed=3)
    assert not any(p.is_gold for p in sampling.mix_gold(regular, gold, 0.0))
    with pytest.raises(ValueError):
        sampling.mix_gold(regular, gold, 1.0)
    # a regular pair that is also gold is kept once, as gold
    dup = sampling.mix_gold(regular, [PairSpec("q0", "v0", {}, is_gold=True, gold_grade=3)], 0.0)
    assert len(dup) == 40 and [p for p in dup if p.video_id == "v0"][0].is_gold


def test_service_creates_batches_with_every_strategy(pipeline, impressions_log, tmp_path):
    st = AnnotationStore(tmp_path / "svc.sqlite", scrypt_n=2 ** 10)
    lead = st.create_user("lead", "lead-password", "admin")
    for n in ("a", "b", "c", "d"):
        st.create_user(n, f"{n}-password")
    svc = AnnotationService(st, pipeline)
    gold = "\n".join(json.dumps(g, ensure_ascii=False) for g in [
        {"query": "周杰伦 晴天", "video_id": "t-langlang", "grade": 1}, {"query": "hebe", "video_id": "t-she", "grade": 2},
        {"query": "hebe", "video_id": "t-acdc", "grade": 0}]).encode()
    r1 = svc.create_batch(BatchRequest("s", "search", queries=["周杰伦 晴天", "hebe"], top_k=6, gold=gold, gold_rate=0.2, per_pair=3), lead)
    assert r1.gold >= 2 and r1.batch.annotators_per_pair == 3 and r1.pairs >= 12
    r2 = svc.create_batch(BatchRequest("l", "logs", logs=impressions_log, size=6, per_pair=2, annotators=["a", "b"]), lead)
    assert r2.strata == {"high": 2, "medium": 2, "low": 2} and {t["annotator"] for t in st.tasks_for_batch(r2.batch.id)} == {"a", "b"}
    r3 = svc.create_batch(BatchRequest("i", "intent", sample_queries=10, top_k=3, size=10, per_pair=1, seed=2), lead)
    assert r3.pairs == 10 and len(r3.strata) >= 3
    r4 = svc.create_batch(BatchRequest("d", "disagreement", queries=["周杰伦 晴天", "hebe"], top_k=10, size=5, per_pair=9), lead)
    assert r4.pairs == 5 and r4.batch.annotators_per_pair == 4  # capped at the number of annotators
    pairs = b'{"query":"\xe6\x99\xb4\xe5\xa4\xa9","video_id":"t-langlang"}\n{"query":"hebe","video_id":"t-hebe-2"}\n'
    r5 = svc.create_batch(BatchRequest("u", "upload", pairs=pairs, per_pair=2), lead)
    assert r5.pairs == 2
    for bad in (BatchRequest("u", "upload", pairs=pairs), BatchRequest("x", "upload"), BatchRequest("x", "logs"),
                BatchRequest("x", "search", queries=["zzzzqqqq"]), BatchRequest("x", "search", queries=["hebe"], annotators=["nobody"]),
                BatchRequest("x", "nope"), BatchRequest("x", "search", queries=["hebe"], gold_rate=1.5)):
        with pytest.raises((Invalid, Exception)) as e:
            svc.create_batch(bad, lead)
        assert getattr(e.value, "status", 400) in (400, 409)
    # qids are stable across batches
    q1 = {p["query"]: p["qid"] for p in st.pairs_for_batch(r1.batch.id)}
    q4 = {p["query"]: p["qid"] for p in st.pairs_for_batch(r4.batch.id)}
    assert q1["hebe"] == q4["hebe"]
    st.close()
