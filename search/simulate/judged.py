"""Judged sets sampled from the hidden truth: `judged/queries.jsonl` + `judged/qrels.jsonl`
for `mvsearch eval search` (queries stratified over intent types, each judged on a pool of
the pipeline's top results, truth-related videos and term-matching distractors), and
`judged/relevance_pairs.jsonl`, a 2,000-pair graded sample for relevance AUC."""
from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

from query_understanding.normalize import normalize_doc_text

from .truth import Judge, QueryIntent

QUERIES_PER_INTENT = 40
POOL_TOP = 50
POOL_RELATED = 30
POOL_DISTRACTORS = 15
RELEVANCE_PAIRS = 2000


def write_judged_sets(w, pipeline, judge: Judge, intents_seen: dict[str, dict[str, Any]], videos: dict[str, dict[str, Any]],
                      truth: dict[str, dict[str, Any]], cfg: dict[str, Any], rng: random.Random) -> None:
    by_kind: dict[str, list[str]] = defaultdict(list)
    for q, it in sorted(intents_seen.items()):
        by_kind[it["kind"]].append(q)
    chosen: list[str] = []
    for kind in sorted(by_kind):
        qs = by_kind[kind]
        chosen += rng.sample(qs, k=min(QUERIES_PER_INTENT, len(qs)))
    # Indexes for pooling: videos by related entity and by title text.
    by_person: dict[str, list[str]] = defaultdict(list)
    by_song: dict[str, list[str]] = defaultdict(list)
    for vid, t in truth.items():
        for p in set(t.get("performers", [])) | set(t.get("original_artists", [])):
            by_person[p].append(vid)
        if t.get("song"):
            by_song[t["song"]].append(vid)
    titles = [(vid, normalize_doc_text(v.get("title", ""))) for vid, v in videos.items()]
    qrels: list[dict[str, Any]] = []
    with open(w.path("judged/queries.jsonl"), "w", encoding="utf-8") as qf:
        for n, q in enumerate(chosen):
            it = intents_seen[q]
            intent = QueryIntent.from_dict(it)
            qid = f"q{n:04d}"
            qf.write(json.dumps({"qid": qid, "query": it["query"], "intent": intent.kind}, ensure_ascii=False) + "\n")
            pool: list[str] = [c.video_id for c in pipeline.search(_req(it["query"], POOL_TOP)).hits]
            rel = list(dict.fromkeys(by_person.get(intent.artist, []) + by_song.get(intent.song, [])))
            rng.shuffle(rel)
            pool += rel[:POOL_RELATED]
            core = [normalize_doc_text(t) for t in intent.surface_terms if len(t) >= 2]
            distract = [vid for vid, t in titles if core and any(c in t for c in core)]
            rng.shuffle(distract)
            pool += distract[:POOL_DISTRACTORS]
            for vid in dict.fromkeys(pool):
                qrels.append({"qid": qid, "query": it["query"], "video_id": vid, "intent": intent.kind,
                              "grade": judge.grade(intent, videos[vid], truth[vid])})
    with open(w.path("judged/qrels.jsonl"), "w", encoding="utf-8") as f:
        for r in qrels:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    # Graded sample for AUC: every grade represented, then random up to the target size.
    by_grade: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in qrels:
        by_grade[r["grade"]].append(r)
    sample: list[dict[str, Any]] = []
    per = RELEVANCE_PAIRS // 4
    for g in sorted(by_grade):
        rs = by_grade[g]
        sample += rng.sample(rs, k=min(per, len(rs)))
    rest = [r for r in qrels if r not in sample]
    sample += rng.sample(rest, k=min(max(0, RELEVANCE_PAIRS - len(sample)), len(rest)))
    with open(w.path("judged/relevance_pairs.jsonl"), "w", encoding="utf-8") as f:
        for r in sorted(sample, key=lambda r: (r["qid"], r["video_id"])):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _req(q: str, size: int):
    from search.pipeline import SearchRequest

    return SearchRequest(q, None, 1, size)
