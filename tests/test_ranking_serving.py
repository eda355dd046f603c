"""The learned ranking stage: model file with its schema, refusal on mismatch, fallback when the
file is missing, one batch of 500 candidates, and the full feature vector in each candidate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from query_understanding import Entity, QueryToken, UnderstoodQuery
from ranking.feature_store import replay_impressions
from ranking.features import FeatureBuilder
from ranking.learned import LearnedRanker, SchemaMismatch, load_model, save_model
from ranking.models import InputSchema, build_model
from search.contracts import Candidate, StageInput

from test_ranking_features import DOCS, understand, write_log  # noqa: E402  (shared tiny log fixture)


@pytest.fixture()
def model_file(tmp_path):
    log = tmp_path / "imp.jsonl"
    write_log(log)
    rows, state = replay_impressions(log, understand, DOCS)
    fb = FeatureBuilder().fit([r.context for r in rows])
    schema = InputSchema(fb.dense_names(), {k: len(v) for k, v in fb.vocabs.items()}, ["ctr", "cvr"], 10)
    torch.manual_seed(0)
    model = build_model("mmoe", schema, embed_dim=4, n_experts=2, expert_hidden=[8], tower_hidden=[4])
    path = save_model(tmp_path / "ranker.pt", model, fb, {"test": {"auc_ctr": np.float64(0.7)}})   # numpy scalars are stored as floats
    state.save(tmp_path / "ranker.state.json")
    return path, tmp_path / "ranker.state.json"


def stage_input(n: int) -> StageInput:
    q = UnderstoodQuery("a0 song", "a0 song", [QueryToken("a0", 1.0, "artist"), QueryToken("song", 1.0, "song")],
                        [Entity("a0", "artist", 0, 1), Entity("song", "song", 1, 2)])
    cands = []
    for i in range(n):
        vid = f"v{i % 4}"
        c = Candidate(vid if i < 4 else f"{vid}-{i}", {"text": 10.0 + i % 7}, 1.0, dict(DOCS[vid]), {"bm25": (i % 10) / 10},
                      1 - i / (n + 1), i % 4)
        cands.append(c)
    return StageInput(q, cands, "u1", 1785800000.0)


def test_scores_500_candidates_in_one_batch_and_logs_the_vector(model_file):
    path, state = model_file
    r = LearnedRanker({"model_path": str(path), "feature_store": str(state)})
    out = r.run(stage_input(520))
    assert len(out.candidates) == 520 and not out.warnings
    assert out.explain["scored"] == 500
    head = out.candidates[:500]
    assert all(a.rank_score >= b.rank_score for a, b in zip(head, head[1:]))
    names = r.builder.dense_names()
    snap = head[0].rank_features
    assert set(names) <= set(snap) and {f"sparse.{k}" for k in r.builder.vocabs} <= set(snap)
    # the logged vector is exactly what the model scored: rescoring it gives the same score
    dense = torch.tensor([[snap[n] for n in names]], dtype=torch.float32)
    sparse = torch.tensor([[int(snap[f"sparse.{k}"]) for k in r.builder.vocabs]])
    with torch.no_grad():
        o = r.model({"dense": dense, "sparse": sparse})
    p = torch.sigmoid(o["ctr"]) * torch.sigmoid(o["cvr"])
    assert abs(float(p) - head[0].rank_score) < 1e-4
    tail_ids = [c.video_id for c in out.candidates[500:]]
    assert tail_ids == [c.video_id for c in stage_input(520).candidates[500:]]   # unscored tail keeps its order


def test_schema_mismatch_is_refused_with_a_clear_error(model_file, tmp_path):
    path, _ = model_file
    obj = torch.load(path, weights_only=True)
    obj["schema"]["dense"] = obj["schema"]["dense"][:-1]          # a model trained without one feature
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(SchemaMismatch, match=r"dense features differ.*x_query_artist_in_video"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(SchemaMismatch):
        LearnedRanker({"model_path": str(tmp_path / "bad.pt")})
    obj2 = torch.load(path, weights_only=True)
    obj2["features"]["rate_method"] = "all"                          # features computed another way
    torch.save(obj2, tmp_path / "bad2.pt")
    with pytest.raises(SchemaMismatch, match="Retrain"):
        load_model(tmp_path / "bad2.pt")
    model, fb, _ = load_model(path)
    other = InputSchema(["x"], {}, ["ctr"])
    with pytest.raises(SchemaMismatch, match="expected schema"):
        load_model(path, expected=other)


def test_missing_model_keeps_previous_order_with_warning(tmp_path):
    r = LearnedRanker({"model_path": str(tmp_path / "nope.pt")})
    inp = stage_input(12)
    before = [c.video_id for c in inp.candidates]
    out = r.run(inp)
    assert [c.video_id for c in out.candidates] == before
    assert out.warnings and "not found" in out.warnings[0] and "previous stage's order" in out.warnings[0]


def test_position_does_not_change_serving_scores(model_file):
    path, state = model_file
    r = LearnedRanker({"model_path": str(path), "feature_store": str(state)})
    ctx = r.contexts(stage_input(8), stage_input(8).candidates)
    dense, sparse = r.builder.transform(ctx)
    b = {"dense": torch.from_numpy(dense), "sparse": torch.from_numpy(sparse)}
    with torch.no_grad():
        s1 = r.model({**b, "position": torch.ones(8, dtype=torch.long)})["ctr"]
        s9 = r.model({**b, "position": torch.full((8,), 9)})["ctr"]
    assert torch.equal(s1, s9)


def test_learned_ranker_is_selectable_from_config(tmp_path):
    from search.pipeline import STAGES

    r = STAGES["ranking"]["learned"]({"model_path": str(tmp_path / "missing.pt")}, None)
    assert r.name == "learned" and "not found" in r.load_warning
