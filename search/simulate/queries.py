"""Query generation from intents the article names, with realistic noise.

Intents: artist, song, artist+song, alias/English/pinyin name, show, lyric line, version
(live/MV/cover/伴奏/dance/tutorial), mood/scene, uploader. Noise, at configured rates:
homophone typos (same pinyin, another character), keyboard-neighbour typos in Latin text,
full pinyin, pinyin initials, traditional characters, extra spaces and punctuation.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import opencc
from pypinyin import Style, lazy_pinyin

from search.kb import KnowledgeBase

from .truth import QueryIntent

_s2t = opencc.OpenCC("s2t")
VERSION_WORDS = ["live", "现场", "翻唱", "cover", "mv", "舞蹈", "翻跳", "教学", "吉他教学", "伴奏", "歌词", "纯享", "直拍", "reaction"]
MOOD_WORDS = {"运动": ["跑步", "健身", "运动"], "学习": ["学习", "自习"], "治愈": ["治愈", "放松"], "伤感": ["伤感", "emo"],
              "驾车": ["开车"], "夜晚": ["睡前", "深夜"], "兴奋": ["燃", "嗨"], "浪漫": ["浪漫", "告白"], "快乐": ["快乐", "开心"],
              "放松": ["放松"], "怀旧": ["怀旧", "经典老歌"], "安静": ["安静", "纯音乐"]}
_KEYBOARD = {c: n for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm") for i, c in enumerate(row)
             for n in [row[max(0, i - 1)] + row[min(len(row) - 1, i + 1)]]}


@dataclass
class NoiseRates:
    homophone: float = 0.04
    keyboard: float = 0.02
    full_pinyin: float = 0.03
    initials: float = 0.015
    traditional: float = 0.03
    spacing: float = 0.04

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseRates":
        return cls(**{k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__})


class HomophoneTable:
    """Characters grouped by toneless pinyin, from every name in the knowledge base."""

    def __init__(self, kb: KnowledgeBase):
        groups: dict[str, set[str]] = {}
        for text in [a["name"] for a in kb.artists[:3000]] + [s["title"] for s in kb.songs[:8000]]:
            for ch in text:
                if "\u4e00" <= ch <= "\u9fff":
                    groups.setdefault(lazy_pinyin(ch)[0], set()).add(ch)
        self.by_char = {}
        for chars in groups.values():
            if len(chars) > 1:
                ordered = sorted(chars)
                for ch in ordered:
                    self.by_char[ch] = [c for c in ordered if c != ch]

    def typo(self, text: str, rng: random.Random) -> str | None:
        idx = [i for i, ch in enumerate(text) if ch in self.by_char]
        if not idx:
            return None
        i = rng.choice(idx)
        return text[:i] + rng.choice(self.by_char[text[i]]) + text[i + 1 :]


def add_noise(clean: str, rates: NoiseRates, homophones: HomophoneTable, rng: random.Random) -> tuple[str, str]:
    """(query as typed, noise kind or ''). At most one kind of noise per query."""
    r = rng.random()
    acc = 0.0
    for kind in ("homophone", "keyboard", "full_pinyin", "initials", "traditional", "spacing"):
        acc += getattr(rates, kind)
        if r >= acc:
            continue
        if kind == "homophone":
            out = homophones.typo(clean, rng)
        elif kind == "keyboard":
            idx = [i for i, c in enumerate(clean) if c.lower() in _KEYBOARD]
            out = None
            if idx:
                i = rng.choice(idx)
                out = clean[:i] + rng.choice(_KEYBOARD[clean[i].lower()]) + clean[i + 1 :]
        elif kind == "full_pinyin":
            out = " ".join("".join(lazy_pinyin(part)) for part in clean.split()) if any("\u4e00" <= c <= "\u9fff" for c in clean) else None
        elif kind == "initials":
            parts = clean.split()
            han = [i for i, p in enumerate(parts) if all("\u4e00" <= c <= "\u9fff" for c in p) and len(p) >= 2]
            out = None
            if han:
                i = han[0]
                parts[i] = "".join(lazy_pinyin(parts[i], style=Style.FIRST_LETTER))
                out = " ".join(parts)
        elif kind == "traditional":
            t = _s2t.convert(clean)
            out = t if t != clean else None
        else:
            out = rng.choice(["  ", " ", "", "《", "!"]).join(clean.split(" ")) if " " in clean else rng.choice([f"{clean}!", f"《{clean}》", f" {clean} "])
        return (out, kind) if out and out != clean else (clean, "")
    return clean, ""


class QueryGenerator:
    def __init__(self, kb: KnowledgeBase, catalog_truth: dict[str, dict[str, Any]], videos: dict[str, dict[str, Any]],
                 intent_mix: dict[str, float], rng: random.Random):
        self.kb, self.rng = kb, rng
        self.intent_mix = intent_mix
        # Only ask for what the catalog has: artists and songs weighted by their videos.
        art_count: dict[str, int] = {}
        song_count: dict[tuple[str, str], int] = {}
        for t in catalog_truth.values():
            for a in set(t.get("original_artists", [])) | (set(t.get("performers", [])) if t.get("role") in ("official", "live", "variety") else set()):
                if a in kb.artist_by_name:
                    art_count[a] = art_count.get(a, 0) + 1
            if t.get("song") and t.get("original_artists"):
                key = (t["song"], t["original_artists"][0])
                song_count[key] = song_count.get(key, 0) + 1
        self.artists = sorted(art_count, key=lambda a: (-art_count[a], a))
        self.artist_w = [art_count[a] for a in self.artists]
        self.songs_of: dict[str, list[str]] = {}
        for (s, a), c in sorted(song_count.items(), key=lambda x: -x[1]):
            self.songs_of.setdefault(a, []).append(s)
        self.shows = sorted({t["show"] for t in catalog_truth.values() if t.get("show")})
        ups: dict[str, int] = {}
        for v in videos.values():
            if v.get("uploader"):
                ups[v["uploader"]] = ups.get(v["uploader"], 0) + 1
        self.uploaders = [u for u, c in sorted(ups.items(), key=lambda x: -x[1])[:200] if c >= 5]
        self.moods = sorted({m for t in catalog_truth.values() if t.get("role") == "mix" for m in t.get("moods", []) if m in MOOD_WORDS})
        self.lyrics = [ly for ly in kb.lyrics if ly["song"] in {s for ss in self.songs_of.values() for s in ss}]
        self.kinds = list(intent_mix)

    def artists_by_popularity(self) -> list[tuple[str, str]]:
        return [(a, self.kb.artist_by_name[a].get("language", "zh")) for a in self.artists]

    def _artist(self, favourites: list[str]) -> str:
        if favourites and self.rng.random() < 0.6:
            fav = [a for a in favourites if a in self.songs_of or a in self.artists]
            if fav:
                return self.rng.choice(fav)
        return self.rng.choices(self.artists, weights=self.artist_w)[0]

    def _song(self, artist: str) -> str:
        ss = self.songs_of.get(artist) or []
        if not ss:
            return ""
        return ss[min(int(self.rng.paretovariate(1.1)) - 1, len(ss) - 1)]

    def intent(self, favourites: list[str]) -> QueryIntent:
        rng = self.rng
        kind = rng.choices(self.kinds, weights=[self.intent_mix[k] for k in self.kinds])[0]
        a = self._artist(favourites)
        s = self._song(a)
        sa = [a]
        if kind in ("song", "artist_song", "version") and not s:
            kind = "artist"
        if kind == "artist":
            return QueryIntent("artist", artist=a, surface_terms=[a])
        if kind == "alias":
            forms = [f for f in self.kb.aliases_of(a) if len(f) >= 2]
            if not forms:
                return QueryIntent("artist", artist=a, surface_terms=[a])
            f = rng.choice(forms)
            return QueryIntent("alias", artist=a, surface_terms=[f])
        if kind == "song":
            return QueryIntent("song", song=s, song_artists=sa, surface_terms=[s])
        if kind == "artist_song":
            return QueryIntent("artist_song", artist=a, song=s, song_artists=sa, surface_terms=[a, s] if rng.random() < 0.8 else [s, a])
        if kind == "version":
            vw = rng.choice(VERSION_WORDS)
            with_artist = rng.random() < 0.3
            return QueryIntent("version", artist=a if with_artist else "", song=s, song_artists=sa, version=vw,
                               surface_terms=([a] if with_artist else []) + [s, vw])
        if kind == "show" and self.shows:
            sh = rng.choice(self.shows)
            return QueryIntent("show", show=sh, surface_terms=[sh])
        if kind == "lyric" and self.lyrics:
            ly = rng.choice(self.lyrics)
            return QueryIntent("lyric", song=ly["song"], song_artists=[ly["artist"]], line=ly["line"], surface_terms=[ly["line"]])
        if kind == "mood" and self.moods:
            m = rng.choice(self.moods)
            w = rng.choice(MOOD_WORDS[m])
            text = rng.choice([f"适合{w}的歌", f"{w}歌单", f"{w} bgm", f"{w}听的歌"])
            return QueryIntent("mood", mood=m, mood_words=[w], surface_terms=[text])
        if kind == "uploader" and self.uploaders:
            u = rng.choice(self.uploaders[:50])
            return QueryIntent("uploader", uploader=u, surface_terms=[u])
        return QueryIntent("artist", artist=a, surface_terms=[a])


def clean_text(intent: QueryIntent) -> str:
    return " ".join(intent.surface_terms)
