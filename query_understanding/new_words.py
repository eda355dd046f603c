"""New-word discovery (offline): find strings in catalog titles and search logs that behave
like words but are missing from the business dictionary, and write them for review.

A candidate n-gram (2–6 characters of Chinese, or Latin/digit runs mixed in) is scored by:
- frequency: it occurs often enough to matter;
- cohesion: the minimum pointwise mutual information over its binary splits
  (log p(w) / (p(left)·p(right))) — its parts occur together far more than chance;
- boundary entropy: the minimum of its left- and right-neighbour character entropies — it
  appears in many different contexts, so it is a unit, not a fragment of a longer word.
Candidates already in the dictionary (or containing only dictionary words glued together)
are dropped; the rest go to a TSV, best first, for a person to accept into the dictionary.

    mvsearch qu new-words --catalog docs.jsonl [--logs impressions.jsonl] --dictionary dictionary.txt --out new_words.tsv
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .normalize import normalize_doc_text
from .records import iter_jsonl

_SEGMENT = re.compile(r"[\u4e00-\u9fff]+")
_BAD_START = set("的了在和与及是把被从中也都")
_BAD_END = set("的了在和与及是把被从中也都我你他她")
_BAD_INSIDE = set("的了在是中")


def jieba_vocabulary(min_freq: int = 1) -> set[str]:
    """Words jieba's own dictionary already knows (general vocabulary is not 'new')."""
    import jieba

    jieba.dt.initialize()
    return {w for w, f in jieba.dt.FREQ.items() if f >= min_freq}


@dataclass
class NewWord:
    word: str
    freq: int
    cohesion: float
    left_entropy: float
    right_entropy: float
    score: float


def _entropy(counter: Counter[str]) -> float:
    n = sum(counter.values())
    return -sum(c / n * math.log(c / n) for c in counter.values()) if n else 0.0


def discover(texts: Iterable[str], known: set[str], min_freq: int = 8, max_len: int = 6, min_cohesion: float = 3.0,
             min_entropy: float = 1.0, top: int = 500) -> list[NewWord]:
    ngrams: Counter[str] = Counter()
    left: dict[str, Counter[str]] = defaultdict(Counter)
    right: dict[str, Counter[str]] = defaultdict(Counter)
    chars = 0
    for text in texts:
        for seg in _SEGMENT.findall(normalize_doc_text(text)):
            s = f"^{seg}$"
            chars += len(seg)
            for n in range(1, max_len + 1):
                for i in range(1, len(s) - n):
                    w = s[i : i + n]
                    ngrams[w] += 1
                    if n >= 2:
                        left[w][s[i - 1]] += 1
                        right[w][s[i + n]] += 1
    total = max(1, chars)
    out: list[NewWord] = []
    for w, f in ngrams.items():
        if len(w) < 2 or f < min_freq or w in known:
            continue
        p = f / total
        coh = min(math.log(p / ((ngrams[w[:k]] / total) * (ngrams[w[k:]] / total))) for k in range(1, len(w)))
        if coh < min_cohesion:
            continue
        le, re_ = _entropy(left[w]), _entropy(right[w])
        if min(le, re_) < min_entropy:
            continue
        if any(w[:k] in known and w[k:] in known for k in range(1, len(w))):
            continue  # two known words side by side, not a new word
        if w[0] in _BAD_START or w[-1] in _BAD_END or any(c in _BAD_INSIDE for c in w[1:-1]):
            continue  # glued to a function word: 节目中, 的猫, 节目中李
        score = math.log(f) * min(coh, 10.0) * min(le, re_)
        out.append(NewWord(w, f, round(coh, 3), round(le, 3), round(re_, 3), round(score, 3)))
    out.sort(key=lambda x: -x.score)
    # Drop candidates contained in a better-scoring longer candidate with nearly the same count.
    kept: list[NewWord] = []
    for cand in out:
        if any(cand.word in k.word and k.freq >= 0.8 * cand.freq for k in kept):
            continue
        kept.append(cand)
        if len(kept) >= top:
            break
    return kept


def texts_from(catalog: str | Path, logs: str | Path | None = None) -> Iterable[str]:
    """Titles, descriptions and tags of a catalog JSONL (or the lines of a .txt file), then
    the distinct requests' queries of a search log."""
    if str(catalog).endswith(".txt"):
        with open(catalog, encoding="utf-8") as f:
            yield from (line.strip() for line in f)
    else:
        for v in iter_jsonl(catalog):
            yield v.get("title", "")
            yield v.get("description", "")
            yield " ".join(v.get("tags", []))
    if logs:
        seen: set[str] = set()
        for r in iter_jsonl(logs):
            rid = r.get("request_id")
            if rid and rid in seen:
                continue
            seen.add(rid)
            yield r.get("query", "")


def write_candidates(words: list[NewWord], out: str | Path) -> Path:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("word\tfreq\tcohesion\tleft_entropy\tright_entropy\tscore\n")
        for w in words:
            f.write(f"{w.word}\t{w.freq}\t{w.cohesion}\t{w.left_entropy}\t{w.right_entropy}\t{w.score}\n")
    tmp.replace(p)
    return p
