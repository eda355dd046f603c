"""The simulator's judge: hidden relevance grades decided by rules about entities, intents
and text (SPEC grades), using what each video really is (`truth/catalog_truth.jsonl`) and
never any of our models.

Only the simulator (to drive behaviour and sample judged sets) may read this module's
files; a test checks that no training or serving code does.

Grades (seed 002 §2.1):
- 3 good: term match & semantically related & intent match (a true alias counts as term match)
- 2 fair-good: related, but term or intent mismatch (周杰伦 晴天 vs someone's cover of 晴天)
- 1 fair-fair: term match but unrelated (晴天 vs an anime edit titled 朗朗晴天)
- 0 bad: no term match and unrelated
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from query_understanding.normalize import normalize_doc_text
from search.kb import KnowledgeBase

TRUTH_DIR = "truth"
CATALOG_TRUTH = "catalog_truth.jsonl"

# Version words users add to a song and the video roles that satisfy them.
VERSION_ROLES: dict[str, set[str]] = {
    "live": {"live"}, "现场": {"live"}, "演唱会": {"live"}, "翻唱": {"cover"}, "cover": {"cover"}, "弹唱": {"cover"},
    "mv": {"official"}, "官方": {"official"}, "舞蹈": {"dance"}, "翻跳": {"dance"}, "dance": {"dance"}, "直拍": {"dance", "live"},
    "教学": {"tutorial"}, "吉他教学": {"tutorial"}, "钢琴教学": {"tutorial"}, "伴奏": {"tutorial"}, "歌词": {"lyric"},
    "动态歌词": {"lyric"}, "纯享": {"variety"}, "reaction": {"reaction"}, "混剪": {"fan_edit"},
}
ORIGINAL_ROLES = {"official", "live", "variety", "lyric"}


@dataclass
class QueryIntent:
    """What a simulated user means; the surface text may be noisy (typos, pinyin…)."""
    kind: str                       # artist | song | artist_song | alias | version | show | lyric | mood | uploader
    artist: str = ""
    song: str = ""
    song_artists: list[str] = field(default_factory=list)
    version: str = ""
    show: str = ""
    mood: str = ""
    mood_words: list[str] = field(default_factory=list)
    uploader: str = ""
    line: str = ""
    surface_terms: list[str] = field(default_factory=list)  # the words of the clean query

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", [], None)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QueryIntent":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_catalog_truth(catalog: str | Path) -> dict[str, dict[str, Any]]:
    """Hidden content per video; videos without an entry are derived from their metadata."""
    p = Path(catalog).parent / TRUTH_DIR / CATALOG_TRUTH
    out: dict[str, dict[str, Any]] = {}
    if p.exists():
        with open(p, encoding="utf-8") as f:
            for line in f:
                t = json.loads(line)
                out[t["video_id"]] = t
    return out


_CAT_ROLE = {"mv": "official", "live": "live", "cover": "cover", "dance": "dance", "tutorial": "tutorial", "reaction": "reaction",
             "variety": "variety", "fan_edit": "fan_edit", "lyric": "lyric", "other": "unrelated"}


def truth_from_metadata(video: dict[str, Any], kb: KnowledgeBase) -> dict[str, Any]:
    """For catalogs without a truth file: trust the structured metadata."""
    role = _CAT_ROLE.get(video.get("category", "other"), "unrelated")
    song = (video.get("songs") or [""])[0]
    arts = list(video.get("artists") or [])
    orig = kb.artists_by_song_title.get(song, arts)[:3] if song else []
    performers = arts if role in ORIGINAL_ROLES | {"fan_edit"} else [video.get("uploader", "")]
    return {"video_id": video["video_id"], "role": role, "performers": performers, "song": song,
            "original_artists": orig or arts, "show": "", "moods": [], "quality": 0.6, "trending": False}


class Judge:
    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        # Group ↔ member links make S.H.E related to Hebe (fair-good, as in the article).
        self.related_artists: dict[str, set[str]] = {}
        for a in kb.artists:
            rel = set(a.get("members", [])) | set(a.get("groups", []))
            if rel:
                self.related_artists.setdefault(a["name"], set()).update(rel)
                for r in rel:
                    self.related_artists.setdefault(r, set()).add(a["name"])
        self.show_performers = {s["name"]: set(s.get("performers", [])) for s in kb.shows}
        self._text_cache: dict[str, str] = {}

    def _names(self, artist: str) -> set[str]:
        """Normalized surface forms that count as the artist's name (aliases are true names)."""
        forms = {artist} | set(self.kb.aliases_of(artist))
        return {normalize_doc_text(f) for f in forms if f}

    def _text(self, video: dict[str, Any]) -> str:
        vid = video.get("video_id", "")
        text = self._text_cache.get(vid)
        if text is None:
            text = normalize_doc_text(" ".join([video.get("title", ""), video.get("description", ""), " ".join(video.get("tags", [])),
                                                " ".join(video.get("artists", [])), " ".join(video.get("songs", [])),
                                                video.get("uploader", "")]))
            self._text_cache[vid] = text
        return text

    def term_match(self, intent: QueryIntent, video: dict[str, Any]) -> bool:
        text = self._text(video)
        terms = [normalize_doc_text(t) for t in intent.surface_terms if t]
        if intent.artist:
            # Query typed an alias of the artist and the video names the artist: still a term match.
            alias_forms = self._names(intent.artist)
            terms = [normalize_doc_text(intent.artist) if t in alias_forms else t for t in terms]
        core = [t for t in terms if t and t not in VERSION_ROLES]
        if not core:
            return False
        hit = sum(1 for t in core if t in text)
        return hit == len(core) if len(core) <= 2 else hit >= len(core) - 1

    def related(self, intent: QueryIntent, t: dict[str, Any]) -> bool:
        people = set(t.get("performers", [])) | set(t.get("original_artists", []))
        if intent.artist:
            fam = {intent.artist} | self.related_artists.get(intent.artist, set())
            if people & fam:
                return True
            if t.get("show") and intent.artist in self.show_performers.get(t["show"], set()):
                return True
        if intent.song and t.get("song") == intent.song:
            return True
        if intent.song and intent.song in t.get("mix_songs", []):
            return True
        if intent.show and (t.get("show") == intent.show or people & self.show_performers.get(intent.show, set())):
            return True
        if intent.mood and (intent.mood in t.get("moods", []) and t.get("role") == "mix"):
            return True
        if intent.uploader and intent.uploader in t.get("performers", []):
            return True
        if intent.line and t.get("song") == intent.song:
            return True
        return False

    def intent_match(self, intent: QueryIntent, t: dict[str, Any], video: dict[str, Any]) -> bool:
        role = t.get("role", "unrelated")
        performers = set(t.get("performers", []))
        orig = set(t.get("original_artists", []))
        k = intent.kind
        if k in ("artist", "alias"):
            return intent.artist in performers and role in ORIGINAL_ROLES | {"fan_edit"}
        if k == "song":
            return t.get("song") == intent.song and role in ORIGINAL_ROLES and bool(performers & (orig or performers))
        if k == "artist_song":
            return t.get("song") == intent.song and intent.artist in performers and role in ORIGINAL_ROLES
        if k == "version":
            roles = VERSION_ROLES.get(intent.version, set())
            ok = t.get("song") == intent.song and role in roles
            return ok and (not intent.artist or intent.artist in performers | orig)
        if k == "show":
            return t.get("show") == intent.show
        if k == "lyric":
            return t.get("song") == intent.song and bool(orig & set(intent.song_artists))
        if k == "mood":
            return role == "mix" and intent.mood in t.get("moods", [])
        if k == "uploader":
            return video.get("uploader") == intent.uploader
        return False

    def grade(self, intent: QueryIntent, video: dict[str, Any], t: dict[str, Any]) -> int:
        term = self.term_match(intent, video)
        rel = self.related(intent, t)
        if rel and intent.kind in ("alias",) and intent.artist in set(t.get("performers", [])):
            term = True  # hebe = 田馥甄: a true alias is a term match
        if rel and intent.kind == "mood" and t.get("role") == "mix" and intent.mood in t.get("moods", []):
            term = True  # the mood is the term users mean (跑步 ≈ 运动歌单)
        if rel and term and self.intent_match(intent, t, video):
            return 3
        if rel:
            return 2
        if term:
            return 1
        return 0

    def grade_many(self, intent: QueryIntent, videos: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> list[int]:
        return [self.grade(intent, v, t) for v, t in videos]
