"""Serving latency of the ranking models: one batch of N candidates (default 500) on one core.

    python benchmarks/bench_ranking.py [--model var/models/ranker.pt] [--n 500] [--reps 50] [--runs 5]

Times, per architecture: the model forward alone; the features alone; "score" = features +
forward, what it costs to score one request's candidates (the issue's < 5 ms target); and the
whole learned stage (score + logged snapshots + explain + sort). The ranker serves with a
populated behaviour state (T+1 and real-time counters for every candidate, a user with history),
as in production, not an empty one. Without --model, every architecture is built
with the feature schema of this code (vocabulary sizes as on the simulated logs) and random
weights — latency does not depend on the weights. Prints a table and writes
benchmarks/results/bench_ranking.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from query_understanding import Entity, QueryToken, UnderstoodQuery  # noqa: E402
from ranking.compare import COMPARE_RUNS  # noqa: E402
from ranking.feature_store import BehaviourState  # noqa: E402
from ranking.features import SPARSE_FIELDS, FeatureBuilder, FrequencyVocab, UserProfile  # noqa: E402
from ranking.learned import LearnedRanker, save_model  # noqa: E402
from ranking.models import InputSchema, build_model  # noqa: E402
from search.contracts import Candidate, StageInput  # noqa: E402

VOCAB = {"video_id": 2000, "uploader": 1400, "artist": 900, "category": 11, "language": 8, "resolution": 6, "grade": 5,
         "query_kind": 8, "top_intent": 2}


def candidates(n: int, rng: np.random.Generator) -> StageInput:
    q = UnderstoodQuery("周杰伦 晴天", "周杰伦 晴天", [QueryToken("周杰伦", 1.0, "artist"), QueryToken("晴天", 1.0, "song")],
                        [Entity("周杰伦", "artist", 0, 1), Entity("晴天", "song", 1, 2)])
    cands = []
    for i in range(n):
        doc = {"video_id": f"v{i:07d}", "artists": [f"a{int(rng.integers(0, 900))}"], "uploader": f"u{int(rng.integers(0, 3000))}",
               "category": ["mv", "live", "cover", "dance"][i % 4], "language": "zh", "duration_s": float(rng.integers(60, 600)),
               "resolution": [480, 720, 1080][i % 3], "publish_time": "2023-05-01T00:00:00+08:00",
               "_fields": {"publish_ts": 1682870400},     # as the doc store returns records
               "play_count": int(rng.integers(0, 10**7)), "like_count": int(rng.integers(0, 10**5))}
        rel = {k: float(rng.random()) for k in ("bm25", "coverage", "title_coverage", "entity_match", "closeness", "field_coverage")}
        cands.append(Candidate(doc["video_id"], {"text": float(rng.random() * 100)}, 1.0, doc, rel, float(rng.random()), int(i % 4)))
    return StageInput(q, cands, "u000001", 1786000000.0)


def behaviour_state(n: int, rng: np.random.Generator) -> BehaviourState:
    st = BehaviourState()
    for i in range(n):
        imp = float(rng.integers(0, 5000))
        clk = float(rng.integers(0, imp // 5 + 1))
        st.t1[f"v{i:07d}"] = [imp, clk, float(rng.integers(0, clk + 1)), float(rng.integers(0, clk // 3 + 1))]
        st.rt[f"v{i:07d}"] = [imp / 30, clk / 30, 0.0, 0.0]
    st.users["u000001"] = UserProfile(40, 25, 14, 1785900000.0, {f"a{j}": int(rng.integers(1, 9)) for j in range(30)},
                                      {"zh": 20, "en": 5}, {"mv": 12, "live": 9, "cover": 4})
    return st


def measure(label: str, path: str, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    r = LearnedRanker({"model_path": path, "num_threads": 1})
    r.state = behaviour_state(args.n, rng)
    inp = candidates(args.n, rng)
    ctx = r.contexts(inp, inp.candidates)
    dense, sparse = r.builder.transform(ctx)
    batch = {"dense": torch.from_numpy(dense), "sparse": torch.from_numpy(sparse)}
    fwd, feat, score, stage = [], [], [], []
    with torch.no_grad():
        for i in range(args.reps + 5):
            t = time.perf_counter(); r.model(batch); t1 = time.perf_counter()
            r.builder.transform(ctx); t2 = time.perf_counter()
            r.score(r.contexts(inp, inp.candidates)); t3 = time.perf_counter()
            r.run(candidates(args.n, np.random.default_rng(i)) if i == 0 else inp); t4 = time.perf_counter()
            if i >= 5:
                fwd.append((t1 - t) * 1000); feat.append((t2 - t1) * 1000); score.append((t3 - t2) * 1000)
                stage.append((t4 - t3) * 1000)
    return {"model": label, "arch": r.model.name, "n": args.n, "params": sum(p.numel() for p in r.model.parameters()),
            "forward_ms_median": round(statistics.median(fwd), 3), "forward_ms_p95": round(float(np.percentile(fwd, 95)), 3),
            "forward_ms_min": round(min(fwd), 3), "features_ms_median": round(statistics.median(feat), 2),
            "score_ms_median": round(statistics.median(score), 2), "score_ms_p95": round(float(np.percentile(score, 95)), 2),
            "stage_ms_median": round(statistics.median(stage), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a trained model file (mvsearch ranking train); default: every architecture, random weights")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole measurement; report the median of the run medians and their range")
    ap.add_argument("--out", default="benchmarks/results/bench_ranking.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    builder = FeatureBuilder()
    builder.vocabs = {k: FrequencyVocab({str(i): i + 1 for i in range(VOCAB[k] - 1)}, SPARSE_FIELDS[k]) for k in SPARSE_FIELDS}
    tmp = Path(tempfile.mkdtemp(prefix="bench_ranking."))
    files = []
    if args.model:
        files.append(("model file", args.model))
    else:
        schema = InputSchema(builder.dense_names(), {k: len(v) for k, v in builder.vocabs.items()}, ["ctr", "cvr"], 10)
        done = set()
        for spec in COMPARE_RUNS:
            if spec["model"] in done or spec["model"] == "single_task":
                continue
            done.add(spec["model"])
            s = schema if spec["model"] != "deepfm" else InputSchema(schema.dense, schema.sparse, ["ctr"], 10)
            files.append((spec["label"], str(save_model(tmp / f"{spec['model']}.pt", build_model(spec["model"], s, **spec["params"]), builder))))
    # --runs K repeats the whole measurement, models interleaved, and reports the median of the
    # per-run medians and their range: on a shared VM one run's medians move by ~1 ms.
    runs: dict[str, list[dict]] = {label: [] for label, _ in files}
    for _ in range(args.runs):
        for label, path in files:
            runs[label].append(measure(label, path, args, rng))
    rows = []
    for label, per in runs.items():
        row = dict(per[0])
        for k in [k for k in row if k.endswith(("_median", "_p95", "_min"))]:
            row[k] = round(statistics.median(x[k] for x in per), 3)
        row["score_ms_median_per_run"] = [x["score_ms_median"] for x in per]
        rows.append(row)
    print(f"{'model':13s} {'arch':14s} {'params':>8s} {'forward ms (median/p95/min)':>30s} {'features ms':>12s} {'score ms (median/p95)':>22s} {'whole stage ms':>15s}   ({args.n} candidates, 1 thread)")
    for x in rows:
        print(f"{x['model']:13s} {x['arch']:14s} {x['params']:8d} {x['forward_ms_median']:>10.3f} / {x['forward_ms_p95']:<7.3f}/ {x['forward_ms_min']:<7.3f}"
              f"{x['features_ms_median']:12.2f} {x['score_ms_median']:>12.2f} / {x['score_ms_p95']:<7.2f} {x['stage_ms_median']:15.2f}"
              + (f"   score median per run {min(x['score_ms_median_per_run']):.2f}–{max(x['score_ms_median_per_run']):.2f}" if args.runs > 1 else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpf = out.with_suffix(f".tmp{os.getpid()}")
    tmpf.write_text(json.dumps({"n": args.n, "reps": args.reps, "threads": 1, "runs": args.runs, "load_average": os.getloadavg()[0], "rows": rows}, indent=1), encoding="utf-8")
    os.replace(tmpf, out)
    print(f"→ {out}   (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: medians rise with it, min ≈ unloaded)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
