"""The simulated search logs have the shape click models predict, keep the truth apart,
and are deterministic."""
import ast
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from search.evaluation import _ndcg, evaluate_search, load_judgements
from search.pipeline import SearchRequest
from search.simulate import load_sim_config, simulate
from search.simulate.queries import HomophoneTable, NoiseRates, add_noise

ROOT = Path(__file__).resolve().parents[1]
SPEC_FIELDS = {"request_id", "ts", "user_id", "query", "video_id", "position", "clicked", "play_time_s", "liked", "shared", "followed"}


def _read(p):
    return [json.loads(line) for line in open(p, encoding="utf-8")]


@pytest.fixture(scope="module")
def sim(catalog_path, pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "out"
    cfg = load_sim_config(None, {"days": 14, "users": 400, "seed": 3, "workers": 0, "split": {"validation_days": 2, "test_days": 2}})
    summ = simulate(catalog_path, out, pipeline, cfg, progress=False)
    return out, summ, cfg


def test_logs_follow_the_spec_schema_and_split_by_time(sim):
    out, summ, cfg = sim
    imps = _read(out / "logs/impressions.jsonl")
    assert len(imps) == summ.impressions > 2000
    assert SPEC_FIELDS <= set(imps[0]) and "features" in imps[0]
    ts = [r["ts"] for r in imps]
    by_split = defaultdict(list)
    for r in imps:
        by_split[r["split"]].append(r["ts"])
    assert set(by_split) == {"train", "validation", "test"}
    assert max(by_split["train"]) < min(by_split["validation"]) <= max(by_split["validation"]) < min(by_split["test"])
    assert ts == sorted(ts) or sum(1 for a, b in zip(ts, ts[1:]) if b < a) < len(ts) * 0.01


def test_ctr_falls_with_position(sim):
    _, summ, _ = sim
    c = summ.ctr_by_position
    assert c[0] > c[1] > c[3]
    assert sum(c[:3]) / 3 > 2 * sum(c[-3:]) / 3


def test_higher_grades_get_more_clicks_and_longer_plays(sim):
    out, summ, _ = sim
    g = summ.ctr_by_grade
    assert g[3] > g[2] > g[0]
    grades = {(t["query"], t["video_id"]): t["grade"] for t in _read(out / "truth/grades.jsonl")}
    from query_understanding import normalize

    per_grade = defaultdict(list)
    for r in _read(out / "logs/impressions.jsonl"):
        if r["clicked"]:
            gr = next((grades[k] for k in [(normalize(r["query"]), r["video_id"])] if k in grades), None)
            if gr is not None:
                per_grade[gr].append(r["play_time_s"])
    mean = {k: sum(v) / len(v) for k, v in per_grade.items() if len(v) >= 5}
    assert mean[3] > mean[min(mean)]


def test_noise_at_configured_rates():
    from search.kb import load_kb

    rng = random.Random(1)
    table = HomophoneTable(load_kb())
    rates = NoiseRates(homophone=0.2, keyboard=0.0, full_pinyin=0.1, initials=0.0, traditional=0.1, spacing=0.0)
    kinds = defaultdict(int)
    n = 4000
    for _ in range(n):
        _, k = add_noise("周杰伦 晴天", rates, table, rng)
        kinds[k] += 1
    assert abs(kinds["homophone"] / n - 0.2) < 0.03
    assert abs(kinds["full_pinyin"] / n - 0.1) < 0.02
    assert abs(kinds["traditional"] / n - 0.1) < 0.02
    assert add_noise("周杰伦", NoiseRates(full_pinyin=1.0, homophone=0, keyboard=0, initials=0, traditional=0, spacing=0), table, rng)[0] == "zhoujielun"


def test_typo_queries_and_reformulations_exist(sim):
    out, summ, cfg = sim
    assert 0.05 < summ.noisy_queries / summ.requests < 0.25
    sessions = _read(out / "logs/sessions.jsonl")
    reform = [s for s in sessions if len(s["queries"]) > 1]
    assert reform, "sessions should contain reformulations"
    assert any(s["queries"][0]["noise"] and not s["queries"][1]["noise"] for s in reform)


def test_t1_and_realtime_counters_come_from_earlier_logs_only(sim):
    from datetime import datetime

    out, _, cfg = sim
    imps = _read(out / "logs/impressions.jsonl")
    start = datetime.fromisoformat(cfg["start"]).timestamp()
    seen_before: dict[str, int] = defaultdict(int)
    today: dict[str, int] = defaultdict(int)
    current = None
    for r in imps:
        d = (r["ts"] - start) // 86400
        if d != current:
            for k, v in today.items():
                seen_before[k] += v
            today.clear()
            current = d
        f = r["features"]
        assert f["t1_video"]["impressions"] <= seen_before[r["video_id"]]
        assert f["rt_video"]["impressions"] <= today[r["video_id"]]
        today[r["video_id"]] += 1
    agg = _read(out / "aggregates/video_daily.jsonl")
    assert sum(a["impressions"] for a in agg) == len(imps)
    assert sum(a["clicks"] for a in agg) == sum(r["clicked"] for r in imps)


def test_judged_sets_are_stratified(sim):
    out, _, _ = sim
    qs = _read(out / "judged/queries.jsonl")
    assert len({q["intent"] for q in qs}) >= 6
    qrels = _read(out / "judged/qrels.jsonl")
    assert {r["grade"] for r in qrels} == {0, 1, 2, 3}
    pairs = _read(out / "judged/relevance_pairs.jsonl")
    assert 0 < len(pairs) <= 2000 and {r["grade"] for r in pairs} == {0, 1, 2, 3}


def test_oracle_ranker_beats_the_baseline(sim, pipeline):
    out, _, _ = sim
    queries, qrels = load_judgements(out / "judged/queries.jsonl", out / "judged/qrels.jsonl")
    base = evaluate_search(pipeline, queries, qrels, progress=False)
    oracle = []
    for qid, judged in qrels.items():
        hits = [c.video_id for c in pipeline.search(SearchRequest(queries[qid], size=100)).hits]
        ranked = sorted(hits, key=lambda v: -judged.get(v, 0))
        oracle.append(_ndcg(ranked, [0.0] * len(ranked), judged, 10))
    assert sum(oracle) / len(oracle) > base.ndcg10


def test_deterministic_under_a_seed(catalog_path, pipeline, tmp_path):
    cfg = load_sim_config(None, {"days": 3, "users": 80, "seed": 11, "workers": 0, "split": {"validation_days": 1, "test_days": 1}})
    simulate(catalog_path, tmp_path / "a", pipeline, cfg, progress=False)
    # Serving through worker processes in batches gives exactly the same logs.
    par = load_sim_config(None, {**cfg, "workers": 2, "prefetch_min": 1})
    simulate(catalog_path, tmp_path / "b", pipeline, par, progress=False)
    for rel in ("logs/impressions.jsonl", "judged/qrels.jsonl", "truth/grades.jsonl"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_a_failed_simulation_leaves_no_partial_output(catalog_path, pipeline, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = pipeline.search

    def flaky(req):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("boom")
        return real(req)

    monkeypatch.setattr(pipeline, "search", flaky)
    cfg = load_sim_config(None, {"days": 2, "users": 50, "seed": 1, "workers": 0, "split": {"validation_days": 0, "test_days": 1}})
    with pytest.raises(RuntimeError):
        simulate(catalog_path, tmp_path / "out", pipeline, cfg, progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))


# --- the truth stays with the simulator -------------------------------------------------

TRUTH_MARKERS = ("simulate.truth", "catalog_truth", "truth/grades", "truth/users", "truth/intents", "load_catalog_truth")
ALLOWED = {"search/simulate", "search/demo_catalog.py", "tests"}


def test_no_training_or_serving_code_references_the_truth():
    offenders = []
    for py in ROOT.rglob("*.py"):
        rel = py.relative_to(ROOT).as_posix()
        if rel.startswith((".venv", "var/", "build/")) or any(rel.startswith(a) for a in ALLOWED):
            continue
        text = py.read_text(encoding="utf-8")
        if any(m in text for m in TRUTH_MARKERS):
            offenders.append(rel)
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and "simulate.truth" in node.module:
                offenders.append(rel)
    assert not offenders, f"these files reach for the simulator's truth: {offenders}"


def test_serving_and_indexing_never_open_truth_files(catalog_path, tmp_path):
    """Audit hook: build an index and answer queries; no file under a truth/ folder is opened."""
    from search.config import load_config
    from search.indexer import build_index
    from search.pipeline import SearchPipeline

    opened = []

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            p = str(args[0])
            if "/truth/" in p or p.endswith("/truth"):
                opened.append(p)

    sys.addaudithook(hook)
    build_index(catalog_path, tmp_path / "ix", show_progress=False)
    p = SearchPipeline(load_config(None, {"engine": {"index_dir": str(tmp_path / "ix")}}))
    for q in ("周杰伦 晴天", "hebe", "会不会"):
        p.search(SearchRequest(q))
    p.close()
    assert not opened, opened
