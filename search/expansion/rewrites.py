"""Query-rewrite candidates, offline (seed 002 §3.1: rewrite recall).

Sources, each candidate remembering where it came from:
- `kb`: knowledge-base aliases, English names, romanizations → canonical names (facts; these
  go into the table without the discriminator, as before this work).
- `session`: same-session reformulations — a query with no click followed, in the same
  session, by a different query that got a click (`mingrizhizi` → `明日之子`).
- `embedding`: nearest neighbours of the query among the log's queries by two-tower query
  vectors (queries whose users click the same kind of video end up close).
- `click_graph`: word synonyms mined from the click graph (relevance/click_graph.py), when
  that model is given.

The discriminator (discriminator.py) scores non-KB candidates; the chosen ones are written
into a versioned rewrite table (same format as the index bundle's `rewrite_table.json`, which
`search.recall.RewriteTable` looks up online — no model on the request path)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from query_understanding.normalize import normalize


@dataclass
class RewriteCandidate:
    query: str
    rewrite: str
    sources: dict[str, float] = field(default_factory=dict)   # source → support (count / cosine / weight)
    score: float | None = None                               # discriminator probability


def _add(out: dict[tuple[str, str], RewriteCandidate], q: str, r: str, source: str, support: float) -> None:
    if not q or not r or q == r:
        return
    c = out.setdefault((q, r), RewriteCandidate(q, r))
    c.sources[source] = max(c.sources.get(source, 0.0), float(support))


def kb_pairs() -> list[tuple[str, str]]:
    from search.kb import alias_rewrite_table, load_kb

    return [(a, c) for a, cs in alias_rewrite_table(load_kb()).items() for c in cs]


def session_reformulations(sessions: str | Path, impressions: str | Path | None = None, split: str | None = "train",
                           min_count: int = 1) -> Counter[tuple[str, str]]:
    """(earlier query, later query) pairs within a session where the later one was clicked and
    the earlier was not. Without impressions, every consecutive distinct pair counts."""
    clicked_req: set[str] | None = None
    split_of: dict[str, str] = {}
    if impressions:
        clicked_req = set()
        with open(impressions, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                split_of.setdefault(r["session_id"], r.get("split", ""))
                if r.get("clicked"):
                    clicked_req.add(r["request_id"])
    out: Counter[tuple[str, str]] = Counter()
    with open(sessions, encoding="utf-8") as f:
        for line in f:
            s = json.loads(line)
            if split and split_of and split_of.get(s["session_id"]) != split:
                continue
            qs = s.get("queries", [])
            for a, b in zip(qs, qs[1:]):
                na, nb = normalize(a.get("query", "")), normalize(b.get("query", ""))
                if not na or not nb or na == nb:
                    continue
                if clicked_req is not None and (a["request_id"] in clicked_req or b["request_id"] not in clicked_req):
                    continue
                out[(na, nb)] += 1
    return Counter({k: v for k, v in out.items() if v >= min_count})


def log_query_counts(impressions: str | Path, split: str = "train") -> Counter[str]:
    seen: set[str] = set()
    c: Counter[str] = Counter()
    with open(impressions, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("split") != split or r["request_id"] in seen:
                continue
            seen.add(r["request_id"])
            q = normalize(r.get("query", ""))
            if q:
                c[q] += 1
    return c


def embedding_neighbours(embedder, queries: list[str], k: int = 3, min_cosine: float = 0.85) -> list[tuple[str, str, float]]:
    """Each query's nearest other queries by query-tower cosine (exact, chunked)."""
    if len(queries) < 2:
        return []
    v = embedder.encode_queries(queries)
    out = []
    for i in range(0, len(queries), 1024):
        s = v[i : i + 1024] @ v.T
        for r in range(s.shape[0]):
            s[r, i + r] = -1.0
        top = np.argpartition(-s, k, axis=1)[:, :k]
        for r, row in enumerate(top):
            for j in row[np.argsort(-s[r, row])]:
                if s[r, j] >= min_cosine:
                    out.append((queries[i + r], queries[j], float(s[r, j])))
    return out


def click_graph_synonyms(model_path: str | Path, top: int = 2000, **params: Any) -> list[tuple[str, str, float]]:
    """Query-side word associations of the click graph (relevance/click_graph.py); `params`
    go to its `synonym_candidates` (min_queries, stop_top, …)."""
    from relevance.click_graph import ClickGraphModel, synonym_candidates

    m = ClickGraphModel.load(model_path)  # a missing or foreign file is a clear error, not silence
    return [(w, c, wt) for w, c, wt, _ in synonym_candidates(m, top=top, **params)]


def gather_candidates(sessions: str | Path | None, impressions: str | Path | None, embedder=None,
                      click_graph: str | Path | None = None, min_query_count: int = 2, max_queries: int = 20000,
                      log=print, click_graph_params: dict[str, Any] | None = None) -> dict[tuple[str, str], RewriteCandidate]:
    out: dict[tuple[str, str], RewriteCandidate] = {}
    for a, c in kb_pairs():
        _add(out, a, c, "kb", 1.0)
    log(f"candidates: kb {len(out)}")
    if sessions:
        ses = session_reformulations(sessions, impressions)
        for (a, b), n in ses.items():
            _add(out, a, b, "session", n)
        log(f"candidates: session reformulations {len(ses)}")
    if embedder is not None and impressions:
        counts = log_query_counts(impressions)
        qs = [q for q, n in counts.most_common(max_queries) if n >= min_query_count]
        nb = embedding_neighbours(embedder, qs)
        for a, b, cos in nb:
            _add(out, a, b, "embedding", round(cos, 4))
        log(f"candidates: embedding neighbours {len(nb)} over {len(qs)} log queries")
    if click_graph:
        syn = click_graph_synonyms(click_graph, **(click_graph_params or {}))
        for a, b, w in syn:
            _add(out, a, b, "click_graph", w)
        log(f"candidates: click-graph synonyms {len(syn)}")
    return out


def write_rewrite_table(path: str | Path, chosen: Iterable[RewriteCandidate], meta: dict[str, Any], per_query: int = 3) -> str:
    """Versioned table: {"version", "source", "built_at", "meta", "rewrites": {query: [rewrite, …]},
    "details": {query: [{rewrite, sources, score}]}}; written to a temp file then renamed."""
    by_q: dict[str, list[RewriteCandidate]] = defaultdict(list)
    for c in chosen:
        by_q[c.query].append(c)
    rewrites: dict[str, list[str]] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    for q, cs in sorted(by_q.items()):
        # KB facts first, then by discriminator score
        cs.sort(key=lambda c: (0 if "kb" in c.sources else 1, -(c.score or 0.0)))
        rewrites[q] = [c.rewrite for c in cs[:per_query]]
        details[q] = [{"rewrite": c.rewrite, "sources": c.sources, "score": None if c.score is None else round(c.score, 4)}
                      for c in cs[:per_query]]
    digest = hashlib.sha1(json.dumps(rewrites, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:10]
    version = f"rw-{digest}-{datetime.now(timezone.utc).strftime('%Y%m%dt%H%M%S')}"
    obj = {"version": version, "source": "kb aliases + discriminator-chosen session/embedding/click-graph rewrites",
           "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "meta": meta,
           "rewrites": rewrites, "details": details}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
    os.replace(tmp, path)
    return version
