"""Ranking features: smoothing/bucketing primitives, and the no-leakage guarantee of the offline
replay (a feature of an impression never depends on an event after it)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ranking.feature_store import BehaviourState, replay_impressions
from ranking.features import (DEFAULT_EDGES, BetaPrior, FeatureBuilder, FrequencyVocab, QueryInfo, plain_rate, soft_buckets,
                              wilson_lower)

DAY = 86400.0
T0 = 1785686400.0 - 8 * 3600          # a local (UTC+8) midnight, as the simulator's days start
DOCS = {f"v{i}": {"video_id": f"v{i}", "artists": [f"a{i % 2}"], "uploader": f"up{i}", "category": "mv" if i % 2 else "live",
                  "language": "zh", "duration_s": 200 + i, "resolution": 1080 if i % 2 else 720,
                  "publish_time": "2024-01-01T00:00:00+08:00", "play_count": 1000 * (i + 1), "like_count": 30 * i} for i in range(4)}


def _imp(rid, ts, user, query, vid, pos, clicked, valid, liked, t1, rt, split="train"):
    return {"request_id": rid, "ts": ts, "user_id": user, "query": query, "video_id": vid, "position": pos, "clicked": clicked,
            "valid_play": valid, "liked": liked, "split": split,
            "features": {"relevance": {"bm25": 0.5, "coverage": 1.0}, "relevance_score": 0.6, "grade_pred": 2, "sources": {"text": 12.0},
                         "t1_video": dict(zip(["impressions", "clicks", "valid_plays"], t1)),
                         "rt_video": dict(zip(["impressions", "clicks", "valid_plays"], rt))}}


def write_log(path: Path) -> list[dict]:
    """Three requests on day 0, two on day 1; logged counters as the simulator computes them."""
    recs = [
        _imp("r1", T0 + 100, "u1", "a0 song", "v0", 1, True, True, True, (0, 0, 0), (0, 0, 0)),
        _imp("r1", T0 + 100, "u1", "a0 song", "v1", 2, False, False, False, (0, 0, 0), (0, 0, 0)),
        _imp("r2", T0 + 200, "u2", "a1", "v1", 1, True, False, False, (0, 0, 0), (1, 0, 0)),
        _imp("r2", T0 + 200, "u2", "a1", "v0", 2, False, False, False, (0, 0, 0), (1, 1, 1)),
        _imp("r3", T0 + 300, "u1", "a0 song", "v0", 1, True, True, False, (0, 0, 0), (2, 1, 1)),
        _imp("r4", T0 + DAY + 10, "u1", "a1", "v1", 1, True, True, True, (2, 1, 0), (0, 0, 0), "test"),
        _imp("r4", T0 + DAY + 10, "u1", "a1", "v2", 2, False, False, False, (0, 0, 0), (0, 0, 0), "test"),
        _imp("r5", T0 + DAY + 50, "u2", "a0 song", "v0", 1, False, False, False, (3, 2, 2), (0, 0, 0), "test"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return recs


def understand(q: str) -> QueryInfo:
    parts = q.split()
    return QueryInfo(q, len(parts), len(q), {"artist": 1} | ({"song": 1} if len(parts) > 1 else {}), {"artist": [parts[0]]})


def features_of(path: Path, builder: FeatureBuilder | None = None):
    rows, state = replay_impressions(path, understand, DOCS, check_counters=True)
    builder = builder or FeatureBuilder().fit([r.context for r in rows])
    dense, sparse = builder.transform([r.context for r in rows])
    return rows, dense, sparse, builder, state


def test_no_feature_depends_on_later_events(tmp_path):
    """Replaying the log cut right after impression k's request gives impression k exactly the
    features it gets in the full replay — and changing every later outcome changes nothing."""
    log = tmp_path / "imp.jsonl"
    recs = write_log(log)
    rows, dense, sparse, builder, _ = features_of(log)
    rids = [r["request_id"] for r in recs]
    for k in range(len(recs)):
        last = max(i for i, rid in enumerate(rids) if rid == rids[k])
        cut = tmp_path / f"cut{k}.jsonl"
        cut.write_text("".join(json.dumps(r) + "\n" for r in recs[: last + 1]), encoding="utf-8")
        r2, d2, s2, _, _ = features_of(cut, builder)
        assert np.array_equal(d2[k], dense[k]) and np.array_equal(s2[k], sparse[k]), f"impression {k} saw the future"
    # flip every outcome after the first request: features of r1's impressions cannot move
    flipped = [dict(r, clicked=not r["clicked"], liked=not r["liked"]) if r["request_id"] != "r1" else r for r in recs]
    log2 = tmp_path / "flipped.jsonl"
    log2.write_text("".join(json.dumps(r) + "\n" for r in flipped), encoding="utf-8")
    rows2, _ = replay_impressions(log2, understand, DOCS)
    d3, s3 = builder.transform([r.context for r in rows2])
    assert np.array_equal(d3[:2], dense[:2])


def test_user_history_and_counters_from_the_past_only(tmp_path):
    log = tmp_path / "imp.jsonl"
    write_log(log)
    rows, dense, _, builder, state = features_of(log)
    names = builder.dense_names()
    col = {n: i for i, n in enumerate(names)}
    assert dense[0, col["u_known"]] == 0.0                        # u1's first request: no history yet
    assert dense[4, col["u_known"]] == 1.0                        # r3: u1 has r1 behind
    assert rows[4].context.user.artists == {"a0": 2}              # r1's valid play of v0 (artist a0)
    assert rows[5].context.stats.t1["likes"] == 0.0               # v1 was never liked on day 0
    assert rows[7].context.stats.t1["likes"] == 1.0               # v0 liked in r1 (day 0) → T+1 on day 1
    assert rows[4].context.stats.rt["likes"] == 1.0               # same day, real-time
    assert state.users["u1"].requests == 3


def test_rates_and_buckets():
    assert plain_rate(3, 10) == 0.3 and plain_rate(1, 0) == 0.0
    assert 0 < wilson_lower(3, 10) < 0.3 and wilson_lower(300, 1000) > wilson_lower(3, 10)
    rng = np.random.default_rng(0)
    true = rng.beta(2, 30, 2000)
    n = rng.integers(50, 500, 2000)
    prior = BetaPrior.fit(rng.binomial(n, true), n)
    assert abs(prior.alpha / (prior.alpha + prior.beta) - 2 / 32) < 0.01
    assert 10 < prior.alpha + prior.beta < 70                        # the spread is recovered too (true 32)
    assert abs(prior.rate(2, 3) - 2 / 3) > 0.5                       # 2 of 3 is pulled to the mean
    b = soft_buckets(5, DEFAULT_EDGES)
    assert abs(sum(b) - 1) < 1e-9 and sum(v > 0 for v in b) == 2
    assert soft_buckets(0, DEFAULT_EDGES)[0] == 1.0 and soft_buckets(1e12, DEFAULT_EDGES)[-1] == 1.0


def test_frequency_vocab_shares_rare_bucket():
    v = FrequencyVocab.fit(["a"] * 5 + ["b"] * 5 + ["c"], min_count=2)
    assert v.lookup("a") > 0 and v.lookup("b") > 0
    assert v.lookup("c") == 0 and v.lookup("never seen") == 0 and len(v) == 3
    assert FrequencyVocab.from_dict(v.to_dict()).lookup("a") == v.lookup("a")


def test_rate_methods_and_roundtrip(tmp_path):
    log = tmp_path / "imp.jsonl"
    write_log(log)
    rows, _ = replay_impressions(log, understand, DOCS)
    ctx = [r.context for r in rows]
    allm = FeatureBuilder("all").fit(ctx)
    names = allm.dense_names()
    assert {"t1_ctr_bayes", "t1_ctr_wilson", "t1_ctr_plain"} <= set(names)
    fb = FeatureBuilder().fit(ctx)
    again = FeatureBuilder.from_dict(json.loads(json.dumps(fb.to_dict())))
    assert np.array_equal(fb.transform(ctx)[0], again.transform(ctx)[0])
    with pytest.raises(ValueError, match="rate_method"):
        FeatureBuilder("magic").fit(ctx)


def test_replay_state_save_load(tmp_path):
    log = tmp_path / "imp.jsonl"
    write_log(log)
    _, state = replay_impressions(log, understand, DOCS)
    state.save(tmp_path / "state.json")
    back = BehaviourState.load(tmp_path / "state.json")
    assert back.video_stats("v0") == state.video_stats("v0") and back.users["u2"].to_dict() == state.users["u2"].to_dict()


def test_training_uses_the_vector_the_learned_ranker_logged(tmp_path):
    from ranking.compare import apply_logged_vectors

    log = tmp_path / "imp.jsonl"
    recs = write_log(log)
    rows, _ = replay_impressions(log, understand, DOCS)
    fb = FeatureBuilder().fit([r.context for r in rows])
    dense, sparse = fb.transform([r.context for r in rows])
    logged = fb.snapshot(dense[2] + 0.25, sparse[2])           # what serving saw differs from the rebuild
    recs[2]["features"].update({"ranker": "learned", "rank_features": logged})
    recs[3]["features"].update({"ranker": "formula", "rank_features": logged})   # not the learned ranker's: ignored
    log.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    rows, _ = replay_impressions(log, understand, DOCS)
    d2, s2 = fb.transform([r.context for r in rows])
    assert apply_logged_vectors(rows, fb, d2, s2) == 1
    assert np.allclose(d2[2], dense[2] + 0.25, atol=1e-5) and np.array_equal(d2[3], dense[3])
