"""Ranking features: smoothing/bucketing primitives, and the no-leakage guarantee of the offline
replay (a feature of an impression never depends on an event after it)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ranking.feature_store import BehaviourState, replay_impressions
from ranking.features import (CATALOG_EDGES, COUNTERS, DEFAULT_EDGES, ENTITY_TYPES, RELEVANCE_KEYS, ROUTES, BetaPrior,
                              FeatureBuilder, FrequencyVocab, ImpressionContext, QueryInfo, UserProfile, VideoStats, _publish_ts,
                              plain_rate, soft_bucket_matrix, soft_buckets, wilson_lower)

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
    age = fb.dense_names().index("example_age")
    others = [j for j in range(d2.shape[1]) if j != age]
    assert np.allclose(d2[2, others], dense[2, others] + 0.25, atol=1e-5) and np.array_equal(d2[3], dense[3])
    assert d2[2, age] == dense[2, age] > 0              # example age is the training run's, not the logged one


# ---------------------------------------------------------------- the vectorized builder vs the per-candidate definition

def _reference_dense(b: FeatureBuilder, c) -> dict[str, float]:
    """The features written one candidate at a time, as they were first defined: the oracle the
    column-wise `FeatureBuilder.columns` (what serving and training call) must reproduce."""
    def rates(prefix, s, n, prior):
        out = {}
        if b.rate_method in ("bayes", "all"):
            out[f"{prefix}_bayes"] = b.priors[prior].rate(s, n) if prior in b.priors else plain_rate(s, n)
        if b.rate_method in ("wilson", "all"):
            out[f"{prefix}_wilson"] = wilson_lower(s, n)
        if b.rate_method in ("plain", "all"):
            out[f"{prefix}_plain"] = plain_rate(s, n)
        return out

    def buckets(name, x, edges=None):
        return {f"{name}_b{i}": v for i, v in enumerate(soft_buckets(x, edges or b.edges))}

    q, d, f = c.query, c.doc, {}
    f["q_tokens"] = min(q.n_tokens, 10) / 10
    f["q_chars"] = min(q.n_chars, 30) / 30
    for t in ENTITY_TYPES:
        f[f"q_ent_{t}"] = float(min(q.entity_types.get(t, 0), 2))
    for name in b.intent_names:
        f[f"q_intent_{name}"] = float(q.intents.get(name, 0.0))
    f["v_duration"] = math.log1p(float(d.get("duration_s") or 0)) / 7
    res = float(d.get("resolution") or 0)
    f["v_hd"], f["v_fullhd"] = float(res >= 720), float(res >= 1080)
    pts = _publish_ts(d)
    age = max(0.0, (c.now_ts - pts) / 86400) if pts is not None else 3650.0
    f["v_age"] = math.log1p(age) / 8
    ref, ets = b.example_age_ref, c.example_ts
    f["example_age"] = math.log1p(max(0.0, ref - ets) / 86400) / 5 if ref is not None and ets is not None else 0.0
    f.update(buckets("v_catalog_plays", float(d.get("play_count") or 0), CATALOG_EDGES))
    f.update(rates("v_catalog_like", float(d.get("like_count") or 0), float(d.get("play_count") or 0), "catalog_like"))
    for span, st in (("t1", c.stats.t1), ("rt", c.stats.rt)):
        imp, clk, vp, lk = (float(st.get(k, 0.0)) for k in COUNTERS)
        f.update(buckets(f"{span}_imp", imp))
        f.update(buckets(f"{span}_clk", clk))
        f.update(rates(f"{span}_ctr", clk, imp, "ctr"))
        f.update(rates(f"{span}_vpr", vp, clk, "vpr"))
        f.update(rates(f"{span}_like", lk, clk, "like"))
    u = c.user or UserProfile()
    f["u_known"] = float(u.requests > 0)
    f.update(buckets("u_requests", u.requests))
    f["u_click_rate"] = (u.clicks + 1) / (u.requests * 10 + 8)
    f["u_days_idle"] = math.log1p(max(0.0, c.now_ts - u.last_ts) / 86400) / 5 if u.last_ts else 1.0
    for k in RELEVANCE_KEYS:
        f[f"rel_{k}"] = float(c.relevance.get(k, 0.0))
    f["rel_score"] = float(c.relevance_score)
    for r in ROUTES:
        s = c.sources.get(r)
        f[f"src_{r}"] = float(s is not None)
        f[f"src_{r}_score"] = (math.log1p(max(s, 0.0)) / 6 if r != "vector" else float(s)) if s is not None else 0.0
    f["src_n"] = float(len(c.sources)) / 3
    v_artists = list(d.get("artists") or [])
    hist = max(1, sum(u.artists.values()))
    f["x_user_artist"] = sum(u.artists.get(a, 0) for a in v_artists) / hist
    f["x_user_language"] = u.languages.get(str(d.get("language")), 0) / max(1, sum(u.languages.values()))
    f["x_user_category"] = u.categories.get(str(d.get("category")), 0) / max(1, sum(u.categories.values()))
    q_art = q.entity_texts.get("artist", [])
    f["x_query_artist_in_video"] = float(any(a in v_artists for a in q_art)) if q_art else 0.0
    return f


def _random_contexts(n: int, seed: int = 0) -> list[ImpressionContext]:
    rng = np.random.default_rng(seed)
    queries = [QueryInfo("周杰伦 晴天", 2, 5, {"artist": 1, "song": 1}, {"artist": ["周杰伦"]}, {"song": 0.7, "artist": 0.3}),
               QueryInfo("hebe", 1, 4, {}, {}, {})]
    users = [None, UserProfile(), UserProfile(12, 5, 3, T0 - 3 * DAY, {"周杰伦": 4, "a1": 2}, {"zh": 5}, {"mv": 3, "live": 1})]
    out = []
    for i in range(n):
        counts = []
        for _ in range(2):     # impressions ≥ clicks ≥ valid plays, likes; expm1(2) sits on a bucket edge
            imp = float(rng.choice([0, 1, 2, 3, 19, 150, 1e6, math.expm1(2.0)]))
            clk = float(rng.integers(0, imp + 1)) if imp < 1e5 else 31_000.0
            counts += [imp, clk, float(rng.integers(0, clk + 1)), float(rng.integers(0, clk + 1))]
        doc = {"artists": [["周杰伦"], ["a1", "周杰伦"], []][i % 3], "uploader": f"up{i % 5}", "category": ["mv", "live", None][i % 3],
               "language": ["zh", "en"][i % 2], "duration_s": [0, 61, 3600, None][i % 4], "resolution": [None, 480, 720, 1080][i % 4],
               "play_count": int(rng.integers(0, 10**7)) if i % 5 else 0, "like_count": int(rng.integers(0, 10**4))}
        if i % 4 == 0:
            doc["_fields"] = {"publish_ts": T0 - 400 * DAY}
        elif i % 4 == 1:
            doc["publish_time"] = "2023-05-01T00:00:00+08:00"
        elif i % 4 == 2:
            doc["_fields"] = {"publish_ts": T0 + DAY}           # published after "now": age 0
        sources = [{"text": float(rng.random() * 80)}, {"text": 3.0, "vector": 0.83}, {"rewrite": 0.0, "vector": -0.1}, {}][i % 4]
        rel = {k: float(rng.random()) for k in RELEVANCE_KEYS[: 2 + i % 5]}
        stats = VideoStats(dict(zip(COUNTERS, counts[:4])), dict(zip(COUNTERS, counts[4:])))
        out.append(ImpressionContext(queries[i % 2], f"v{i}", doc, rel, float(rng.random()), [None, 0, 2, 3][i % 4], sources, stats,
                                     users[i % 3], T0, [None, T0 - 3 * DAY, T0 - 0.5 * DAY, T0 + DAY][i % 4]))
    return out


@pytest.mark.parametrize("rate_method", ["bayes", "wilson", "plain", "all"])
def test_column_features_equal_the_per_candidate_definition(rate_method):
    ctx = _random_contexts(240)
    fb = FeatureBuilder(rate_method).fit(ctx[:200])
    fb.priors["ctr"] = BetaPrior(2.0, 40.0)                 # fitted priors may fall back; use a real one
    dense, sparse = fb.transform(ctx)
    names = fb.dense_names()
    ref = np.array([[_reference_dense(fb, c)[n] for n in names] for c in ctx], dtype=np.float32)
    assert list(_reference_dense(fb, ctx[0])) == names
    np.testing.assert_allclose(dense, ref, rtol=1e-6, atol=1e-7)
    ref_sparse = np.array([[fb.vocabs[k].lookup(fb.sparse_raw(c)[k]) for k in fb.vocabs] for c in ctx])
    assert np.array_equal(sparse, ref_sparse)
    assert fb.dense_raw(ctx[3]) == pytest.approx(dict(zip(names, dense[3].astype(float))), rel=1e-6, abs=1e-7)
    # the second batch is served from the per-video cache; a new record for a video is not
    again_d, again_s = fb.transform(ctx)
    assert np.array_equal(again_d, dense) and np.array_equal(again_s, sparse)
    changed = dataclasses.replace(ctx[5], doc={**ctx[5].doc, "duration_s": 999, "resolution": 1080, "play_count": 7})
    assert fb.dense_raw(changed) == pytest.approx(_reference_dense(fb, changed), rel=1e-6, abs=1e-7)
    empty_d, empty_s = fb.transform([])
    assert empty_d.shape == (0, len(names)) and empty_s.shape == (0, len(fb.vocabs))


def test_soft_bucket_matrix_matches_soft_buckets():
    xs = np.array([0, 0.5, 1, math.expm1(1.0), math.expm1(3.5), 7, 1e3, 1e9, -3])
    m = soft_bucket_matrix(xs, DEFAULT_EDGES)
    np.testing.assert_allclose(m, [soft_buckets(x, DEFAULT_EDGES) for x in xs], atol=1e-12)


def test_example_age_is_the_training_time_gap_and_zero_at_serving(tmp_path):
    """The article's example age (after YouTube): newest training example 0, older ones more,
    serving and later examples 0; the reference travels with the feature state."""
    log = tmp_path / "imp.jsonl"
    write_log(log)
    rows, _ = replay_impressions(log, understand, DOCS)
    train = [r.context for r in rows if r.split == "train"]
    fb = FeatureBuilder().fit(train)
    assert fb.example_age_ref == max(c.example_ts for c in train)
    age = fb.columns([r.context for r in rows])["example_age"]
    ts = np.array([r.context.now_ts for r in rows])
    newest = int(np.argmax(np.where([r.split == "train" for r in rows], ts, -1)))
    assert age[newest] == 0.0 and age[0] > 0 and all(a == 0.0 for a, r in zip(age, rows) if r.split == "test")
    assert np.all(np.diff(age[:5]) <= 0)                                 # older train examples are older
    served = [dataclasses.replace(r.context, example_ts=None) for r in rows]
    assert not fb.columns(served)["example_age"].any()
    assert FeatureBuilder.from_dict(json.loads(json.dumps(fb.to_dict()))).example_age_ref == fb.example_age_ref
