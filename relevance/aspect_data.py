"""Training data for the aspect relevance model (article §2.3, after Yao et al., WWW 2021).

A single click is not a relevance label (position, novelty and thumbnails sway it), but
within one query, videos users click more often than their positions predict are more
relevant than those they pass over. So, from the TRAIN split of the search log only:

1. per (query, video): impressions, clicks and expected clicks (the global CTR of each
   position it was shown at) → a position-debiased, smoothed click ratio
   `coec = (clicks + m) / (expected_clicks + m)` (clicks over expected clicks with m pseudo
   clicks, so a video shown twice is not a hero or a zero);
2. per query: its videos in three tiers by that ratio — high / medium / low — with targets
   1 / 0.5 / 0 for a pointwise loss that respects the tiers;
3. easy negatives: random catalog videos the query never showed (target 0);
4. hard negatives: a high-tier positive with one named entity swapped using the knowledge
   base — the same song by another artist (query names the artist) or another song by the
   same artist (query names the song) — written into the video's title and fields
   (target 0). These teach intent match, which word overlap alone cannot.
"""
from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

TIER_TARGET = {"high": 1.0, "medium": 0.5, "low": 0.0, "hard_negative": 0.0, "easy_negative": 0.0}


@dataclass
class PairStats:
    impressions: int = 0
    clicks: int = 0
    expected: float = 0.0


def aggregate_clicks(log_path: str | Path, split: str = "train", progress: bool = True) -> dict[str, dict[str, PairStats]]:
    """query → video → PairStats over the impressions of one split. Two passes: position
    CTRs first, then expected clicks per pair."""
    from tqdm import tqdm

    rows: list[tuple[str, str, int, bool]] = []
    pos_imp: dict[int, int] = defaultdict(int)
    pos_clk: dict[int, int] = defaultdict(int)
    with open(log_path, encoding="utf-8") as f:
        for line in tqdm(f, desc=f"reading {Path(log_path).name} ({split})", unit=" lines", disable=not progress, mininterval=2):
            # Cheap filter before parsing: the log is large and most lines of other splits can go.
            if f'"split": "{split}"' not in line and f'"split":"{split}"' not in line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r.get("split") != split or not r.get("query") or not r.get("video_id"):
                continue
            p = int(r.get("position") or 0)
            c = bool(r.get("clicked"))
            rows.append((r["query"], r["video_id"], p, c))
            pos_imp[p] += 1
            pos_clk[p] += c
    if not rows:
        raise ValueError(f"{log_path}: no impressions with split={split!r}")
    pos_ctr = {p: pos_clk[p] / pos_imp[p] for p in pos_imp}
    out: dict[str, dict[str, PairStats]] = defaultdict(dict)
    for q, v, p, c in rows:
        st = out[q].get(v)
        if st is None:
            st = out[q][v] = PairStats()
        st.impressions += 1
        st.clicks += c
        st.expected += pos_ctr[p]
    return dict(out)


def save_clicks(stats: dict[str, dict[str, PairStats]], path: Path) -> None:
    from .aspect_model import _atomic_write

    data = {q: {v: [s.impressions, s.clicks, round(s.expected, 5)] for v, s in vs.items()} for q, vs in stats.items()}
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8"))


def load_clicks(path: Path) -> dict[str, dict[str, PairStats]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {q: {v: PairStats(*s) for v, s in vs.items()} for q, vs in data.items()}


@dataclass
class TierParams:
    smoothing: float = 1.0        # pseudo clicks (and expected clicks) in the ratio
    min_impressions: int = 2      # fewer: too little evidence to tier
    high: float = 1.5             # coec ≥ high → high tier (clicked 1.5× what the position predicts)
    low: float = 0.6              # coec < low → low tier
    min_query_pairs: int = 2      # a query needs this many tiered videos


def coec(s: PairStats, m: float) -> float:
    return (s.clicks + m) / (s.expected + m)


def tier_pairs(stats: dict[str, dict[str, PairStats]], tp: TierParams | None = None) -> list[tuple[str, str, str]]:
    """(query, video_id, tier) for every query with enough evidence."""
    tp = tp or TierParams()
    out: list[tuple[str, str, str]] = []
    for q, vids in stats.items():
        rows = [(v, coec(s, tp.smoothing)) for v, s in vids.items() if s.impressions >= tp.min_impressions]
        if len(rows) < tp.min_query_pairs:
            continue
        for v, r in rows:
            out.append((q, v, "high" if r >= tp.high else "low" if r < tp.low else "medium"))
    return out


# ---- hard negatives by entity swap -----------------------------------------------------

def _replace(text: str, old: str, new: str) -> str:
    return re.sub(re.escape(old), lambda _m: new, text, flags=re.IGNORECASE) if old else text


def swap_entity(doc: dict[str, Any], field_name: str, old: str, new: str) -> dict[str, Any] | None:
    """A copy of `doc` where the entity `old` (an artist or a song, as normalized text) is
    `new` in the structured field, the title, the tags and the description. None if the
    video does not carry `old` at all (nothing to swap, the copy would not differ)."""
    from query_understanding.normalize import normalize_doc_text

    raw_names = [x for x in doc.get(field_name, []) or [] if normalize_doc_text(x) == old]
    in_title = old in normalize_doc_text(doc.get("title", ""))
    if not raw_names and not in_title:
        return None
    d = dict(doc)
    d["video_id"] = f"{doc.get('video_id', '')}#swap:{field_name}:{new}"
    d[field_name] = [new if normalize_doc_text(x) == old else x for x in doc.get(field_name, []) or []]
    for f in ("title", "description"):
        t = str(doc.get(f, ""))
        for form in set(raw_names) | {old}:
            t = _replace(t, form, new)
        d[f] = t
    d["tags"] = [new if normalize_doc_text(t) == old else t for t in doc.get("tags", []) or []]
    return d


class EntitySwapper:
    """Hard negatives from the knowledge base: the same song by another artist, another
    song by the same artist."""

    def __init__(self, kb: Any, rng: random.Random):
        from query_understanding.normalize import normalize_doc_text

        self.rng = rng
        self.norm = normalize_doc_text
        self.artists_of_song: dict[str, list[str]] = defaultdict(list)
        self.songs_of_artist: dict[str, list[str]] = defaultdict(list)
        for s in kb.songs:
            t = normalize_doc_text(s["title"])
            for a in s.get("artists", []):
                self.artists_of_song[t].append(a)
                self.songs_of_artist[normalize_doc_text(a)].append(s["title"])
        self.all_artists = sorted({a for v in self.artists_of_song.values() for a in v})
        self.all_songs = sorted({s["title"] for s in kb.songs})

    def other_artist(self, artist: str, song: str | None) -> str:
        pool = [a for a in self.artists_of_song.get(song or "", []) if self.norm(a) != artist]
        for _ in range(5):
            a = self.rng.choice(pool) if pool else self.rng.choice(self.all_artists)
            if self.norm(a) != artist:
                return a
        return self.rng.choice(self.all_artists)

    def other_song(self, song: str, artist: str | None) -> str:
        pool = [s for s in self.songs_of_artist.get(artist or "", []) if self.norm(s) != song]
        for _ in range(5):
            s = self.rng.choice(pool) if pool else self.rng.choice(self.all_songs)
            if self.norm(s) != song:
                return s
        return self.rng.choice(self.all_songs)

    def negatives(self, aspects: dict[str, list[str]], doc: dict[str, Any], limit: int = 2) -> list[dict[str, Any]]:
        """Swap what the query names: its artist (→ same song, another artist) and its
        song (→ another song of the same artist)."""
        out = []
        song = (aspects.get("song") or [None])[0]
        artist = (aspects.get("artist") or [None])[0]
        if artist:
            d = swap_entity(doc, "artists", artist, self.other_artist(artist, song))
            if d:
                out.append(d)
        if song:
            doc_artist = artist or next((self.norm(a) for a in doc.get("artists", []) or []), None)
            d = swap_entity(doc, "songs", song, self.other_song(song, doc_artist))
            if d:
                out.append(d)
        return out[:limit]


@dataclass
class Example:
    query: str
    doc: dict[str, Any]
    target: float
    kind: str


@dataclass
class TrainingSet:
    examples: list[Example]
    counts: dict[str, int] = field(default_factory=dict)


def build_training_set(tiered: Sequence[tuple[str, str, str]], docs: dict[str, dict[str, Any]],
                       query_aspects_of: Callable[[str], dict[str, list[str]]], swapper: EntitySwapper,
                       rng: random.Random, easy_per_query: int = 2, hard_per_positive: int = 1,
                       max_queries: int | None = None) -> TrainingSet:
    """Tiered pairs + easy and hard negatives, in a seeded order."""
    by_query: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for q, v, t in tiered:
        if v in docs:
            by_query[q].append((v, t))
    queries = sorted(by_query)
    rng.shuffle(queries)
    if max_queries:
        queries = queries[:max_queries]
    all_ids = sorted(docs)
    ex: list[Example] = []
    counts: dict[str, int] = defaultdict(int)
    for q in queries:
        shown = {v for v, _ in by_query[q]}
        asp = query_aspects_of(q)
        for v, t in by_query[q]:
            ex.append(Example(q, docs[v], TIER_TARGET[t], t))
            counts[t] += 1
            if t == "high" and hard_per_positive:
                for d in swapper.negatives(asp, docs[v], limit=hard_per_positive):
                    ex.append(Example(q, d, TIER_TARGET["hard_negative"], "hard_negative"))
                    counts["hard_negative"] += 1
        for _ in range(easy_per_query):
            v = rng.choice(all_ids)
            if v not in shown:
                ex.append(Example(q, docs[v], TIER_TARGET["easy_negative"], "easy_negative"))
                counts["easy_negative"] += 1
    rng.shuffle(ex)
    return TrainingSet(ex, dict(counts))


GRADE_TARGET = {3: 1.0, 2: 0.75, 1: 0.25, 0: 0.0}  # fine-tuning targets: the 4 grades, ordered


__all__ = ["aggregate_clicks", "tier_pairs", "TierParams", "EntitySwapper", "swap_entity", "build_training_set",
           "TIER_TARGET", "GRADE_TARGET", "Example", "TrainingSet", "PairStats",
           "save_clicks", "load_clicks", "coec"]
