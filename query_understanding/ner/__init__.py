"""Named-entity recognition for music queries: artist, song, album, show, lyric line,
version (live, MV, cover, 伴奏, dance, 教学, 纯享…), language, style and mood.

Two recognizers and an ensemble:

* `EntityLexicon` (ner/lexicon.py): dictionary matching over the business dictionary, lyric
  lines and the music vocabulary, one non-overlapping reading, everyday-word ambiguity marked;
* `NerTagger` (ner/tagger.py): a character BiLSTM-CRF trained on labels generated from the
  catalog, the knowledge base and real music utterances (ner/training_data.py, ner/train.py),
  which also sees the dictionary's reading as an input feature;
* `EntityRecognizer.recognize` settles conflicts: spans both agree on are kept; a tagger span
  the dictionary does not know is kept above a confidence (new songs, unknown uploaders'
  names); an unambiguous dictionary name the tagger missed is kept (the long tail the tagger
  saw too rarely); an *ambiguous* dictionary reading (`晴天` in `今天是晴天吗`) the tagger
  rejected is dropped. Without a tagger, only the dictionary's supported readings count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .lexicon import ENTITY_TYPES, EntityLexicon, Match
from .tagger import TAG_ID, NerTagger, Span

NAME_TYPES = ("artist", "song", "album", "show", "lyric")


@dataclass
class NerConfig:
    tagger_min_confidence: float = 0.55   # a tagger-only span needs this much
    tagger_override: float = 0.3          # a tagger span beats an overlapping dictionary reading above this
    dictionary_min_confidence: float = 0.5  # dictionary-only mode: drop unsupported ambiguous readings
    dictionary_max_outside: float = 0.5   # a dictionary name the tagger missed stays unless the tagger is this sure it is no entity


@dataclass
class RecognizedEntity:
    start: int      # char offsets in the normalized query, end exclusive
    end: int
    text: str
    type: str
    source: str     # dictionary | tagger | both
    score: float


class EntityRecognizer:
    def __init__(self, lexicon: EntityLexicon, tagger: NerTagger | None = None, config: NerConfig | None = None):
        self.lexicon = lexicon
        self.tagger = tagger
        self._cache: dict[tuple[str, str], tuple[RecognizedEntity, ...]] = {}
        self.config = config or NerConfig()

    @property
    def config(self) -> NerConfig:
        return self._config

    @config.setter
    def config(self, value: NerConfig) -> None:
        self._config = value
        self._cache.clear()  # cached readings were made under the old settings

    CACHE_SIZE = 200_000  # normalized queries; traffic is a power law, so repeats are common

    def recognize(self, text: str, mode: str = "ensemble") -> list[RecognizedEntity]:
        """mode: ensemble | dictionary | tagger (the last two for evaluation)."""
        if not text.strip():
            return []
        key = (text, mode)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = tuple(self._recognize(text, mode))
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.clear()
        return [RecognizedEntity(**e.__dict__) for e in hit]  # copies: callers may keep or change them

    def _recognize(self, text: str, mode: str) -> list[RecognizedEntity]:
        matches = self.lexicon.match(text)
        if mode == "dictionary" or self.tagger is None:
            return [RecognizedEntity(m.start, m.end, m.text, m.type, "dictionary", m.score) for m in matches
                    if m.score >= self.config.dictionary_min_confidence]
        lex_ids = [0] * len(text)
        for m in matches:
            lex_ids[m.start] = TAG_ID[f"B-{m.type}"]
            for k in range(m.start + 1, m.end):
                lex_ids[k] = TAG_ID[f"I-{m.type}"]
        spans, outside = self.tagger.predict_with_outside(text, lex_ids=lex_ids)
        if mode == "tagger":
            return [RecognizedEntity(s.start, s.end, text[s.start:s.end], s.type, "tagger", s.confidence) for s in spans]
        return self._ensemble(text, matches, spans, outside)

    def _ensemble(self, text: str, matches: list[Match], spans: list[Span], outside) -> list[RecognizedEntity]:
        cfg = self.config
        out: list[RecognizedEntity] = []
        used: set[int] = set()
        for s in spans:
            same = [i for i, m in enumerate(matches) if m.start == s.start and m.end == s.end]
            overl = [i for i, m in enumerate(matches) if m.start < s.end and s.start < m.end]
            if same:
                m = matches[same[0]]
                used.update(overl)
                if m.type == s.type:
                    out.append(RecognizedEntity(s.start, s.end, m.text, m.type, "both", max(m.score, s.confidence)))
                else:  # same span, other type: the tagger read the context
                    typ = s.type if s.confidence >= cfg.tagger_override or m.ambiguous else m.type
                    out.append(RecognizedEntity(s.start, s.end, m.text, typ, "both", max(m.score, s.confidence) * 0.9))
            elif overl:
                # The tagger may re-read what the dictionary saw (a longer new title around known
                # words: measured, it is right far more often than the dictionary's pieces), but
                # not cut into or shorten a name the dictionary is sure of.
                crossing = [matches[i] for i in overl if not (s.start <= matches[i].start and matches[i].end <= s.end)]
                cuts = any(not m.ambiguous for m in crossing)
                if s.confidence >= cfg.tagger_override and not cuts:
                    used.update(overl)
                    out.append(RecognizedEntity(s.start, s.end, text[s.start:s.end], s.type, "tagger", s.confidence))
            elif s.confidence >= cfg.tagger_min_confidence:
                out.append(RecognizedEntity(s.start, s.end, text[s.start:s.end], s.type, "tagger", s.confidence))
        for i, m in enumerate(matches):
            if i in used or any(e.start < m.end and m.start < e.end for e in out):
                continue
            # a name the tagger has hardly seen and the dictionary is sure of, unless the
            # tagger is sure it is no entity here ("我想" in 我想听…)
            p_out = float(outside[m.start:m.end].mean()) if m.end <= len(outside) else 0.0
            if not m.ambiguous and p_out < cfg.dictionary_max_outside:
                out.append(RecognizedEntity(m.start, m.end, m.text, m.type, "dictionary", m.score * 0.9))
        return sorted(out, key=lambda e: e.start)


def load_recognizer(dictionary_entries: list[tuple[str, str]], lyric_lines: list[str] | None = None,
                    tagger_path: str | None = None, params: dict[str, Any] | None = None) -> EntityRecognizer:
    lexicon = EntityLexicon.build(dictionary_entries, lyric_lines or [])
    tagger = NerTagger.load(tagger_path) if tagger_path else None
    cfg = NerConfig(**{k: float(v) for k, v in (params or {}).items() if k in NerConfig.__dataclass_fields__})
    return EntityRecognizer(lexicon, tagger, cfg)


__all__ = ["EntityLexicon", "EntityRecognizer", "NerConfig", "NerTagger", "RecognizedEntity", "ENTITY_TYPES",
           "NAME_TYPES", "load_recognizer"]
