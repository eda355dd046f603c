"""Label quality: inter-annotator agreement, gold accuracy, disagreements to adjudicate.

- Cohen's kappa (scikit-learn `cohen_kappa_score`): for every pair of annotators on the
  pairs both graded, unweighted and quadratic-weighted (the grades are ordinal), and for
  each annotator against the majority of the others on the same pairs.
- Fleiss' kappa (statsmodels `fleiss_kappa`) over the pairs that have the batch's most
  common number of grades (Fleiss needs the same number of raters per item; ≥ 2).
- The binary view: good + fair-good (grade ≥ 2) vs fair-fair + bad — the same cut the
  evaluation uses for "relevant" — as percent agreement and as kappa.
- Gold: accuracy (exact and binary) and mean absolute error of each annotator on the
  hidden gold pairs.

Agreement is computed on the batch's regular pairs; gold pairs are measured by accuracy.
A kappa that is undefined (e.g. every grade the same, so chance agreement is 1) is None.
"""
from __future__ import annotations

import itertools
import math
import statistics
import warnings
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

import numpy as np

from .grades import relevant

CATEGORIES = [0, 1, 2, 3]


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)


def cohen(a: list[int], b: list[int], weights: str | None = None, labels: list[int] | None = None) -> float | None:
    """Cohen's kappa between two raters' labels on the same items (None if undefined)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b) or len(a) < 2:
        return None
    if len(set(a) | set(b)) < 2:  # both raters used one category: chance agreement is 1
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(cohen_kappa_score(a, b, labels=labels, weights=weights))


def fleiss(ratings: list[list[int]], categories: list[int] | None = None) -> tuple[float | None, int]:
    """Fleiss' kappa of items rated by the same number of raters. `ratings` holds each
    item's list of labels; items whose count differs from the most common count (≥ 2) are
    left out. Returns (kappa, items used)."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    cats = categories or sorted({x for r in ratings for x in r})
    counts = Counter(len(r) for r in ratings if len(r) >= 2)
    if not counts or len(cats) < 1:
        return None, 0
    n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    items = [r for r in ratings if len(r) == n]
    idx = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(items), len(cats)))
    for i, r in enumerate(items):
        for x in r:
            table[i, idx[x]] += 1
    p_cat = table.sum(0) / table.sum()
    if len(items) < 2 or math.isclose(float((p_cat ** 2).sum()), 1.0):
        return None, len(items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(fleiss_kappa(table, method="fleiss")), len(items)


def percent_agreement(ratings: list[list[int]]) -> float | None:
    """Mean over items of the share of agreeing rater pairs (Fleiss' P̄)."""
    vals = []
    for r in ratings:
        if len(r) < 2:
            continue
        c = Counter(r)
        n = len(r)
        vals.append(sum(k * (k - 1) for k in c.values()) / (n * (n - 1)))
    return round(sum(vals) / len(vals), 4) if vals else None


def majority(grades: list[int]) -> tuple[int | None, bool]:
    """(majority grade, tie?). A tie is broken by the lower median (the conservative choice)."""
    if not grades:
        return None, False
    c = Counter(grades).most_common()
    top = [g for g, k in c if k == c[0][1]]
    if len(top) == 1:
        return top[0], False
    return int(statistics.median_low(sorted(grades))), True


def _pace_seconds(times: list[str]) -> float | None:
    """Median seconds between a user's consecutive labels (gaps over 10 minutes are breaks)."""
    ts = sorted(datetime.fromisoformat(t) for t in times)
    gaps = [(b - a).total_seconds() for a, b in zip(ts, ts[1:])]
    gaps = [g for g in gaps if 0 <= g <= 600]
    return round(statistics.median(gaps), 1) if gaps else None


def batch_quality(labels: list[dict[str, Any]], tasks: list[dict[str, Any]] | None = None,
                  adjudications: dict[int, dict[str, Any]] | None = None, history: list[dict[str, Any]] | None = None
                  ) -> dict[str, Any]:
    """Agreement and gold statistics of one batch from its current labels
    (`AnnotationStore.labels_for_batch`), its tasks and adjudications."""
    adjudications = adjudications or {}
    by_pair: dict[int, dict[str, int]] = defaultdict(dict)
    info: dict[int, dict[str, Any]] = {}
    gold_rows = []
    for r in labels:
        if r["is_gold"]:
            gold_rows.append(r)
            continue
        by_pair[r["pair_id"]][r["annotator"]] = int(r["grade"])
        info[r["pair_id"]] = r
    annotators = sorted({r["annotator"] for r in labels} | {t["annotator"] for t in (tasks or [])})
    ratings = [list(v.values()) for v in by_pair.values()]
    bin_ratings = [[int(relevant(g)) for g in r] for r in ratings]
    fk, fk_n = fleiss(ratings, CATEGORIES)
    fkb, fkb_n = fleiss(bin_ratings, [0, 1])
    out: dict[str, Any] = {
        "pairs_labelled": len(by_pair),
        "pairs_with_2plus": sum(1 for r in ratings if len(r) >= 2),
        "fleiss_kappa": fk, "fleiss_items": fk_n,
        "fleiss_kappa_binary": fkb, "fleiss_binary_items": fkb_n,
        "percent_agreement": percent_agreement(ratings),
        "percent_agreement_binary": percent_agreement(bin_ratings),
    }
    # pairwise Cohen
    pairwise = []
    for a, b in itertools.combinations(annotators, 2):
        shared = [p for p, v in by_pair.items() if a in v and b in v]
        ga = [by_pair[p][a] for p in shared]
        gb = [by_pair[p][b] for p in shared]
        pairwise.append({
            "a": a, "b": b, "shared": len(shared),
            "cohen_kappa": cohen(ga, gb, labels=CATEGORIES),
            "cohen_kappa_quadratic": cohen(ga, gb, weights="quadratic", labels=CATEGORIES),
            "cohen_kappa_binary": cohen([int(relevant(x)) for x in ga], [int(relevant(x)) for x in gb], labels=[0, 1]),
            "agreement": round(sum(x == y for x, y in zip(ga, gb)) / len(shared), 4) if shared else None,
            "agreement_binary": round(sum(relevant(x) == relevant(y) for x, y in zip(ga, gb)) / len(shared), 4) if shared else None,
        })
    out["pairwise"] = pairwise
    # per annotator: vs the others' majority, gold, progress, pace, grade distribution
    per: dict[str, dict[str, Any]] = {}
    times: dict[str, list[str]] = defaultdict(list)
    for r in (history if history is not None else labels):
        if r.get("action", "grade") in ("grade", "skip"):
            times[r["annotator"]].append(r["created_at"])
    for u in annotators:
        mine, maj = [], []
        for p, v in by_pair.items():
            if u not in v:
                continue
            others = [g for name, g in v.items() if name != u]
            if not others:
                continue
            m, tie = majority(others)
            if tie:
                continue
            mine.append(v[u])
            maj.append(m)
        golds = [r for r in gold_rows if r["annotator"] == u]
        dist = Counter(int(r["grade"]) for r in labels if r["annotator"] == u and not r["is_gold"])
        t_all = [t for t in (tasks or []) if t["annotator"] == u]
        per[u] = {
            "annotator": u,
            "assigned": len(t_all), "done": sum(t["status"] == "done" for t in t_all),
            "skipped": sum(t["status"] == "skipped" for t in t_all), "pending": sum(t["status"] == "pending" for t in t_all),
            "vs_majority_items": len(mine),
            "vs_majority_kappa": cohen(mine, maj, labels=CATEGORIES),
            "vs_majority_kappa_binary": cohen([int(relevant(x)) for x in mine], [int(relevant(x)) for x in maj], labels=[0, 1]),
            "vs_majority_agreement": round(sum(x == y for x, y in zip(mine, maj)) / len(mine), 4) if mine else None,
            "gold_items": len(golds),
            "gold_accuracy": round(sum(int(r["grade"]) == int(r["gold_grade"]) for r in golds) / len(golds), 4) if golds else None,
            "gold_accuracy_binary": round(sum(relevant(r["grade"]) == relevant(r["gold_grade"]) for r in golds) / len(golds), 4)
            if golds else None,
            "gold_mae": round(sum(abs(int(r["grade"]) - int(r["gold_grade"])) for r in golds) / len(golds), 4) if golds else None,
            "grade_distribution": {str(g): dist.get(g, 0) for g in (3, 2, 1, 0)},
            "median_seconds_per_label": _pace_seconds(times.get(u, [])),
        }
    out["annotators"] = list(per.values())
    out["gold_items"] = len(gold_rows)
    out["gold_accuracy"] = round(sum(int(r["grade"]) == int(r["gold_grade"]) for r in gold_rows) / len(gold_rows), 4) if gold_rows else None
    out["gold_accuracy_binary"] = (round(sum(relevant(r["grade"]) == relevant(r["gold_grade"]) for r in gold_rows) / len(gold_rows), 4)
                                   if gold_rows else None)
    out["disagreements"] = len(disagreements(labels, adjudications))
    out["adjudicated"] = len(adjudications)
    return out


def disagreements(labels: list[dict[str, Any]], adjudications: dict[int, dict[str, Any]] | None = None,
                  pairs: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Regular pairs whose annotators gave different grades, the widest spread (and a
    relevant-vs-not split) first, each with every vote and any adjudication."""
    adjudications = adjudications or {}
    votes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in labels:
        if not r["is_gold"]:
            votes[r["pair_id"]].append(r)
    out = []
    for pid, vs in votes.items():
        grades = [int(v["grade"]) for v in vs]
        if len(vs) < 2 or len(set(grades)) < 2:
            continue
        m, tie = majority(grades)
        first = vs[0]
        out.append({
            "pair_id": pid, "qid": first["qid"], "query": first["query"], "video_id": first["video_id"],
            "video": (pairs or {}).get(pid, {}).get("video"),
            "votes": [{"annotator": v["annotator"], "grade": int(v["grade"]), "note": v.get("note") or "",
                       "term_match": v.get("term_match"), "semantic": v.get("semantic"), "intent": v.get("intent"),
                       "created_at": v["created_at"]} for v in sorted(vs, key=lambda x: x["annotator"])],
            "spread": max(grades) - min(grades), "binary_split": len({relevant(g) for g in grades}) > 1,
            "majority": m, "tie": tie, "adjudication": adjudications.get(pid),
        })
    out.sort(key=lambda d: (d["adjudication"] is not None, -d["spread"], not d["binary_split"], d["query"], d["video_id"]))
    return out
