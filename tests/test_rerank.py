"""Rerank stage (ranking/rerank.py): DPP over the ranker's list, rule scattering, operator
interventions from a file (pin, boost, block, reload, bad files), and the stage wired into
the pipeline as impl "dpp"."""
import json
import os
import time

import numpy as np
import pytest

from query_understanding import UnderstoodQuery
from ranking.interventions import InterventionError, Interventions, load_rules
from ranking.rerank import DiversityRerank, DppParams, scatter, song_key, uploader_key
from search.contracts import Candidate, StageInput
from search.embedder import LsaEmbedder

from conftest import pipeline_config


def doc(vid: str, title: list[str], song: str | None, uploader: str) -> dict:
    f = {"title": title, "artists": [], "songs": [song] if song else [], "tags": [], "song_kw": [song] if song else [],
         "uploader_raw": uploader, "title_raw": [" ".join(title)]}
    return {"video_id": vid, "title": " ".join(title), "uploader": uploader, "_fields": f}


# Three near-identical uploads of one song by one uploader, then varied videos.
DOCS = [doc("a1", ["晴天", "live", "现场"], "晴天", "up1"),
        doc("a2", ["晴天", "live", "现场", "高清"], "晴天", "up1"),
        doc("a3", ["晴天", "live", "现场", "完整"], "晴天", "up1"),
        doc("b1", ["七里香", "mv"], "七里香", "up2"),
        doc("c1", ["稻香", "翻唱", "吉他"], "稻香", "up3"),
        doc("d1", ["夜曲", "钢琴", "教学"], "夜曲", "up4"),
        doc("e1", ["告白气球", "舞蹈"], "告白气球", "up5"),
        doc("f1", ["晴天", "钢琴"], "晴天", "up6")]
SCORES = [1.0, 0.98, 0.96, 0.7, 0.6, 0.5, 0.45, 0.4]


@pytest.fixture(scope="module")
def embedder():
    corpus = [d["_fields"]["title"] for d in DOCS] * 3 + [["live", "mv"], ["钢琴", "吉他"], ["翻唱", "舞蹈"]]
    return LsaEmbedder.fit(corpus, dims=6)


def cands() -> list[Candidate]:
    return [Candidate(d["video_id"], doc=d, rank_score=s) for d, s in zip(DOCS, SCORES)]


def stage_input(cs, q="周杰伦 晴天") -> StageInput:
    return StageInput(UnderstoodQuery(raw=q, normalized=q), cs)


def ids(out) -> list[str]:
    return [c.video_id for c in out.candidates]


def test_dpp_demotes_near_duplicates_and_keeps_everyone(embedder):
    st = DiversityRerank({"theta": 0.5, "k": 5, "top_n": 8, "scatter_window": 0}, embedder)
    out = st.run(stage_input(cands()))
    got = ids(out)
    assert sorted(got) == sorted(d["video_id"] for d in DOCS)  # nothing lost
    assert got[0] == "a1"
    assert got.index("b1") < got.index("a2") and got.index("c1") < got.index("a3")
    # the 3 items not picked follow the 5 picks in the ranker's order
    picked = [c for c in out.candidates if c.explain["rerank"]["dpp"]["pick"]]
    assert len(picked) == 5 and [c.explain["rerank"]["dpp"]["pick"] for c in picked] == [1, 2, 3, 4, 5]
    rest = [c.video_id for c in out.candidates[5:]]
    assert rest == [v for v in [d["video_id"] for d in DOCS] if v in rest]
    first_dup = next(c for c in out.candidates if c.video_id == "a2")
    assert first_dup.explain["rerank"]["position_before"] == 2 and first_dup.explain["rerank"]["position_change"] < 0
    assert out.explain["dpp"]["ils@10_after"] < out.explain["dpp"]["ils@10_before"]


def test_theta_near_one_keeps_the_ranker_order(embedder):
    st = DiversityRerank({"theta": 0.999, "k": 8, "top_n": 8, "scatter_window": 0, "song_prior": 0, "uploader_prior": 0}, embedder)
    assert ids(st.run(stage_input(cands()))) == [d["video_id"] for d in DOCS]


def test_scatter_respects_the_window():
    keys = [("s1", "u1"), ("s1", "u2"), ("s2", "u1"), ("s3", "u3"), ("s4", "u4"), ("s1", "u5"), ("s5", "u6"), ("s6", "u7")]
    def clashes(i, placed, w):
        return any(keys[i][r] == keys[j][r] for j in placed[max(0, len(placed) - w + 1):] for r in (0, 1))

    for w in (2, 3, 4):
        perm, delays = scatter(keys, w)
        assert sorted(perm) == list(range(len(keys)))
        for i in range(len(perm)):
            if clashes(perm[i], perm[:i], w):
                # only when the rule cannot be met: every item left would clash
                assert all(clashes(x, perm[:i], w) for x in perm[i:]), (w, perm, i)
        if w <= 3:
            assert not any(clashes(perm[i], perm[:i], w) for i in range(len(perm))), (w, perm)
    perm, delays = scatter(keys, 3)
    assert perm[:4] == [0, 3, 4, 1]   # 1 and 2 clash with 0 and are postponed, order otherwise kept
    assert delays[1] > 0 and delays[0] == 0
    # the rule cannot always be met: all from one uploader keeps the input order
    assert scatter([("x", "u")] * 4, 3)[0] == [0, 1, 2, 3]
    assert scatter(keys, 1)[0] == list(range(8))


def test_scatter_stage_song_and_uploader(embedder):
    st = DiversityRerank({"dpp": False, "scatter_window": 3}, embedder)
    out = st.run(stage_input(cands(), q="周杰伦"))
    assert out.explain["song_rules"] and out.explain["uploader_rules"]
    got = out.candidates
    for i in range(len(got)):
        for j in range(max(0, i - 2), i):
            if i < 5:  # the three a* and f1 share a song: after 5 positions the rule cannot hold
                assert song_key(got[i].doc) != song_key(got[j].doc)
                assert uploader_key(got[i].doc) != uploader_key(got[j].doc)
    assert out.explain["scatter"]["postponed"] > 0
    assert any("scatter" in c.explain["rerank"] for c in got)


def test_song_rules_off_when_the_query_names_a_song(embedder):
    from query_understanding import Entity

    q = UnderstoodQuery(raw="晴天", normalized="晴天", entities=[Entity("晴天", "song", 0, 1)])
    cs = [Candidate(d["video_id"], doc=d, rank_score=s) for d, s in zip(
        [doc("x1", ["晴天", "mv"], "晴天", "u1"), doc("x2", ["晴天", "live"], "晴天", "u2"), doc("x3", ["晴天", "cover"], "晴天", "u3"),
         doc("x4", ["七里香"], "七里香", "u4")], [1.0, 0.9, 0.8, 0.7])]
    auto = DiversityRerank({"dpp": False, "scatter_window": 3}, embedder)
    out = auto.run(StageInput(q, list(cs)))
    # the user asked for 晴天: three 晴天 videos by three uploaders stay on top
    assert ids(out) == ["x1", "x2", "x3", "x4"] and out.explain["song_rules"] is False
    always = DiversityRerank({"dpp": False, "scatter_window": 3, "song_diversity": "always"}, embedder)
    out = always.run(StageInput(q, list(cs)))
    assert ids(out)[:2] == ["x1", "x4"] and out.explain["song_rules"] is True


def test_uploader_rules_off_when_the_query_names_an_uploader(embedder):
    st = DiversityRerank({"dpp": False, "scatter_window": 3, "scatter_song": False}, embedder)
    out = st.run(stage_input(cands(), q="up1 现场"))
    # the user asked for up1's videos: they stay on top, together
    assert ids(out)[:3] == ["a1", "a2", "a3"] and out.explain["uploader_rules"] is False
    assert "up1" in out.explain["rules_off_because"]["uploader"]
    out = st.run(stage_input(cands(), q="现场"))
    assert ids(out)[:2] == ["a1", "b1"] and out.explain["uploader_rules"] is True


def write_rules(path, rules) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps({"rules": rules}, ensure_ascii=False), encoding="utf-8")
    else:
        lines = []
        for r in rules:
            lines.append("[[rules]]")
            lines.append(f'query = "{r["query"]}"')
            if "block" in r:
                lines.append("block = " + json.dumps(r["block"]))
            if "pin" in r:
                lines.append("pin = [" + ", ".join(f'{{video_id = "{p["video_id"]}", position = {p["position"]}}}' for p in r["pin"]) + "]")
            if "boost" in r:
                lines.append("boost = [" + ", ".join("{" + ", ".join(f'{k} = {json.dumps(v)}' for k, v in b.items()) + "}" for b in r["boost"]) + "]")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_interventions_pin_boost_block(tmp_path, embedder, suffix):
    path = tmp_path / f"ops{suffix}"
    # the rule is written in traditional characters + full width: matched after normalization
    write_rules(path, [{"query": "周杰倫　晴天", "block": ["a1"], "pin": [{"video_id": "e1", "position": 1}, {"video_id": "z9", "position": 3}],
                        "boost": [{"video_id": "f1", "multiply": 2.0}, {"video_id": "d1", "add": -1.0}]}])
    extra = {"z9": doc("z9", ["晴天", "纯享"], "晴天", "up9")}
    st = DiversityRerank({"dpp": False, "scatter_window": 0, "interventions": str(path)}, embedder,
                         fetch_docs=lambda vs: {v: extra[v] for v in vs if v in extra})
    out = st.run(stage_input(cands()))
    got = ids(out)
    assert "a1" not in got                               # blocked
    assert got[0] == "e1" and got[2] == "z9"             # pinned, z9 fetched although recall missed it
    assert got.index("f1") < got.index("b1")             # 0.4·2 = 0.8 > 0.7
    assert got[-1] == "d1"                               # 0.5 − 1 = −0.5: below everyone
    f1 = next(c for c in out.candidates if c.video_id == "f1")
    assert f1.explain["rerank"]["intervention"]["boost"]["score_after"] == pytest.approx(0.8)
    assert f1.rank_score == pytest.approx(0.8)
    e1 = out.candidates[0]
    assert e1.explain["rerank"]["intervention"]["pin"] == {"position": 1, "position_before": 6, "position_after": 1}
    ie = out.explain["interventions"]
    assert ie["matched"] and ie["blocked"] == ["a1"] and [p["video_id"] for p in ie["pinned"]] == ["e1", "z9"]
    assert len(ie["boosted"]) == 2
    # another query is untouched
    other = st.run(stage_input(cands(), q="七里香"))
    assert ids(other) == [d["video_id"] for d in DOCS] and not other.explain["interventions"]["matched"]


def test_interventions_applied_after_dpp_and_scatter(tmp_path, embedder):
    path = tmp_path / "ops.toml"
    write_rules(path, [{"query": "晴天", "pin": [{"video_id": "a3", "position": 2}]}])
    st = DiversityRerank({"theta": 0.5, "k": 8, "top_n": 8, "scatter_window": 3, "interventions": str(path)}, embedder)
    out = st.run(stage_input(cands(), q="晴天"))
    # DPP and scattering would push the duplicate a3 down; the operator's pin wins
    assert ids(out)[1] == "a3" and ids(out)[0] == "a1"


def test_intervention_file_reloads_on_change_and_keeps_rules_on_a_bad_edit(tmp_path, embedder):
    path = tmp_path / "ops.json"
    write_rules(path, [{"query": "晴天", "block": ["a1"]}])
    st = DiversityRerank({"dpp": False, "scatter_window": 0, "interventions": str(path)}, embedder)
    assert "a1" not in ids(st.run(stage_input(cands(), q="晴天")))
    write_rules(path, [{"query": "晴天", "block": ["b1"]}])
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    out = st.run(stage_input(cands(), q="晴天"))
    assert "a1" in ids(out) and "b1" not in ids(out)
    path.write_text("{not json", encoding="utf-8")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    out = st.run(stage_input(cands(), q="晴天"))
    assert "b1" not in ids(out)                                    # previous rules kept
    assert any("not reloaded" in w and "invalid JSON" in w for w in out.warnings)


@pytest.mark.parametrize("content,suffix,message", [
    ("{not json", ".json", "invalid JSON at line 1"),
    ('[[rules]]\nquery = "a"\npin = [{video_id = "v1", position = 0}]\n', ".toml", "rule 1 pin 1: position must be an integer >= 1"),
    ('[[rules]]\nquery = "a"\nboost = [{video_id = "v1", multiply = 2, add = 1}]\n', ".toml", "rule 1 boost 1"),
    ('[[rules]]\nquery = "a"\nblock = ["v1"]\n[[rules]]\nquery = "A"\n', ".toml", "rule 2: query 'A'"),
    ('[[rules]]\nquery = "a"\npinned = []\n', ".toml", "unknown keys ['pinned']"),
    ('[[rules]]\nquery = "a"\nblock = ["v1"]\npin = [{video_id = "v1", position = 1}]\n', ".toml", "both pinned and blocked"),
    ('rules = 3', ".toml", "'rules' must be a list"),
    ('[[rules]]\nquery = "a"\n', ".yaml", "must end in .toml or .json"),
    ('[[rules\n', ".toml", "invalid TOML"),
])
def test_bad_intervention_file_clear_error(tmp_path, content, suffix, message):
    path = tmp_path / f"ops{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InterventionError) as e:
        load_rules(path)
    assert message in str(e.value) and str(path) in str(e.value)
    with pytest.raises(InterventionError, match="not found"):
        Interventions(tmp_path / "missing.toml")


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="theta"):
        DppParams.from_dict({"theta": 1.0})
    with pytest.raises(ValueError, match="unknown keys"):
        DppParams.from_dict({"thetta": 0.5})


def test_pipeline_impl_dpp_end_to_end(pipeline, embedded_index, tmp_path):
    from search.pipeline import SearchPipeline, SearchRequest

    ref = pipeline.search(SearchRequest("周杰伦 晴天", size=30))   # the shared identity-rerank pipeline
    ref_ids = [c.video_id for c in ref.hits]
    assert len(ref_ids) >= 5
    ops = tmp_path / "ops.toml"
    ops.write_text(f'[[rules]]\nquery = "周杰伦 晴天"\npin = [{{video_id = "{ref_ids[4]}", position = 1}}]\nblock = ["{ref_ids[1]}"]\n',
                   encoding="utf-8")
    cfg = pipeline_config(embedded_index, rerank={"impl": "dpp", "params": {"theta": 0.6, "top_n": 50, "k": 20, "interventions": str(ops)}})
    p = SearchPipeline(cfg)
    try:
        res = p.search(SearchRequest("周杰伦 晴天", size=30, explain=True))
    finally:
        p.close()
    got = [c.video_id for c in res.hits]
    assert got[0] == ref_ids[4] and ref_ids[1] not in got
    assert res.stages["rerank"]["stage"] == "dpp" and res.stages["rerank"]["dpp"]["applied"]
    assert res.stages["rerank"]["interventions"]["pinned"][0]["video_id"] == ref_ids[4]
    assert all("position_after" in c.explain["rerank"] for c in res.hits)
    assert not [w for w in res.warnings if "rerank" in w]


def test_eval_diversity_metrics(embedder):
    from ranking.rerank import doc_vectors
    from search.evaluation import diversity_at

    hits = cands()
    m = diversity_at(hits, embedder)
    assert m["distinct_songs@10"] == 5          # a1 a2 a3 f1 are all 晴天
    assert m["distinct_uploaders@10"] == 6      # a1 a2 a3 share up1
    v = doc_vectors(embedder, [c.doc for c in hits])
    pairs = [float(v[i] @ v[j] / (np.linalg.norm(v[i]) * np.linalg.norm(v[j]))) for i in range(8) for j in range(8) if i < j]
    assert m["ILS@10"] == pytest.approx(sum(pairs) / len(pairs), rel=1e-5)
    assert diversity_at(hits[:1], embedder)["ILS@10"] is None


def test_eval_search_reports_diversity(pipeline):
    from search.evaluation import evaluate_search

    rep = evaluate_search(pipeline, {"q1": "周杰伦 晴天"}, {"q1": {"t-qingtian-mv": 3}}, progress=False)
    s = rep.summary()
    assert 1 <= s["distinct_songs@10"] <= 10 and 1 <= s["distinct_uploaders@10"] <= 10
    assert -1.0 <= s["ILS@10"] <= 1.0
