"""The music knowledge base: artists (aliases, English names, romanizations, groups),
songs (artists, styles, moods), shows (performers) and famous lyric lines.

`load_kb()` reads the compact bundled file (built by `mvsearch kb build`); the business
dictionary for tokenization and the alias rewrite table are derived from it.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from query_understanding.normalize import normalize_doc_text

BUNDLED = Path(__file__).with_name("kb.json.gz")


@dataclass
class KnowledgeBase:
    artists: list[dict[str, Any]]
    songs: list[dict[str, Any]]
    shows: list[dict[str, Any]]
    lyrics: list[dict[str, Any]]
    sources: dict[str, str] = field(default_factory=dict)

    @cached_property
    def artist_by_name(self) -> dict[str, dict[str, Any]]:
        return {a["name"]: a for a in self.artists}

    @cached_property
    def songs_by_artist(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for s in self.songs:
            for a in s["artists"]:
                out.setdefault(a, []).append(s)
        return out

    @cached_property
    def artists_by_song_title(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for s in self.songs:
            out.setdefault(s["title"], []).extend(s["artists"])
        return out

    def aliases_of(self, name: str) -> list[str]:
        """Every surface form users type for an artist: aliases, English names, pinyin, initials."""
        a = self.artist_by_name.get(name)
        if not a:
            return []
        forms = list(a.get("aliases", [])) + list(a.get("english", []))
        if a.get("pinyin"):
            forms.append(a["pinyin"])
            if len(a.get("initials", "")) >= 3:  # two-letter initials collide with everything
                forms.append(a["initials"])
        return [f for f in dict.fromkeys(forms) if f and f != name]


def load_kb(path: str | Path | None = None) -> KnowledgeBase:
    p = Path(path) if path else BUNDLED
    with gzip.open(p, "rt", encoding="utf-8") as f:
        raw = json.load(f)
    return KnowledgeBase(raw["artists"], raw["songs"], raw.get("shows", []), raw.get("lyrics", []), raw.get("sources", {}))


def business_dictionary(kb: KnowledgeBase) -> list[tuple[str, int, str]]:
    """(word, freq, tag) for jieba: every entity name and alias, normalized like the text it
    must match. Tags name the entity type, so the tokenizer's output carries it."""
    from query_understanding.tokenize import ENTITY_FREQ

    seen: dict[str, tuple[str, int, str]] = {}

    def add(word: str, tag: str, freq: int = ENTITY_FREQ) -> None:
        w = normalize_doc_text(word)
        # Single characters and multi-word English names stay out: jieba would glue the
        # former onto everything and cannot hold the latter as one token.
        if len(w) < 2 or " " in w or w.isdigit():
            return
        if w not in seen or seen[w][1] < freq:
            seen[w] = (w, freq, tag)

    for s in kb.songs:
        add(s["title"], "song", ENTITY_FREQ // 2)
    for sh in kb.shows:
        add(sh["name"], "show")
        for al in sh.get("aliases", []):
            add(al, "show")
    for a in kb.artists:
        add(a["name"], "artist")
        for al in kb.aliases_of(a["name"]):
            add(al, "artist")
    return sorted(seen.values())


def write_dictionary(entries: Iterable[tuple[str, int, str]], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for w, freq, tag in entries:
            f.write(f"{w} {freq} {tag}\n")
    os.replace(tmp, p)
    return p


def alias_rewrite_table(kb: KnowledgeBase) -> dict[str, list[str]]:
    """normalized alias → canonical names (an alias may be shared, e.g. two singers called 阿杜).
    This is the knowledge-base part of the query-rewrite table."""
    table: dict[str, list[str]] = {}
    for a in kb.artists:
        canon = normalize_doc_text(a["name"])
        for al in kb.aliases_of(a["name"]):
            key = normalize_doc_text(al)
            if key and key != canon and canon not in table.setdefault(key, []):
                table[key].append(canon)
    for sh in kb.shows:
        canon = normalize_doc_text(sh["name"])
        for al in sh.get("aliases", []):
            key = normalize_doc_text(al)
            if key and key != canon:
                table.setdefault(key, []).append(canon)
    return table


__all__ = ["KnowledgeBase", "load_kb", "business_dictionary", "write_dictionary", "alias_rewrite_table", "BUNDLED"]
