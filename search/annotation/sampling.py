"""Where labelling pairs come from and how a batch samples them.

Sources (each yields `PairSpec`s with a video snapshot and per-pair metadata):
- `from_search`   run queries through the live `SearchPipeline`, take the top-k hits
                  (queries given, or sampled from the catalog's artists/songs via the KB:
                  `sample_queries`);
- `from_logs`     an impressions JSONL in the SPEC's search-log schema; per (query, video)
                  impressions, clicks and a smoothed CTR, cut into high/medium/low tiers;
- `from_jsonl`    uploaded `{query, video_id[, qid][, grade]}` lines (grade required for gold).

Strategies (`select`): `search`/`upload` (everything, or a seeded random sample of n),
`logs` (stratified by CTR tier), `intent` (stratified by the query's intent type,
`intent_type`), `disagreement` (the pairs where two relevance scorers disagree most:
`score_disagreement`). Gold pairs are mixed in by `mix_gold`.

Malformed input lines are reported with their line number and skipped, never silently
dropped (`SourceReport`).
"""
from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .grades import VALID_GRADES
from .store import PairSpec

STRATEGIES = ("search", "logs", "upload", "disagreement", "intent")

VIDEO_FIELDS = ("video_id", "title", "description", "tags", "artists", "songs", "uploader", "category", "language",
                "duration_s", "resolution", "publish_time", "play_count")

# Version and descriptive words: one vocabulary with query understanding.
from query_understanding.vocabulary import DESCRIPTIVE_WORDS, VERSION_WORDS  # noqa: E402

INTENT_TYPES = ("artist", "song", "artist_song", "version", "show", "descriptive", "other")
CTR_TIERS = ("high", "medium", "low")


@dataclass
class SourceReport:
    """What a source read: lines kept, and problems by line number."""
    name: str
    lines: int = 0
    kept: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error(self, line: int, msg: str) -> None:
        self.errors.append(f"{self.name}: line {line}: {msg}")

    def summary(self) -> str:
        s = f"{self.name}: {self.lines} lines, {self.kept} kept"
        if self.errors:
            s += f", {len(self.errors)} skipped (" + "; ".join(self.errors[:5]) + (" …" if len(self.errors) > 5 else "") + ")"
        if self.notes:
            s += "; " + "; ".join(self.notes)
        return s


def video_snapshot(doc: dict[str, Any]) -> dict[str, Any]:
    """What annotators see of a video (the stored record, without the tokenized fields)."""
    out = {k: doc.get(k) for k in VIDEO_FIELDS if k in doc}
    out.setdefault("title", "")
    for k in ("tags", "artists", "songs"):
        v = out.get(k)
        out[k] = [str(x) for x in v] if isinstance(v, list) else ([] if v in (None, "") else [str(v)])
    return out


def _read_text(src: Any) -> str:
    """`src` is a path (str or Path), the content (bytes) or a file object."""
    if isinstance(src, (bytes, bytearray)):
        return bytes(src).decode("utf-8-sig", errors="replace")
    if isinstance(src, (str, Path)):
        return Path(src).read_text(encoding="utf-8-sig")
    data = src.read()
    return data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data


def _iter_jsonl(src: Any, report: SourceReport) -> Iterable[tuple[int, dict[str, Any]]]:
    for no, line in enumerate(_read_text(src).splitlines(), 1):
        if not line.strip():
            continue
        report.lines += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            report.error(no, f"invalid JSON ({e.msg})")
            continue
        if not isinstance(rec, dict):
            report.error(no, "not a JSON object")
            continue
        yield no, rec


def _bool(v: Any) -> bool:
    if v is None or isinstance(v, bool):
        return bool(v)
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "t", "y"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "f", "n", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def _text(v: Any, max_len: int = 500) -> str:
    s = "" if v is None else str(v)
    return s.strip()[:max_len]


def _lookup_docs(pipeline: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    return pipeline.engine.get_docs(ids) if pipeline is not None and ids else {}


# --- sources ---------------------------------------------------------------------------------------

def from_jsonl(src: Any, pipeline: Any = None, *, gold: bool = False, name: str = "pairs") -> tuple[list[PairSpec], SourceReport]:
    """Uploaded pairs `{query, video_id[, qid][, grade]}`. A line may carry its own `video`
    record; otherwise the video must be in the pipeline's catalog. Gold files need grades."""
    report = SourceReport(name)
    raw: list[tuple[int, dict[str, Any]]] = []
    for no, rec in _iter_jsonl(src, report):
        q, vid = _text(rec.get("query")), _text(rec.get("video_id"), 128)
        if not q or not vid:
            report.error(no, "needs non-empty 'query' and 'video_id'")
            continue
        if gold:
            try:
                g = int(rec.get("grade"))
            except (TypeError, ValueError):
                g = -1
            if g not in VALID_GRADES or str(rec.get("grade")).strip() not in {"0", "1", "2", "3"}:
                report.error(no, "gold lines need 'grade' 0, 1, 2 or 3")
                continue
        raw.append((no, rec))
    docs = _lookup_docs(pipeline, [_text(r.get("video_id"), 128) for _, r in raw if not isinstance(r.get("video"), dict)])
    out: list[PairSpec] = []
    seen: set[tuple[str, str]] = set()
    for no, rec in raw:
        q, vid = _text(rec.get("query")), _text(rec.get("video_id"), 128)
        if (q, vid) in seen:
            report.error(no, f"duplicate pair ({q}, {vid})")
            continue
        if isinstance(rec.get("video"), dict):
            video = video_snapshot({**rec["video"], "video_id": vid})
        elif vid in docs:
            video = video_snapshot(docs[vid])
        else:
            report.error(no, f"video {vid!r} is not in the catalog" + ("" if pipeline is not None else " (no index given)"))
            continue
        seen.add((q, vid))
        meta = {"source": name, "line": no}
        out.append(PairSpec(q, vid, video, qid=_text(rec.get("qid"), 64) or None, stratum=_text(rec.get("stratum"), 64),
                            meta=meta, is_gold=gold, gold_grade=int(rec["grade"]) if gold else None))
        report.kept += 1
    return out, report


def read_impressions(src: Any, report: SourceReport | None = None) -> tuple[dict[tuple[str, str], dict[str, Any]], SourceReport]:
    """Aggregate an impressions log (SPEC search-log schema) per (query, video_id):
    impressions, clicks, mean position, valid plays (the log's `valid_play` flag when
    present, else play_time_s ≥ 30 s)."""
    report = report or SourceReport("logs")
    agg: dict[tuple[str, str], dict[str, Any]] = {}
    for no, rec in _iter_jsonl(src, report):
        q, vid = _text(rec.get("query")), _text(rec.get("video_id"), 128)
        if not q or not vid:
            report.error(no, "needs non-empty 'query' and 'video_id'")
            continue
        try:
            pos = int(rec.get("position") or 0)
            clicked = _bool(rec.get("clicked"))
            play = float(rec.get("play_time_s") or 0.0)
        except (TypeError, ValueError) as e:
            report.error(no, f"bad field value ({e})")
            continue
        a = agg.setdefault((q, vid), {"impressions": 0, "clicks": 0, "pos_sum": 0, "valid_plays": 0, "users": set()})
        a["impressions"] += 1
        a["clicks"] += int(clicked)
        a["pos_sum"] += pos
        # the log's own valid-play flag if it has one (SPEC rule), else play_time_s ≥ 30 s
        valid = _bool(rec["valid_play"]) if "valid_play" in rec else play >= 30.0
        a["valid_plays"] += int(clicked and valid)
        if rec.get("user_id") is not None:
            a["users"].add(str(rec.get("user_id")))
        report.kept += 1
    return agg, report


def from_logs(src: Any, pipeline: Any, *, min_impressions: int = 3, prior_strength: float = 10.0
              ) -> tuple[list[PairSpec], SourceReport]:
    """(query, video) pairs seen in the logs with at least `min_impressions` impressions,
    each with its CTR tier. CTR is smoothed towards the log's overall CTR
    ((clicks + m·ctr₀) / (impressions + m), m = `prior_strength`) and cut at the
    global tertiles: top third `high`, middle `medium`, bottom `low`."""
    agg, report = read_impressions(src)
    total_i = sum(a["impressions"] for a in agg.values())
    ctr0 = (sum(a["clicks"] for a in agg.values()) / total_i) if total_i else 0.0
    keep = {k: a for k, a in agg.items() if a["impressions"] >= min_impressions}
    dropped = len(agg) - len(keep)
    if dropped:
        report.notes.append(f"{dropped} (query, video) pairs have fewer than {min_impressions} impressions and were left out")
    docs = _lookup_docs(pipeline, sorted({vid for _, vid in keep}))
    missing = sum(1 for _, vid in keep if vid not in docs)
    stats = []
    for (q, vid), a in keep.items():
        if vid in docs:
            sm = (a["clicks"] + prior_strength * ctr0) / (a["impressions"] + prior_strength)
            stats.append(((q, vid), a, sm))
    ctrs = sorted(s for _, _, s in stats)
    lo = ctrs[len(ctrs) // 3] if ctrs else 0.0
    hi = ctrs[(2 * len(ctrs)) // 3] if ctrs else 0.0
    out: list[PairSpec] = []
    for (q, vid), a, sm in sorted(stats, key=lambda x: (x[0][0], -x[2], x[0][1])):
        tier = "high" if sm >= hi and sm > lo else ("low" if sm < lo else "medium")
        meta = {"source": "logs", "impressions": a["impressions"], "clicks": a["clicks"], "ctr": round(a["clicks"] / a["impressions"], 4),
                "ctr_smoothed": round(sm, 4), "mean_position": round(a["pos_sum"] / a["impressions"], 2),
                "valid_plays": a["valid_plays"], "users": len(a["users"]), "ctr_tier": tier}
        out.append(PairSpec(q, vid, video_snapshot(docs[vid]), stratum=tier, meta=meta))
    if missing:
        report.notes.append(f"{missing} pairs name videos that are not in the catalog and were left out")
    return out, report


def sample_queries(pipeline: Any, n: int, seed: int = 0, max_docs: int = 5000) -> list[str]:
    """Queries people type for this catalog: artists and songs found in a seeded sample of
    its videos, in the usual shapes (artist; song; artist + song; song + version word; an
    alias from the KB such as an English name or pinyin; artist + version word)."""
    from search.kb import load_kb

    rng = random.Random(seed)
    store = pipeline.engine.docstore
    ids = list(store.iter_ids())
    if len(ids) > max_docs:
        ids = rng.sample(ids, max_docs)
    artists: Counter[str] = Counter()
    artist_songs: Counter[tuple[str, str]] = Counter()
    songs: Counter[str] = Counter()
    for i in range(0, len(ids), 900):
        for d in store.get_many(ids[i : i + 900]).values():
            for a in d.get("artists") or []:
                artists[a] += 1
                for s in d.get("songs") or []:
                    artist_songs[(a, s)] += 1
            for s in d.get("songs") or []:
                songs[s] += 1
    if not artists and not songs:
        return []
    kb = load_kb()
    versions = ["live", "翻唱", "mv", "伴奏", "舞蹈", "吉他", "现场", "cover"]

    def pick(counter: Counter[Any]) -> Any:
        items = sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0])))
        return rng.choices([k for k, _ in items], weights=[math.sqrt(v) for _, v in items])[0]

    shapes = [("artist", 0.28), ("song", 0.2), ("artist_song", 0.25), ("song_version", 0.1), ("alias", 0.1), ("artist_version", 0.07)]
    out: dict[str, None] = {}
    for _ in range(n * 20):
        if len(out) >= n:
            break
        shape = rng.choices([s for s, _ in shapes], weights=[w for _, w in shapes])[0]
        q = ""
        if shape == "artist" and artists:
            q = pick(artists)
        elif shape == "song" and songs:
            q = pick(songs)
        elif shape == "artist_song" and artist_songs:
            a, s = pick(artist_songs)
            q = f"{a} {s}"
        elif shape == "song_version" and songs:
            q = f"{pick(songs)} {rng.choice(versions)}"
        elif shape == "alias" and artists:
            a = pick(artists)
            al = [x for x in kb.aliases_of(a) if len(x) >= 2]
            q = rng.choice(al) if al else a
        elif shape == "artist_version" and artists:
            q = f"{pick(artists)} {rng.choice(versions)}"
        if q and q not in out:
            out[q] = None
    return list(out)


def from_search(pipeline: Any, queries: list[str], top_k: int = 10) -> tuple[list[PairSpec], SourceReport]:
    """The top-k hits of each query from the live pipeline (with rank, relevance score,
    predicted grade and recall sources kept as metadata)."""
    from search.pipeline import SearchRequest

    report = SourceReport("search")
    out: list[PairSpec] = []
    seen: set[tuple[str, str]] = set()
    for no, q in enumerate(queries, 1):
        q = _text(q)
        report.lines += 1
        if not q:
            report.error(no, "empty query")
            continue
        res = pipeline.search(SearchRequest(q, page=1, size=max(1, int(top_k))))
        if not res.hits:
            report.error(no, f"query {q!r} returned no results")
            continue
        report.kept += 1
        for rank, c in enumerate(res.hits, 1):
            if (q, c.video_id) in seen:
                continue
            seen.add((q, c.video_id))
            meta = {"source": "search", "rank": rank, "relevance_score": round(float(c.relevance_score), 4),
                    "predicted_grade": c.grade, "rank_score": round(float(c.rank_score), 4), "sources": sorted(c.sources)}
            out.append(PairSpec(q, c.video_id, video_snapshot(c.doc or {"video_id": c.video_id}), meta=meta))
    return out, report


def read_queries(src: Any) -> list[str]:
    """A queries file (path, bytes or file object): one query a line, or JSONL with a
    "query" field. Duplicates are dropped, order kept."""
    out = []
    for line in _read_text(src).splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("{"):
            try:
                s = _text(json.loads(s).get("query"))
            except (json.JSONDecodeError, AttributeError):
                pass
        if s:
            out.append(s)
    return list(dict.fromkeys(out))


# --- query intent type ---------------------------------------------------------------------------

def intent_type(understood: Any) -> str:
    """A simple, documented rule on the query's tokens and their dictionary entity types:

    1. any version word (live, 翻唱, cover, mv, 伴奏, 舞蹈, 教学 …)   → `version`
    2. an artist token and a song token                               → `artist_song`
    3. an artist token                                                 → `artist`
    4. a song token                                                    → `song`
    5. a show token                                                    → `show`
    6. no entity, and a descriptive word (适合, 伤感, 跑步, 的歌 …)
       or at least three tokens                                         → `descriptive`
    7. anything else (one unknown word, an uploader, a typo)            → `other`
    """
    tokens = list(getattr(understood, "tokens", []) or [])
    terms = [str(t.text).lower() for t in tokens]
    types = {t.entity_type for t in tokens if getattr(t, "entity_type", None)}
    joined = "".join(terms)
    if any(t in VERSION_WORDS for t in terms):
        return "version"
    if "artist" in types and "song" in types:
        return "artist_song"
    if "artist" in types:
        return "artist"
    if "song" in types:
        return "song"
    if "show" in types:
        return "show"
    if any(t in DESCRIPTIVE_WORDS for t in terms) or any(w in joined for w in ("的歌", "歌曲", "音乐")) or len(terms) >= 3:
        return "descriptive"
    return "other"


def tag_intents(pipeline: Any, pairs: list[PairSpec]) -> None:
    cache: dict[str, str] = {}
    for p in pairs:
        if p.query not in cache:
            cache[p.query] = intent_type(pipeline.understand(p.query))
        p.meta["intent_type"] = cache[p.query]


# --- model disagreement --------------------------------------------------------------------------

def _rank_normalize(values: list[float]) -> list[float]:
    from scipy.stats import rankdata

    if len(values) <= 1:
        return [0.5] * len(values)
    r = rankdata(values, method="average")
    return [float((x - 1) / (len(values) - 1)) for x in r]


def score_disagreement(pipeline: Any, pairs: list[PairSpec], depth: int = 200) -> None:
    """Score every pair with the two relevance scorers available now and store, in
    `meta`: `text_relevance` (the pipeline's relevance stage), `vector_cosine` (cosine of
    the query's and the video's LSA vectors: video from its tokenized title, artists,
    songs and tags), their rank-normalized values over the pool and `disagreement` =
    |rank_text − rank_vector|. Pairs the pipeline did not return in its top `depth` are
    scored by the relevance stage directly (no BM25 part: they were not recalled)."""
    from search.contracts import Candidate, StageInput
    from search.pipeline import SearchRequest

    if pipeline.embedder is None:
        raise ValueError("the disagreement strategy needs the index's embedder (embedder.npz)")
    rel_stage = pipeline.stages.get("relevance")
    by_query: dict[str, list[PairSpec]] = defaultdict(list)
    for p in pairs:
        by_query[p.query].append(p)
    docs = pipeline.engine.get_docs(sorted({p.video_id for p in pairs}))
    for q, group in by_query.items():
        uq = pipeline.understand(q)
        qv = pipeline.embedder.encode_tokens(uq.terms)
        res = pipeline.search(SearchRequest(q, page=1, size=depth)) if uq.terms else None
        rel = {c.video_id: float(c.relevance_score) for c in (res.hits if res else [])}
        missing = [p for p in group if p.video_id not in rel and p.video_id in docs]
        if missing and rel_stage is not None and uq.terms:
            cands = [Candidate(p.video_id, doc=docs[p.video_id]) for p in missing]
            out = rel_stage.run(StageInput(uq, cands, None, 0.0, []))
            rel.update({c.video_id: float(c.relevance_score) for c in out.candidates})
        for p in group:
            d = docs.get(p.video_id)
            f = (d or {}).get("_fields", {})
            toks = list(f.get("title", [])) + list(f.get("artists", [])) + list(f.get("songs", [])) + list(f.get("tags", []))
            vv = pipeline.embedder.encode_tokens(toks) if toks else None
            cos = float((qv * vv).sum()) if vv is not None else 0.0
            p.meta["text_relevance"] = round(rel.get(p.video_id, 0.0), 4)
            p.meta["vector_cosine"] = round(cos, 4)
    ra = _rank_normalize([p.meta["text_relevance"] for p in pairs])
    rb = _rank_normalize([p.meta["vector_cosine"] for p in pairs])
    for p, a, b in zip(pairs, ra, rb):
        p.meta["rank_text"] = round(a, 4)
        p.meta["rank_vector"] = round(b, 4)
        p.meta["disagreement"] = round(abs(a - b), 4)
        p.meta["disagreement_side"] = "text>vector" if a > b else ("vector>text" if b > a else "tie")


# --- selection -------------------------------------------------------------------------------------

def stratified_sample(pairs: list[PairSpec], key: str, n: int | None, rng: random.Random) -> list[PairSpec]:
    """Equal shares per stratum (`meta[key]`); a stratum with too few pairs gives its rest
    to the others. Every pair's `stratum` is set to its stratum."""
    groups: dict[str, list[PairSpec]] = defaultdict(list)
    for p in pairs:
        s = str(p.meta.get(key, "")) or "unknown"
        p.stratum = s
        groups[s].append(p)
    if n is None or n >= len(pairs):
        return list(pairs)
    for g in groups.values():
        rng.shuffle(g)
    chosen: list[PairSpec] = []
    names = sorted(groups)
    remaining = n
    while remaining > 0 and any(groups[s] for s in names):
        live = [s for s in names if groups[s]]
        share = max(1, remaining // len(live))
        for s in live:
            take = groups[s][:share]
            groups[s] = groups[s][share:]
            chosen.extend(take)
            remaining -= len(take)
            if remaining <= 0:
                break
    return chosen[:n]


def select(strategy: str, pool: list[PairSpec], n: int | None, pipeline: Any = None, seed: int = 0) -> list[PairSpec]:
    """Pick the batch's pairs from a pool with the strategy (see module doc)."""
    rng = random.Random(seed)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy in ("search", "upload"):
        chosen = list(pool) if n is None or n >= len(pool) else rng.sample(pool, n)
    elif strategy == "logs":
        if not all("ctr_tier" in p.meta for p in pool):
            raise ValueError("the logs strategy needs pairs from a log (--logs)")
        chosen = stratified_sample(pool, "ctr_tier", n, rng)
    elif strategy == "intent":
        if pipeline is None:
            raise ValueError("the intent strategy needs the search index (query understanding)")
        tag_intents(pipeline, pool)
        chosen = stratified_sample(pool, "intent_type", n, rng)
    else:  # disagreement
        if pipeline is None:
            raise ValueError("the disagreement strategy needs the search index")
        score_disagreement(pipeline, pool)
        ranked = sorted(pool, key=lambda p: (-p.meta["disagreement"], p.query, p.video_id))
        chosen = ranked if n is None else ranked[:n]
        for p in chosen:
            p.stratum = p.meta["disagreement_side"]
    return chosen


def mix_gold(pairs: list[PairSpec], gold: list[PairSpec], rate: float, seed: int = 0) -> list[PairSpec]:
    """Mix gold pairs in at `rate` of the batch (gold / all pairs ≈ rate), at random
    places, and return the display order. Regular pairs of the same query stay together
    (context helps annotators); query groups are shuffled. A regular pair that is also a
    gold pair is kept once, as gold."""
    rng = random.Random(seed)
    if not 0.0 <= rate < 1.0:
        raise ValueError("gold rate must be in [0, 1)")
    gold_keys = {(g.query, g.video_id) for g in gold}
    regular = [p for p in pairs if (p.query, p.video_id) not in gold_keys]
    n_gold = min(len(gold), math.ceil(rate * len(regular) / (1.0 - rate))) if rate > 0 and gold else 0
    chosen_gold = rng.sample(gold, n_gold) if n_gold else []
    chosen_gold += [g for g in gold if (g.query, g.video_id) in {(p.query, p.video_id) for p in pairs} and g not in chosen_gold]
    groups: dict[str, list[PairSpec]] = {}
    for p in regular:
        groups.setdefault(p.query, []).append(p)
    order = list(groups)
    rng.shuffle(order)
    seq: list[PairSpec] = [p for q in order for p in groups[q]]
    for g in chosen_gold:
        seq.insert(rng.randint(0, len(seq)), g)
    return seq
