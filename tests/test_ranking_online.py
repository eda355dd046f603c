"""The learned ranker online: served request by request with the user and live counters, it logs
the vector it scored with each impression, and that vector is exactly what the offline replay
computes from the events before the impression (training and serving share one feature path and
no feature sees the future)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import pipeline_config
from ranking.compare import prepare_dataset, run_one
from ranking.feature_store import replay_impressions
from ranking.features import QueryInfo
from ranking.learned import load_model, save_model
from search.pipeline import SearchPipeline, SearchRequest
from search.simulate import load_sim_config, simulate

SMALL_SIM = {"users": 150, "seed": 5, "workers": 0, "split": {"validation_days": 1, "test_days": 1}}
RATES = {"train": 1.0, "validation": 1.0, "test": 1.0}


def _read(p):
    return [json.loads(line) for line in open(p, encoding="utf-8")]


@pytest.fixture(scope="module")
def served(catalog_path, pipeline, embedded_index, tmp_path_factory):
    """A formula-served week trains a tiny MMoE; the MMoE then serves a new 4-day world."""
    tmp = tmp_path_factory.mktemp("online")
    simulate(catalog_path, tmp / "formula", pipeline, load_sim_config(None, {**SMALL_SIM, "days": 6}), progress=False)
    understand = lambda q: QueryInfo.from_understood(pipeline.understand(q))  # noqa: E731
    ds = prepare_dataset(tmp / "formula", understand, pipeline.engine.get_docs, tmp / "cache", RATES, progress=False)
    spec = {"label": "MMoE", "model": "mmoe", "mode": "", "loss": "esmm", "weighting": "uwl",
            "params": {"embed_dim": 4, "n_experts": 2, "expert_hidden": [8], "tower_hidden": [4]}}
    _, model = run_one(spec, ds, seed=0, epochs=1, threads=1)
    model_path = save_model(tmp / "ranker.pt", model, ds.builder)
    learned = SearchPipeline(pipeline_config(embedded_index, ranking={"impl": "learned", "params": {
        "model_path": str(model_path), "feature_store": str(ds.state_path)}}))
    cfg = load_sim_config(None, {**SMALL_SIM, "days": 4, "seed": 6})
    simulate(catalog_path, tmp / "learned", learned, cfg, progress=False)
    yield tmp, learned, model_path, understand
    learned.close()


def test_learned_ranker_serves_each_request_with_user_and_live_counters(served):
    tmp, learned, _, _ = served
    imps = _read(tmp / "learned" / "logs" / "impressions.jsonl")
    assert imps and all(r["features"]["ranker"] == "learned" for r in imps)
    feats = [r["features"]["rank_features"] for r in imps]
    assert sum(f["u_known"] == 1.0 for f in feats) > len(feats) // 10          # returning users carry history
    assert any(f["x_user_artist"] > 0 for f in feats)                          # … and their artists
    assert any(f["rt_imp_b0"] < 1.0 for f in feats) and any(f["t1_imp_b0"] < 1.0 for f in feats)
    # two users typing the same query at the same moment can get different orders
    ranker = learned.stages["ranking"]
    users = sorted(ranker.state.users, key=lambda u: -ranker.state.users[u].clicks)[:2]
    r = learned.retrieve(SearchRequest("周杰伦", now_ts=imps[-1]["ts"]))
    a = learned.order(r, SearchRequest("周杰伦", users[0], 1, 10, now_ts=imps[-1]["ts"]), reuse=True)
    b = learned.order(r, SearchRequest("周杰伦", users[1], 1, 10, now_ts=imps[-1]["ts"]), reuse=True)
    assert a.hits[0].rank_features["u_known"] == 1.0
    assert [h.rank_score for h in a.hits] != [h.rank_score for h in b.hits]


def test_logged_vectors_equal_the_offline_replay(served):
    """Rebuild every impression's features offline from the log alone (the state replayed from
    the events before it) with the serving model's feature state: they equal what was logged."""
    tmp, learned, model_path, understand = served
    _, builder, _ = load_model(model_path)
    log = tmp / "learned" / "logs" / "impressions.jsonl"
    rows, _ = replay_impressions(log, understand, learned.engine.get_docs(sorted({r["video_id"] for r in _read(log)})),
                                 check_counters=True)
    # as served: example age is a training-time feature (0 at serving), the rest must match as is
    dense, sparse = builder.transform([dataclasses.replace(r.context, example_ts=None) for r in rows])
    names = builder.dense_names()
    logged = np.array([[r.logged_vector[n] for n in names] for r in rows])
    logged_sparse = np.array([[r.logged_vector[f"sparse.{k}"] for k in builder.vocabs] for r in rows])
    # the log rounds to 6 digits (relevance scores were rounded once before replay and once after)
    np.testing.assert_allclose(dense, logged, atol=3e-6)
    assert np.array_equal(sparse, logged_sparse)
    assert len(rows) == len(_read(log))


def test_training_on_served_logs_uses_the_logged_vectors(served, tmp_path):
    tmp, learned, model_path, understand = served
    _, builder, _ = load_model(model_path)
    ds = prepare_dataset(tmp / "learned", understand, learned.engine.get_docs, tmp_path, RATES, progress=False,
                         fixed_builder=builder)
    imps = _read(tmp / "learned" / "logs" / "impressions.jsonl")
    test_rows = [r for r in imps if r["split"] == "test"]
    names = builder.dense_names()
    first = np.array([test_rows[0]["features"]["rank_features"][n] for n in names], dtype=np.float32)
    assert np.array_equal(ds.splits["test"].dense[0], first)


def test_service_logs_what_it_served_takes_events_and_joins_them(served, tmp_path):
    """The API side of the same loop: /search writes the snapshot, POST /events moves the live
    counters and is logged, `logs join` makes the SPEC impression log."""
    from fastapi.testclient import TestClient

    from search.api import create_app
    from search.serve_log import join_logs

    _, learned, _, _ = served
    learned.config["search"]["serve_log"] = str(tmp_path / "serve")
    learned.config["annotation"] = {"enabled": False}
    client = TestClient(create_app(learned))
    try:
        res = client.get("/search", params={"q": "周杰伦", "user_id": "api-user", "size": 5}).json()
        rid, first = res["request_id"], res["results"][0]["video_id"]
        served_lines = _read(tmp_path / "serve" / "serve.jsonl")
        assert [r["video_id"] for r in served_lines] == [h["video_id"] for h in res["results"]]
        assert served_lines[0]["features"]["ranker"] == "learned" and "u_known" in served_lines[0]["features"]["rank_features"]
        ranker = learned.stages["ranking"]
        ev = client.post("/events", json={"request_id": rid, "user_id": "api-user", "ts": served_lines[0]["ts"] + 5,
                                          "outcomes": [{"video_id": first, "clicked": True, "play_time_s": 95, "liked": True}]})
        assert ev.status_code == 200 and ev.json() == {"accepted": 1, "logged": True, "stages_updated": 1}
        assert ranker.state.users["api-user"].clicks == 1 and ranker.state.stats_view(first).rt["likes"] >= 1
        assert client.post("/events", json={"request_id": rid, "outcomes": []}).status_code == 400
        assert client.post("/events", json={"request_id": rid, "outcomes": [{"video_id": "no-such"}]}).status_code == 404
    finally:
        client.app.state.serve_log.close()
        learned.config["search"]["serve_log"] = ""
    js = join_logs(tmp_path / "serve", tmp_path / "joined", validation_days=0, test_days=1)
    imps = _read(tmp_path / "joined" / "logs" / "impressions.jsonl")
    assert js.impressions == len(imps) == len(res["results"]) and js.clicks == 1
    clicked = [r for r in imps if r["clicked"]]
    assert [r["video_id"] for r in clicked] == [first] and clicked[0]["valid_play"] and clicked[0]["liked"]
    assert all(r["split"] == "test" and r["features"]["rank_features"] for r in imps)
    (tmp_path / "serve" / "events.jsonl").open("a").write("{not json\n")
    with pytest.raises(ValueError, match="events.jsonl line 2"):
        join_logs(tmp_path / "serve", tmp_path / "joined2")


def test_online_comparison_of_two_served_worlds(served, tmp_path):
    from search.cli import main
    from search.simulate.online import METRICS, compare_online, online_table

    tmp, _, _, _ = served
    res = compare_online({"formula": tmp / "formula", "mmoe": tmp / "learned"})
    f, m = res["arms"]["formula"], res["arms"]["mmoe"]
    for key, _ in METRICS:
        assert f[key]["ci95"] >= 0 and "diff" in m[key] and "diff" not in f[key]
    assert 0 < f["ctr"]["mean"] < 1 and 0 <= m["grade_at_1"]["mean"] <= 3 and 0 <= m["grade0_share"]["mean"] <= 1
    imps = _read(tmp / "learned" / "logs" / "impressions.jsonl")
    assert abs(m["ctr"]["mean"] - np.mean([r["clicked"] for r in imps])) < 0.05      # mean of daily CTRs ≈ overall CTR
    assert "| CTR |" in online_table(res)
    assert main(["eval", "online", "--runs", f"formula={tmp / 'formula'}", f"mmoe={tmp / 'learned'}", "--out", str(tmp_path / "o.json")]) == 0
    assert json.loads((tmp_path / "o.json").read_text())["arms"]["mmoe"]["ctr"]["mean"] == m["ctr"]["mean"]
    assert main(["eval", "online", "--runs", "bad"]) == 2
