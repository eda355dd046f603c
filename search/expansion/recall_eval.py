"""Recall@K per route and for the merged union, against text recall alone, on a judged set.

Each route runs with quota = max K (so a route's top K is what it would contribute if its
quota were K), the merge keeps every candidate (max_candidates = sum of quotas), and for
each query Recall@K = |relevant (grade ≥ min_grade) in the top K| / |relevant|, averaged
over queries with at least one relevant video. Slices: every judged `intent`, plus
`descriptive` (mood + intent queries: "适合跑步的歌") and `cross_language` (the query's
script — latin vs Chinese — differs from most of its relevant videos' titles: `hebe` →
田馥甄, `向夜晚奔去` → `夜に駆ける`)."""
from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

import numpy as np

from search.contracts import RecallInput
from search.recall import Recall, RecallConfig, RouteConfig

_LATIN = re.compile(r"[A-Za-z]")
_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def script(text: str) -> str:
    lat, cjk = len(_LATIN.findall(text)), len(_CJK.findall(text))
    return "latin" if lat > cjk else "cjk" if cjk else "other"


def recall_at(ranked: list[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def evaluate_recall(pipeline, queries: dict[str, str], qrels: dict[str, dict[str, int]], intents: dict[str, str],
                    ks: tuple[int, ...] = (100, 500), min_grade: int = 2, seen_queries: set[str] | None = None) -> dict[str, Any]:
    """`seen_queries`: normalized queries of the models' training log; queries outside it
    form the `unseen_in_log` slice (what a learned route does for queries it never saw)."""
    base: Recall = pipeline.recall
    kmax = max(ks)
    c = base.config
    cfg = RecallConfig(RouteConfig(c.text.enabled, kmax), RouteConfig(c.rewrite.enabled, kmax),
                       RouteConfig(c.vector.enabled and base.embedder is not None, kmax), 3 * kmax)
    rec = Recall(base.engine, base.cfg, base.tokenizer, base.embedder, base.rewrites, cfg)
    routes = [r for r in ("text", "rewrite", "vector") if getattr(cfg, r).enabled]
    systems = routes + [f"text+{r}" for r in routes if r != "text"] + (["union"] if len(routes) > 1 else [])
    now = pipeline.reference_ts or time.time()
    # a combination at budget K gives each route its configured share of K (the serving
    # quotas: text 300 / rewrite 100 / vector 100 → 60/20/20 %), then dedupes
    shares = {r: getattr(c, r).quota for r in routes}
    per_query: dict[str, dict[str, float]] = {}
    titles_needed = {v for q in qrels.values() for v, g in q.items() if g >= min_grade}
    docs = pipeline.engine.get_docs(sorted(titles_needed))
    slices: dict[str, list[str]] = defaultdict(list)
    ms: list[float] = []
    for qid, text in queries.items():
        rel = {v for v, g in qrels.get(qid, {}).items() if g >= min_grade}
        if not rel:
            continue
        t0 = time.perf_counter()
        uq = pipeline.understand(text)
        out = rec.run(RecallInput(uq, now, None))
        ms.append((time.perf_counter() - t0) * 1000)
        by_route: dict[str, list[str]] = {}
        for r in routes:
            hits = [(cd.video_id, cd.sources[r]) for cd in out.candidates if r in cd.sources]
            by_route[r] = [v for v, _ in sorted(hits, key=lambda x: -x[1])]
        ranked = {r: by_route[r] for r in routes}
        combos = {f"text+{r}": ["text", r] for r in routes if r != "text" and "text" in routes}
        if "union" in systems:
            combos["union"] = routes
        row = {}
        for s in systems:
            for k in ks:
                if s in combos:
                    row[f"{s}@{k}"] = recall_at(_quota_union(by_route, combos[s], shares, k), rel, k)
                else:
                    row[f"{s}@{k}"] = recall_at(ranked[s], rel, k)
        per_query[qid] = row
        intent = intents.get(qid, "unknown")
        slices["all"].append(qid)
        slices[intent].append(qid)
        if intent in ("mood", "intent"):
            slices["descriptive"].append(qid)
        if seen_queries is not None and uq.normalized not in seen_queries:
            slices["unseen_in_log"].append(qid)
        scripts = [script(docs[v].get("title", "")) for v in rel if v in docs]
        # majority script of the relevant titles; ties broken by name so the slice is stable
        if scripts and script(text) != sorted(set(scripts), key=lambda x: (-scripts.count(x), x))[0]:
            slices["cross_language"].append(qid)
    table: dict[str, dict[str, Any]] = {}
    for name, qids in sorted(slices.items(), key=lambda x: (x[0] != "all", x[0])):
        table[name] = {"queries": len(qids)} | {key: round(float(np.mean([per_query[q][key] for q in qids])), 4)
                                                 for key in per_query[qids[0]]}
    return {"systems": systems, "ks": list(ks), "min_grade": min_grade, "slices": table,
            "embedder": getattr(base.embedder, "name", None), "rewrite_table": base.rewrites.version,
            "recall_ms_p50": round(float(np.percentile(ms, 50)), 2) if ms else None}


def _quota_union(by_route: dict[str, list[str]], routes: list[str], shares: dict[str, int], k: int) -> list[str]:
    """Per-route quotas out of a budget of k, deduplicated; a route that fills less than its
    quota leaves the rest to the others (as the serving merge's candidate set would grow)."""
    total = sum(shares[r] for r in routes) or 1
    quota = {r: int(round(k * shares[r] / total)) for r in routes}
    out: dict[str, None] = {}
    for r in routes:
        for v in by_route.get(r, [])[: quota[r]]:
            out[v] = None
    # spare budget: continue each route past its quota, in route order, until k
    for r in routes:
        for v in by_route.get(r, [])[quota[r]:]:
            if len(out) >= k:
                break
            out[v] = None
    return list(out)[:k]


def format_table(res: dict[str, Any]) -> str:
    ks = res["ks"]
    cols = [f"{s}@{k}" for k in ks for s in res["systems"]]
    head = f"{'slice':<16}{'n':>5} " + " ".join(f"{c:>14}" for c in cols)
    lines = [head, "-" * len(head)]
    for name, row in res["slices"].items():
        lines.append(f"{name:<16}{row['queries']:>5} " + " ".join(f"{row.get(c, float('nan')):>14.4f}" for c in cols))
    return "\n".join(lines)
