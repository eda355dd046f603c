"""Online metrics of simulated worlds served by different pipelines — an A/B test in simulation.

Run the same world (same seed, users, intents and noise) once per arm with `mvsearch simulate
--config ARM.toml`, then `mvsearch eval online --runs formula=DIR_A mmoe=DIR_B`. Per arm, from
its logs and its hidden truth (this module lives beside the simulator, so it may read truth):
- CTR and valid plays per request (what a learned ranker optimizes);
- satisfied requests (a valid play of a grade ≥ 2 video) and sessions that ended satisfied;
- the hidden grade of what was shown at the top (position 1, mean of top 3) and the share of
  grade-0 results on the page (what graded relevance measures).
Each figure is the mean over simulated days with a 95% interval from the day-to-day spread,
since arms diverge after the first different page (users reformulate, counters move).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from query_understanding.normalize import normalize

METRICS = [("ctr", "CTR"), ("valid_plays_per_request", "valid plays / request"), ("satisfied_requests", "satisfied requests"),
           ("satisfied_sessions", "satisfied sessions"), ("grade_at_1", "hidden grade @1"), ("grade_top3", "hidden grade, top 3"),
           ("grade0_share", "grade-0 share @10")]


def _jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def day_metrics(run: str | Path) -> dict[str, dict[int, float]]:
    """metric → day → value, for one simulated run."""
    run = Path(run)
    grades = {(g["query"], g["video_id"]): int(g["grade"]) for g in _jsonl(run / "truth" / "grades.jsonl")}
    clean_of = {r["typed"]: r["clean"] for r in _jsonl(run / "truth" / "query_noise.jsonl")}
    summ = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    t0 = datetime.fromisoformat(summ["config"]["start"]).timestamp()
    # sessions: the clean query of each request (reformulations change it), satisfaction
    clean_q: dict[str, str] = {}
    sat_req: dict[int, list[float]] = defaultdict(list)
    sat_ses: dict[int, list[float]] = defaultdict(list)
    for s in _jsonl(run / "logs" / "sessions.jsonl"):
        for q in s["queries"]:
            clean_q[q["request_id"]] = normalize(clean_of.get(q["query"], q["query"]))
            sat_req[s["day"]].append(float(q["satisfied"]))
        sat_ses[s["day"]].append(float(any(q["satisfied"] for q in s["queries"])))
    imp = defaultdict(float)
    clk = defaultdict(float)
    vp = defaultdict(float)
    reqs: dict[int, set[str]] = defaultdict(set)
    g1: dict[int, list[float]] = defaultdict(list)
    g3: dict[int, list[float]] = defaultdict(list)
    g0: dict[int, list[float]] = defaultdict(list)
    page: dict[str, list[tuple[int, int]]] = defaultdict(list)
    day_of: dict[str, int] = {}
    for r in _jsonl(run / "logs" / "impressions.jsonl"):
        d = int((r["ts"] - t0) // 86400)
        imp[d] += 1
        clk[d] += r["clicked"]
        vp[d] += r["valid_play"]
        reqs[d].add(r["request_id"])
        day_of[r["request_id"]] = d
        q = clean_q.get(r["request_id"], normalize(r["query"]))
        page[r["request_id"]].append((r["position"], grades.get((q, r["video_id"]), 0)))
    for rid, shown in page.items():
        d = day_of[rid]
        gs = [g for _, g in sorted(shown)]
        g1[d].append(gs[0])
        g3[d].append(float(np.mean(gs[:3])))
        g0[d].append(sum(g == 0 for g in gs[:10]) / len(gs[:10]))
    days = sorted(imp)
    return {"ctr": {d: clk[d] / imp[d] for d in days}, "valid_plays_per_request": {d: vp[d] / len(reqs[d]) for d in days},
            "satisfied_requests": {d: float(np.mean(sat_req[d])) for d in days if sat_req[d]},
            "satisfied_sessions": {d: float(np.mean(sat_ses[d])) for d in days if sat_ses[d]},
            "grade_at_1": {d: float(np.mean(g1[d])) for d in days}, "grade_top3": {d: float(np.mean(g3[d])) for d in days},
            "grade0_share": {d: float(np.mean(g0[d])) for d in days}}


def compare_online(runs: dict[str, str | Path], skip_days: int = 0) -> dict[str, Any]:
    """Per arm and metric: mean over days (after `skip_days` of warm-up) and the 95% half-width;
    and each arm's per-day difference to the first arm (paired by day: same users, same intents)."""
    per = {name: day_metrics(path) for name, path in runs.items()}
    base = next(iter(per))
    out: dict[str, Any] = {"runs": {k: str(v) for k, v in runs.items()}, "skip_days": skip_days, "arms": {}}
    for name, m in per.items():
        arm: dict[str, Any] = {}
        for key, _ in METRICS:
            days = [d for d in sorted(m[key]) if d >= skip_days]
            v = np.array([m[key][d] for d in days])
            arm[key] = {"mean": float(v.mean()), "ci95": float(1.96 * v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0}
            if name != base:
                both = [d for d in days if d in per[base][key]]
                diff = np.array([m[key][d] - per[base][key][d] for d in both])
                arm[key]["diff"] = float(diff.mean())
                arm[key]["diff_ci95"] = float(1.96 * diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        out["arms"][name] = arm
    return out


def online_table(res: dict[str, Any]) -> str:
    arms = list(res["arms"])
    lines = ["| metric | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for key, label in METRICS:
        cells = []
        for i, a in enumerate(arms):
            m = res["arms"][a][key]
            cell = f"{m['mean']:.4f} ± {m['ci95']:.4f}"
            if i > 0:
                cell += f" (Δ {m['diff']:+.4f} ± {m['diff_ci95']:.4f})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
