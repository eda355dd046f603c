"""Spelling correction for music queries: a noisy-channel model over the entity lexicon.

Candidates for a query token (or run of tokens) that is not a known word come from:
- full pinyin of entity names (zhoujielun → 周杰伦), also inside mixed text (zhoujielun晴天);
- pinyin initials (zjl → 周杰伦; ambiguous, so costly);
- homophones: a Chinese span with the same toneless pinyin as a name (周杰轮 → 周杰伦);
- near forms: one substituted character in a name of 3+ characters (SymSpell-style deletion
  index), costlier than a homophone;
- English names written without spaces or case (jaychou → jay chou).

Score of a candidate c for typed q:  log P(q|c) + log P(c), with P(q|c) = exp(-edit cost of
the channel) and P(c) from the entity's popularity prior, its query-log frequency and a
character-bigram language model of catalog titles. The original text competes as a
candidate too; the softmax of the scores is the confidence. Above `apply_threshold` the
correction replaces the query; above `rewrite_threshold` it is only added as a rewrite.
"""
from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pypinyin import Style, lazy_pinyin

from .normalize import normalize_doc_text
from .vocabulary import DESCRIPTIVE_WORDS, VERSION_WORDS

_HAN = re.compile(r"[\u4e00-\u9fff]")
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")

# What users add to names (versions, formats, moods) is known vocabulary, never a typo.
MUSIC_WORDS = tuple(sorted(VERSION_WORDS | DESCRIPTIVE_WORDS | {"合集", "好听的歌", "日语歌"}))
CHANNEL_COST = {"full_pinyin": 0.6, "english_spacing": 0.4, "homophone": 1.4, "initials": 2.2, "latin_typo": 2.0, "near_form": 3.2}


def pinyin_key(text: str) -> str:
    return "".join(lazy_pinyin(text, errors="ignore")).lower()


def initials_key(text: str) -> str:
    return "".join(p[0] for p in lazy_pinyin(text, style=Style.FIRST_LETTER, errors="ignore") if p).lower()


@dataclass
class Candidate:
    text: str
    channel: str
    cost: float
    prior: float = 0.0
    score: float = 0.0


class CharBigramLM:
    """Add-k smoothed character bigram model: is this string shaped like our catalog text?"""

    def __init__(self, uni: Counter[str] | None = None, bi: Counter[str] | None = None, k: float = 0.1):
        self.uni, self.bi, self.k = uni or Counter(), bi or Counter(), k
        self.total = sum(self.uni.values()) or 1
        self.vocab = len(self.uni) + 1

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "CharBigramLM":
        uni: Counter[str] = Counter()
        bi: Counter[str] = Counter()
        for t in texts:
            s = f"^{t}$"
            uni.update(s)
            bi.update(s[i : i + 2] for i in range(len(s) - 1))
        return cls(uni, bi)

    def logprob_per_char(self, text: str) -> float:
        s = f"^{text}$"
        lp = 0.0
        for i in range(len(s) - 1):
            lp += math.log((self.bi[s[i : i + 2]] + self.k) / (self.uni[s[i]] + self.k * self.vocab))
        return lp / max(1, len(s) - 1)


@dataclass
class CorrectionConfig:
    apply_threshold: float = 0.7
    rewrite_threshold: float = 0.3
    lm_weight: float = 1.0
    prior_weight: float = 0.6
    unseen_penalty: float = 1.0


@dataclass
class CorrectionResult:
    text: str                               # the query to search (corrected if applied)
    corrections: list[dict[str, Any]] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)


class Corrector:
    def __init__(self, lexicon: dict[str, float], english: dict[str, str], lm: CharBigramLM,
                 query_freq: dict[str, int] | None = None, config: CorrectionConfig | None = None):
        self.lexicon = lexicon                      # normalized entity name → popularity prior (log scale)
        self.english = english                      # english name without spaces → with spaces
        self.lm = lm
        self.query_freq = query_freq or {}
        self.config = config or CorrectionConfig()
        self.by_pinyin: dict[str, list[str]] = {}
        self.by_initials: dict[str, list[str]] = {}
        self.deletes: dict[str, list[str]] = {}
        for name in lexicon:
            if not _HAN.search(name):
                continue
            han = "".join(_HAN_RUN.findall(name))
            if len(han) != len(name):
                continue  # mixed names (g.e.m.) are matched exactly, not by sound
            self.by_pinyin.setdefault(pinyin_key(name), []).append(name)
            if len(name) >= 3:
                self.by_initials.setdefault(initials_key(name), []).append(name)
                for i in range(len(name)):
                    self.deletes.setdefault(name[:i] + "\x00" + name[i + 1 :], []).append(name)
        self.max_pinyin_len = max((len(k) for k in self.by_pinyin), default=0)
        # Deletion index (SymSpell) over Latin keys: pinyin of names and English names.
        self.latin_deletes: dict[str, list[str]] = {}
        for key in list(self.by_pinyin) + list(self.english) + [n for n in lexicon if n.isascii() and " " not in n]:
            if len(key) >= 5:
                for d in {key} | {key[:i] + key[i + 1 :] for i in range(len(key))}:
                    self.latin_deletes.setdefault(d, []).append(key)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def build(cls, kb, titles: Iterable[str], query_freq: dict[str, int] | None = None,
              config: CorrectionConfig | None = None) -> "Corrector":
        lex: dict[str, float] = {}
        english: dict[str, str] = {}

        def add(name: str, pop: float) -> None:
            n = normalize_doc_text(name)
            if len(n) >= 2:
                lex[n] = max(lex.get(n, 0.0), pop)

        for a in kb.artists:
            pop = float(a.get("popularity", 0.0))
            add(a["name"], pop)
            for al in a.get("aliases", []):
                add(al, pop * 0.8)
            for en in a.get("english", []):
                n = normalize_doc_text(en)
                if " " in n:
                    english[n.replace(" ", "")] = n
        for s in kb.songs:
            add(s["title"], float(s.get("popularity", 0.0)) * 0.7)
        for sh in kb.shows:
            add(sh["name"], 8.0)
        for w in MUSIC_WORDS:
            add(w, 6.0)
        lm = CharBigramLM.fit(normalize_doc_text(t) for t in titles)
        return cls(lex, english, lm, query_freq, config)

    def save(self, path: str | Path) -> None:
        p = Path(path)
        obj = {"lexicon": self.lexicon, "english": self.english, "lm_uni": dict(self.lm.uni), "lm_bi": dict(self.lm.bi),
               "query_freq": self.query_freq}
        tmp = p.with_suffix(p.suffix + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False)
        tmp.replace(p)

    @classmethod
    def load(cls, path: str | Path, config: CorrectionConfig | None = None) -> "Corrector":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            o = json.load(f)
        return cls(o["lexicon"], o["english"], CharBigramLM(Counter(o["lm_uni"]), Counter(o["lm_bi"])), o.get("query_freq"), config)

    # -- candidates ---------------------------------------------------------------------
    def known(self, token: str) -> bool:
        return token in self.lexicon

    def candidates(self, token: str) -> list[Candidate]:
        out: list[Candidate] = []
        if token.isascii():
            if token in self.english:
                out.append(Candidate(self.english[token], "english_spacing", CHANNEL_COST["english_spacing"]))
            for name in self.by_pinyin.get(token, []):
                out.append(Candidate(name, "full_pinyin", CHANNEL_COST["full_pinyin"]))
            if not out:
                out += self._segment_pinyin(token)
            if len(token) >= 3:
                for name in self.by_initials.get(token, [])[:20]:
                    out.append(Candidate(name, "initials", CHANNEL_COST["initials"]))
            if not out and len(token) >= 5:
                # Keyboard slips in pinyin or English names: one substituted/dropped letter.
                seen: set[str] = set()
                for d in {token} | {token[:i] + token[i + 1 :] for i in range(len(token))}:
                    for key in self.latin_deletes.get(d, []):
                        if key != token and key not in seen:
                            seen.add(key)
                            target = self.english.get(key) or (self.by_pinyin.get(key) or [key])[0]
                            out.append(Candidate(target, "latin_typo", CHANNEL_COST["latin_typo"]))
            return out
        if _HAN.search(token) and len(token) >= 2:
            for name in self.by_pinyin.get(pinyin_key(token), []):
                if name != token:
                    diff = sum(1 for a, b in zip(name, token) if a != b) if len(name) == len(token) else 2
                    out.append(Candidate(name, "homophone", CHANNEL_COST["homophone"] * max(1, diff)))
            if len(token) >= 3:
                seen = {c.text for c in out}
                for i in range(len(token)):
                    for name in self.deletes.get(token[:i] + "\x00" + token[i + 1 :], []):
                        if name != token and name not in seen:
                            seen.add(name)
                            out.append(Candidate(name, "near_form", CHANNEL_COST["near_form"]))
        return out

    def _segment_pinyin(self, token: str) -> list[Candidate]:
        """zhoujielunqingtian → 周杰伦 晴天: split an unknown pinyin run into two names."""
        out = []
        for i in range(4, len(token) - 3):
            a, b = token[:i], token[i:]
            if a in self.by_pinyin and b in self.by_pinyin:
                out.append(Candidate(f"{self.by_pinyin[a][0]} {self.by_pinyin[b][0]}", "full_pinyin", 2 * CHANNEL_COST["full_pinyin"]))
        return out[:3]

    # -- scoring ------------------------------------------------------------------------
    def _prior(self, text: str) -> float:
        c = self.config
        pop = sum(self.lexicon.get(p, 0.0) for p in text.split())
        freq = math.log1p(self.query_freq.get(text, 0))
        lm = self.lm.logprob_per_char(text.replace(" ", "")) if _HAN.search(text) else -6.0
        return c.prior_weight * (pop / 10.0 + freq) + c.lm_weight * lm

    def correct_token(self, token: str) -> tuple[Candidate | None, float, list[Candidate]]:
        if self.known(token) or len(token) < 2:
            return None, 0.0, []
        cands = self.candidates(token)
        if not cands:
            return None, 0.0, []
        original = Candidate(token, "original", 0.0)
        # An out-of-lexicon string nobody searched before is itself unlikely (the noisy
        # channel's P(c) for c = the typed text); short Latin strings may be real abbreviations.
        unseen = self.config.unseen_penalty if not self.query_freq.get(token) else 0.0
        original.prior = self._prior(token) - (0.0 if token.isascii() and len(token) <= 3 else unseen)
        original.score = original.prior
        for c in cands:
            c.prior = self._prior(c.text)
            c.score = c.prior - c.cost
        pool = [original] + sorted(cands, key=lambda c: -c.score)[:8]
        m = max(c.score for c in pool)
        z = sum(math.exp(c.score - m) for c in pool)
        best = max(pool, key=lambda c: c.score)
        conf = math.exp(best.score - m) / z
        return (None if best is original else best), conf, pool

    def _units(self, tokens: list[str]) -> list[str]:
        """A typo often makes jieba split a name (周杰轮 → 周杰 / 轮): runs of unknown Chinese
        tokens are tried joined, and kept joined when the join has a confident correction."""
        units: list[str] = []
        i = 0
        while i < len(tokens):
            j = i
            while j < len(tokens) and _HAN.fullmatch(tokens[j][0]) and tokens[j] not in self.lexicon and all(_HAN.fullmatch(ch) for ch in tokens[j]):
                j += 1
            if j - i >= 2:
                joined = "".join(tokens[i:j])
                best, conf, _ = self.correct_token(joined)
                if best is not None and conf >= self.config.rewrite_threshold:
                    units.append(joined)
                    i = j
                    continue
            units.append(tokens[i])
            i += 1
        return units

    def correct(self, normalized: str, tokens: list[str]) -> CorrectionResult:
        """Correct unit by unit; known words are never 'fixed'."""
        res = CorrectionResult(normalized)
        out_tokens: list[str] = []
        rewrite_tokens: list[str] = []
        changed = False
        for t in self._units(tokens):
            best, conf, _ = self.correct_token(t)
            if best is None:
                out_tokens.append(t)
                rewrite_tokens.append(t)
                continue
            applied = conf >= self.config.apply_threshold
            if applied or conf >= self.config.rewrite_threshold:
                res.corrections.append({"original": t, "corrected": best.text, "reason": best.channel,
                                        "confidence": round(conf, 3), "applied": applied})
            out_tokens.append(best.text if applied else t)
            changed = changed or applied
            rewrite_tokens.append(best.text if conf >= self.config.rewrite_threshold else t)
        if changed:
            # Keep the user's spacing: replace each corrected unit where it stands.
            text = normalized
            for c in res.corrections:
                if c["applied"]:
                    text = text.replace(c["original"], c["corrected"], 1) if c["original"] in text else None
                    if text is None:
                        break
            res.text = text if text is not None else " ".join(out_tokens)
        rw = " ".join(rewrite_tokens)
        if rw != " ".join(out_tokens):
            res.rewrites.append(rw)
        return res
