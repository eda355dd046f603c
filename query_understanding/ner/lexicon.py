"""Dictionary matching for NER: every span of the normalized query that names a known entity
(artists, songs, shows and aliases from the business dictionary; lyric lines from the
knowledge base; version, language, style and mood words from the music vocabulary), then one
non-overlapping reading chosen by score.

Ambiguity is the whole difficulty: `晴天`, `后来`, `演员`, `成都` are songs *and* everyday
words; `李白` is a song and a poet. The lexicon marks such entries as ambiguous (jieba's general
dictionary knows them as common words) and lowers their score unless the context supports the
entity reading (an artist or a version word next to it, or the entry is the whole query).
The trained tagger has the last word on those (see ner/__init__.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from ..normalize import normalize
from ..vocabulary import DESCRIPTIVE_WORDS, VERSION_WORDS

# The entity types NER outputs (the SPEC's NER aspects).
ENTITY_TYPES = ("artist", "song", "album", "show", "lyric", "version", "language", "style", "mood")

LANGUAGE_WORDS = frozenset("""粤语 国语 普通话 中文 华语 英文 英语 日语 日文 韩语 韩文 闽南语 台语 泰语 法语 西班牙语 俄语 藏语 彝语
    欧美 日韩 英文歌 粤语歌 日语歌 韩语歌 中文歌""".split())
STYLE_WORDS = frozenset("""古风 民谣 摇滚 说唱 嘻哈 rap 电音 edm 爵士 jazz 轻音乐 儿歌 情歌 老歌 流行 r&b rnb 金属 朋克 蓝调 乡村 古典
    国风 戏腔 中国风 纯音乐 钢琴曲 摇篮曲 dj 二次元 动漫 国潮 京剧 越剧 黄梅戏 相声""".split())
MOOD_WORDS = frozenset(w for w in DESCRIPTIVE_WORDS if w not in STYLE_WORDS and w not in LANGUAGE_WORDS
                       # cue words ask for a list but name no mood ("适合…的歌", "…歌单")
                       and w not in {"适合", "歌曲", "的歌", "推荐", "听的歌", "歌单", "好听"})

# Which reading wins when the same string has several types, before context.
TYPE_PRIOR = {"artist": 1.0, "show": 0.95, "song": 0.9, "album": 0.7, "lyric": 0.85,
              "version": 1.0, "language": 1.0, "style": 0.9, "mood": 0.8}
# jieba's general-dictionary frequency from which a name is also an everyday word.
COMMON_WORD_FREQ = 100
MAX_ENTRY_CHARS = 32


@dataclass(frozen=True)
class Match:
    start: int          # char offsets into the normalized text, end exclusive
    end: int
    text: str
    type: str
    score: float        # confidence in [0, 1] that this span is this entity
    ambiguous: bool     # also an everyday word, or several entity types for one string
    weight: float = 0.0 # how much this reading counts when choosing among overlapping ones


@lru_cache(maxsize=1)
def _general_freq() -> dict[str, int]:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.dt.initialize()
    return jieba.dt.FREQ


def is_common_word(text: str) -> bool:
    return _general_freq().get(text, 0) >= COMMON_WORD_FREQ


def _ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


class EntityLexicon:
    """string → entity types, with the everyday-word flag precomputed."""

    def __init__(self, entries: Iterable[tuple[str, str]]):
        self.types: dict[str, tuple[str, ...]] = {}
        acc: dict[str, list[str]] = {}
        for text, typ in entries:
            if typ not in ENTITY_TYPES:
                continue
            t = normalize(text)
            if not t or len(t) > MAX_ENTRY_CHARS or (len(t) < 2 and typ not in ("version",)):
                continue
            lst = acc.setdefault(t, [])
            if typ not in lst:
                lst.append(typ)
        for t, lst in acc.items():
            self.types[t] = tuple(sorted(lst, key=lambda x: -TYPE_PRIOR[x]))
        self.max_len = max((len(t) for t in self.types), default=0)
        common = _general_freq()
        self.common = frozenset(t for t in self.types if common.get(t, 0) >= COMMON_WORD_FREQ
                                and not set(self.types[t]) <= {"version", "language", "style", "mood"})

    @classmethod
    def build(cls, dictionary_entries: Iterable[tuple[str, str]], lyric_lines: Iterable[str] = (),
              albums: Iterable[str] = ()) -> "EntityLexicon":
        """Business-dictionary entries (word, tag ∈ artist/song/show/album) + lyric lines +
        the music vocabulary."""
        def gen():
            yield from dictionary_entries
            for line in lyric_lines:
                yield line, "lyric"
            for a in albums:
                yield a, "album"
            for w in VERSION_WORDS:
                yield w, "version"
            for w in LANGUAGE_WORDS:
                yield w, "language"
            for w in STYLE_WORDS:
                yield w, "style"
            for w in MOOD_WORDS:
                yield w, "mood"
        return cls(gen())

    def __len__(self) -> int:
        return len(self.types)

    def candidates(self, text: str) -> list[Match]:
        """Every dictionary span (Latin names only on word boundaries), each type a candidate."""
        out: list[Match] = []
        n = len(text)
        for i in range(n):
            if text[i] == " ":
                continue
            if i > 0 and _ascii_alnum(text[i]) and _ascii_alnum(text[i - 1]):
                continue
            for j in range(min(n, i + self.max_len), i, -1):
                types = self.types.get(text[i:j])
                if types is None:
                    continue
                if j < n and _ascii_alnum(text[j - 1]) and _ascii_alnum(text[j]):
                    continue
                s = text[i:j]
                amb = s in self.common or len(types) > 1
                for k, typ in enumerate(types):
                    out.append(Match(i, j, s, typ, 0.4 if amb else 0.9, amb, self._weight(s, typ, amb, k)))
        return out

    @staticmethod
    def _weight(s: str, typ: str, ambiguous: bool, rank: int) -> float:
        length = len(s) if not s.isascii() else max(1, len(s) // 2)  # a Latin letter says less than a hanzi
        score = (length ** 1.3) * TYPE_PRIOR[typ] * (0.8 ** rank)
        return score * (0.5 if ambiguous else 1.0)

    def match(self, text: str) -> list[Match]:
        """The best non-overlapping reading (weighted interval scheduling), with context:
        an ambiguous song/artist is supported by a neighbouring non-ambiguous entity or
        version word, or by being the whole query."""
        cands = self.candidates(text)
        if not cands:
            return []
        best = _best_reading(cands)
        if any(m.ambiguous for m in best):
            solid = [m for m in best if not m.ambiguous]
            boosted = []
            for m in best:
                if m.ambiguous and (solid or (m.start == 0 and m.end == len(text.strip()))):
                    m = Match(m.start, m.end, m.text, m.type, 0.7, True, m.weight)
                boosted.append(m)
            best = boosted
        return best


def _best_reading(cands: list[Match]) -> list[Match]:
    cands = sorted(cands, key=lambda m: (m.end, m.start))
    n = len(cands)
    # p[i]: last candidate ending at or before cands[i].start
    import bisect

    ends = [m.end for m in cands]
    dp = [0.0] * (n + 1)
    take = [False] * (n + 1)
    prev = [0] * (n + 1)
    for i in range(1, n + 1):
        m = cands[i - 1]
        p = bisect.bisect_right(ends, m.start, 0, i - 1)
        with_m = dp[p] + m.weight
        if with_m > dp[i - 1]:
            dp[i], take[i], prev[i] = with_m, True, p
        else:
            dp[i], prev[i] = dp[i - 1], i - 1
    out: list[Match] = []
    i = n
    while i > 0:
        if take[i]:
            out.append(cands[i - 1])
            i = prev[i]
        else:
            i -= 1
    return out[::-1]


__all__ = ["EntityLexicon", "Match", "ENTITY_TYPES", "LANGUAGE_WORDS", "STYLE_WORDS", "MOOD_WORDS", "is_common_word"]
