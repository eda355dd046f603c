"""Query understanding: what the user typed → the structured query every later stage reads.

Public entry point: `QueryUnderstanding(config).run(QueryInput(text=...)) -> UnderstoodQuery`.

Steps, each switchable from config: normalization (width, case, traditional→simplified with
OpenCC, punctuation/emoji/control characters, protected symbol names); tokenization with
jieba + the business dictionary; noisy-channel spelling correction (pinyin, initials,
homophones, near forms, English spacing) that corrects above a confidence threshold and
otherwise adds a rewrite; NER (dictionary + trained BiLSTM-CRF tagger + ensemble, ner/);
term weights (IDF · entity type · clicks); intent (trained classifier).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .correction import Corrector
from .term_weights import TermWeighter
from .normalize import normalize, normalize_doc_text, register_protected_names
from .tokenize import Tokenizer, get_tokenizer


@dataclass
class QueryInput:
    text: str
    user_id: str | None = None


@dataclass
class QueryToken:
    text: str
    weight: float = 1.0
    entity_type: str | None = None  # from the business dictionary (artist, song, show), if any
    required: bool = False          # text recall must match it


@dataclass
class Entity:
    text: str
    type: str
    token_start: int
    token_end: int  # exclusive
    source: str = "dictionary"   # dictionary | tagger | both
    score: float = 1.0
    char_start: int = -1          # span in `normalized`, end exclusive
    char_end: int = -1


@dataclass
class Correction:
    original: str
    corrected: str
    reason: str
    confidence: float
    applied: bool


@dataclass
class UnderstoodQuery:
    raw: str
    normalized: str
    tokens: list[QueryToken] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)
    intents: dict[str, float] = field(default_factory=dict)
    corrections: list[Correction] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    explain: dict[str, Any] = field(default_factory=dict)

    @property
    def terms(self) -> list[str]:
        return [t.text for t in self.tokens]

    @property
    def weights(self) -> list[float]:
        return [t.weight for t in self.tokens]

    @property
    def required(self) -> list[bool]:
        return [t.required for t in self.tokens]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class QueryUnderstanding:
    """Baseline stage: normalize + tokenize (+ dictionary entity types)."""

    name = "baseline"

    def __init__(self, dictionary: str | Path | None = None, config: dict[str, Any] | None = None,
                 corrector: "Corrector | None" = None, weighter: "TermWeighter | None" = None,
                 intent_model: "IntentClassifier | None" = None, recognizer: "EntityRecognizer | None" = None):
        self.config = config or {}
        self.tokenizer: Tokenizer = get_tokenizer(dictionary)
        self.entity_types = {e.word: e.tag for e in self.tokenizer.entries}
        self.corrector = corrector if self.config.get("correction", True) else None
        self.weighter = weighter if self.config.get("term_weights", True) else None
        self.require_min_weight = float(self.config.get("require_min_weight", 0.6))
        self.require_entities = bool(self.config.get("require_entities", False))
        self.intent_model = intent_model
        self.recognizer = recognizer if self.config.get("ner", True) else None

    def run(self, inp: QueryInput) -> UnderstoodQuery:
        t0 = time.perf_counter()
        norm = normalize(inp.text or "")
        toks = self.tokenizer.tokenize(norm)
        steps = ["normalize", "tokenize"]
        corrections: list[Correction] = []
        rewrites: list[str] = []
        if self.corrector is not None and toks:
            res = self.corrector.correct(norm, toks)
            corrections = [Correction(**c) for c in res.corrections]
            rewrites = res.rewrites
            if res.text != norm:
                norm = res.text
                toks = self.tokenizer.tokenize(norm)
            steps.append("correct")
        tokens = [QueryToken(t, 1.0, self.entity_types.get(t)) for t in toks]
        entities: list[Entity] = []
        if self.recognizer is not None:
            entities = self._entities(norm, tokens)
            steps.append("ner")
        else:
            entities = [Entity(t.text, t.entity_type, i, i + 1) for i, t in enumerate(tokens) if t.entity_type]
        if self.weighter is not None:
            for qt in tokens:
                qt.weight = self.weighter.weight(qt.text, qt.entity_type)
            # With two or more terms, the important ones (entity names, rare words) must
            # match in text recall; the rest only add score.
            if len(tokens) >= 2 and self.require_entities:
                # Only recognized entity names are required (at most the two heaviest): rare
                # non-entity words (Latin title words, fillers) weigh a lot by IDF but are
                # often missing from the very videos users want (eval_variants showed it).
                ents = sorted((qt for qt in tokens if qt.entity_type and qt.weight >= self.require_min_weight and len(qt.text) >= 2),
                              key=lambda x: -x.weight)[:2]
                for qt in ents:
                    qt.required = True
            steps.append("term_weights")
        q = UnderstoodQuery(raw=inp.text, normalized=norm, tokens=tokens, entities=entities, corrections=corrections, rewrites=rewrites)
        if self.intent_model is not None and tokens:
            q.intents = self.intent_model.predict(q)
            steps.append("intent")
        elif tokens and self.config.get("intent_rules", True):
            # no trained classifier: the query-only rules, which either fire or abstain
            from .intent import rule_label

            label = rule_label(q, [])
            q.intents = {label: 1.0} if label else {}
            steps.append("intent_rules")
        q.explain = {"stage": self.name, "steps": steps,
                     "term_weights": "idf·type·clicks" if self.weighter is not None else "uniform",
                     "ms": round((time.perf_counter() - t0) * 1000, 3)}
        return q

    def _entities(self, norm: str, tokens: list[QueryToken]) -> list[Entity]:
        """NER spans → entities with token spans; tokens inside a name entity take its type
        (and a dictionary type the recognizer rejected — 晴天 in 今天是晴天吗 — is dropped)."""
        from .ner import NAME_TYPES

        offsets, pos = [], 0
        for t in tokens:
            i = norm.find(t.text, pos)
            i = pos if i < 0 else i
            offsets.append((i, i + len(t.text)))
            pos = i + len(t.text)
        out: list[Entity] = []
        typed = [None] * len(tokens)
        for e in self.recognizer.recognize(norm):
            covered = [k for k, (s, t_end) in enumerate(offsets) if s < e.end and e.start < t_end]
            if not covered:
                continue
            out.append(Entity(e.text, e.type, covered[0], covered[-1] + 1, e.source, round(e.score, 4), e.start, e.end))
            if e.type in NAME_TYPES:
                for k in covered:
                    if offsets[k][0] >= e.start and offsets[k][1] <= e.end:
                        typed[k] = e.type
        for k, t in enumerate(tokens):
            t.entity_type = typed[k]
        return out


__all__ = ["Corrector", "QueryUnderstanding", "QueryInput", "UnderstoodQuery", "QueryToken", "Entity", "Correction",
           "normalize", "normalize_doc_text", "register_protected_names", "Tokenizer", "get_tokenizer"]
