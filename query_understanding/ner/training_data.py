"""Labelled sentences for the NER tagger, generated from what we own, never from the
simulator's truth:

* catalog titles, labelled by distant supervision from each video's own metadata: a song or
  artist name in a title is an entity only if that video's `songs`/`artists`/`tags` say so.
  The titles that merely contain a song's name as a word (the catalog has plenty) are the
  negatives that teach ambiguity;
* queries composed from the knowledge base (artist, song, alias, show, lyric line, version,
  language, style and mood words) in the shapes users type, with and without spaces;
* real smart-speaker utterances (CAIS music, `../shared/data/nlu/cais_music`) with their
  human slots mapped onto our types, when that data is present.

Everything is normalized exactly as queries are at search time.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..normalize import normalize
from ..vocabulary import VERSION_WORDS
from .lexicon import LANGUAGE_WORDS, MOOD_WORDS, STYLE_WORDS, EntityLexicon


@dataclass
class LabelledText:
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # char offsets, end exclusive
    source: str = ""

    def bio(self) -> list[str]:
        tags = ["O"] * len(self.text)
        for s, e, t in self.spans:
            tags[s] = f"B-{t}"
            for k in range(s + 1, e):
                tags[k] = f"I-{t}"
        return tags


def _find_all(text: str, needle: str) -> Iterator[int]:
    i = text.find(needle)
    while i >= 0:
        yield i
        i = text.find(needle, i + len(needle))


def _ascii_boundary(text: str, s: int, e: int) -> bool:
    def an(ch: str) -> bool:
        return ch.isascii() and ch.isalnum()
    return not ((s > 0 and an(text[s]) and an(text[s - 1])) or (e < len(text) and an(text[e - 1]) and an(text[e])))


def label_with(text: str, names: Iterable[tuple[str, str]]) -> list[tuple[int, int, str]]:
    """Non-overlapping spans of the given (name, type) pairs, longest names first."""
    taken = [False] * len(text)
    spans = []
    for name, typ in sorted(set(names), key=lambda x: -len(x[0])):
        if not name or len(name) < 2 and typ not in ("version",):
            continue
        for s in _find_all(text, name):
            e = s + len(name)
            if any(taken[s:e]) or not _ascii_boundary(text, s, e):
                continue
            for k in range(s, e):
                taken[k] = True
            spans.append((s, e, typ))
    return sorted(spans)


def _vocab_names(text: str) -> list[tuple[str, str]]:
    out = [(w, "version") for w in VERSION_WORDS if w in text]
    out += [(w, "language") for w in LANGUAGE_WORDS if w in text]
    out += [(w, "style") for w in STYLE_WORDS if w in text]
    out += [(w, "mood") for w in MOOD_WORDS if w in text]
    return out


def from_catalog(records: Iterable[dict[str, Any]], lexicon: EntityLexicon, max_chars: int = 48,
                 limit: int | None = None) -> list[LabelledText]:
    out: list[LabelledText] = []
    for rec in records:
        title = normalize(rec.get("title", ""))[:max_chars]
        if not title:
            continue
        names: list[tuple[str, str]] = []
        for a in rec.get("artists", []):
            names.append((normalize(a), "artist"))
        for s in rec.get("songs", []):
            names.append((normalize(s), "song"))
        # tags name the video's artists/shows/songs too (uploads often leave `artists` empty)
        for tag in rec.get("tags", []):
            t = normalize(tag)
            types = lexicon.types.get(t, ())
            for typ in ("artist", "show", "song"):
                if typ in types:
                    names.append((t, typ))
                    break
        # an unambiguous artist name (or alias: `杰哥`) in a title is that artist whatever the metadata says
        names += [(m.text, "artist") for m in lexicon.match(title) if m.type == "artist" and not m.ambiguous]
        names += _vocab_names(title)
        out.append(LabelledText(title, label_with(title, names), "catalog"))
        if limit and len(out) >= limit:
            break
    return out


QUERY_SHAPES = (
    ("{artist}", 6), ("{song}", 8), ("{artist} {song}", 8), ("{song} {artist}", 5), ("{artist}的{song}", 2),
    ("{song} {version}", 8), ("{artist} {song} {version}", 4), ("{artist} {version}", 3), ("{version} {song}", 1),
    ("{show}", 1), ("{show} {artist}", 2), ("{artist} {show}", 1), ("{lyric}", 3), ("{lyric} {artist}", 1),
    ("{mood}的歌", 2), ("适合{mood}的歌", 2), ("{mood}歌单", 1), ("{language}{style}", 1), ("{style} {mood}", 1),
    ("{artist} {language}歌", 1), ("{language} {song}", 1), ("{artist}的歌", 2), ("我想听{artist}的{song}", 1),
    ("{album} {artist}", 1), ("{artist} 新歌", 1),
)


def from_kb(kb: dict[str, Any], n: int, seed: int = 0) -> list[LabelledText]:
    """Queries composed from the knowledge base, weighted toward popular artists (like real
    traffic) but covering the long tail."""
    rng = random.Random(seed)
    artists = [a for a in kb.get("artists", []) if a.get("name")]
    weights = [1.0 + float(a.get("popularity", 0.0)) for a in artists]
    songs_by_artist: dict[str, list[str]] = {}
    for s in kb.get("songs", []):
        for a in s.get("artists", []):
            songs_by_artist.setdefault(a, []).append(s["title"])
    all_songs = [s["title"] for s in kb.get("songs", [])]
    shows = [s["name"] for s in kb.get("shows", [])] + [al for s in kb.get("shows", []) for al in s.get("aliases", [])]
    lyrics = [(l["line"], l.get("artist", "")) for l in kb.get("lyrics", [])]
    albums = [al for a in artists for al in a.get("albums", [])]
    versions, moods, langs, styles = sorted(VERSION_WORDS), sorted(MOOD_WORDS), sorted(LANGUAGE_WORDS), sorted(STYLE_WORDS)
    shapes = [s for s, _ in QUERY_SHAPES]
    shape_w = [w for _, w in QUERY_SHAPES]
    out: list[LabelledText] = []
    while len(out) < n:
        shape = rng.choices(shapes, shape_w)[0]
        if "{album}" in shape and not albums or "{show}" in shape and not shows or "{lyric}" in shape and not lyrics:
            continue
        a = rng.choices(artists, weights)[0]
        forms = [a["name"]] + list(a.get("aliases", [])) + list(a.get("english", []))
        artist = rng.choice(forms) if rng.random() < 0.3 else a["name"]
        own = songs_by_artist.get(a["name"]) or a.get("signature_songs") or all_songs
        song = rng.choice(own) if own else rng.choice(all_songs)
        lyric, lyric_artist = rng.choice(lyrics) if lyrics else ("", "")
        if "{lyric} {artist}" == shape and lyric_artist:
            artist = lyric_artist
        values = {"artist": artist, "song": song, "version": rng.choice(versions), "show": rng.choice(shows) if shows else "",
                  "lyric": lyric, "mood": rng.choice(moods), "language": rng.choice(langs), "style": rng.choice(styles),
                  "album": rng.choice(albums) if albums else ""}
        if rng.random() < 0.35:  # users often skip the spaces
            shape = shape.replace(" ", "")
        text, spans, pos, i = "", [], 0, 0
        while i < len(shape):
            if shape[i] == "{":
                j = shape.index("}", i)
                key = shape[i + 1:j]
                val = normalize(values[key])
                spans.append((len(text), len(text) + len(val), key))
                text += val
                i = j + 1
            else:
                text += shape[i]
                i += 1
        norm = normalize(text)
        if norm != text or not norm:  # composition changed under normalization (rare): relabel by search
            spans = label_with(norm, [(text[s:e], t) for s, e, t in spans])
        out.append(LabelledText(norm, [s for s in spans if s[1] > s[0]], "kb"))
    return out


CAIS_TYPES = {"singer_name": "artist", "song_name": "song", "album_name": "album", "song_language": "language"}


def _cais_type(slot: str, text: str) -> str | None:
    if slot in CAIS_TYPES:
        return CAIS_TYPES[slot]
    if slot == "song_type":
        if text in VERSION_WORDS:
            return "version"
        if text in LANGUAGE_WORDS:
            return "language"
        return "style" if text in STYLE_WORDS else "mood"
    return None


def read_cais(path: str | Path) -> list[LabelledText]:
    """CAIS `char TAG` lines (BIOES), blank line between utterances → our types; slots outside
    music (stories, weather, …) become O."""
    out: list[LabelledText] = []
    for block in Path(path).read_text(encoding="utf-8").split("\n\n"):
        chars, tags = [], []
        for line in block.splitlines():
            parts = line.split(" ")
            if len(parts) >= 2 and parts[0]:
                chars.append(parts[0])
                tags.append(parts[-1])
        if not chars:
            continue
        spans_raw: list[tuple[int, int, str]] = []
        i = 0
        while i < len(tags):
            t = tags[i]
            if t[:2] in ("B-", "S-"):
                slot = t[2:]
                j = i + 1
                if t.startswith("B-"):
                    while j < len(tags) and tags[j][2:] == slot and tags[j][:2] in ("I-", "E-"):
                        j += 1
                spans_raw.append((i, j, slot))
                i = j
            else:
                i += 1
        # normalize char by char so offsets survive (CAIS is one char per line)
        text = ""
        offsets = []
        for ch in chars:
            offsets.append(len(text))
            n = normalize(ch)
            text += n[:1] if n else " "
        offsets.append(len(text))
        spans = []
        for s, e, slot in spans_raw:
            typ = _cais_type(slot, text[offsets[s]:offsets[e]])
            if typ:
                spans.append((offsets[s], offsets[e], typ))
        # collapse the placeholder spaces of dropped punctuation at the end
        stripped = text.rstrip()
        out.append(LabelledText(stripped, [(s, min(e, len(stripped)), t) for s, e, t in spans if s < len(stripped)], "cais"))
    return out


def write_jsonl(items: Iterable[LabelledText], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps({"text": it.text, "spans": it.spans, "source": it.source}, ensure_ascii=False) + "\n")


__all__ = ["LabelledText", "from_catalog", "from_kb", "read_cais", "label_with", "write_jsonl", "QUERY_SHAPES"]
