"""Term weights: how much each query token matters (SPEC: used by recall to decide which
terms must match, and by relevance for weighted coverage).

weight(t) = clip( idf_norm(t) · type_factor(t) · click_factor(t) , floor, 1 )
- idf_norm: inverse document frequency over the catalog's tokens, scaled to [0, 1] by the
  largest IDF, so "的" or "视频" weigh little and rare names weigh a lot;
- type_factor: entity names (artist, song, show) are the core of music queries; version
  words (live, 翻唱, 教学…) qualify the core and weigh a bit less;
- click_factor (optional, from search logs): tokens whose presence in clicked results beats
  their presence in skipped ones get more weight (e.g. a version word users insist on).
Built with the index (`term_weights.json` in the bundle); looked up online.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Iterable

from .records import iter_jsonl

from .vocabulary import VERSION_WORDS
TYPE_FACTOR = {"artist": 1.3, "song": 1.2, "show": 1.2, "version": 0.8}
FLOOR = 0.05
ENTITY_FLOOR = 0.65
ENTITY_FLOOR_TYPES = {"artist", "song", "show"}


class TermWeighter:
    def __init__(self, idf: dict[str, float], max_idf: float, default_idf: float, click: dict[str, float] | None = None):
        self.idf, self.max_idf, self.default_idf = idf, max_idf, default_idf
        self.click = click or {}

    @classmethod
    def fit(cls, docs: Iterable[list[str]], min_df: int = 1) -> "TermWeighter":
        df: Counter[str] = Counter()
        n = 0
        for toks in docs:
            n += 1
            df.update(set(toks))
        return cls.from_document_frequencies(df, n, min_df)

    @classmethod
    def from_document_frequencies(cls, df: dict[str, int], n: int, min_df: int = 1) -> "TermWeighter":
        idf = {t: math.log((n + 1) / (c + 0.5)) for t, c in df.items() if c >= min_df}
        max_idf = math.log((n + 1) / 0.5)
        return cls(idf, max_idf, max_idf * 0.8)  # unseen tokens: rare, hence important

    def with_clicks(self, click_factor: dict[str, float]) -> "TermWeighter":
        return TermWeighter(self.idf, self.max_idf, self.default_idf, click_factor)

    def weight(self, token: str, entity_type: str | None) -> float:
        base = self.idf.get(token, self.default_idf) / self.max_idf
        kind = entity_type or ("version" if token in VERSION_WORDS else None)
        w = base * TYPE_FACTOR.get(kind or "", 1.0) * self.click.get(token, 1.0)
        if entity_type in ENTITY_FLOOR_TYPES:
            # Popular names are frequent in the catalog (low IDF) yet are the core of the
            # query: 周杰伦 in 周杰伦 晴天 must not weigh less than a rare filler word.
            w = max(w, ENTITY_FLOOR)
        return round(min(1.0, max(FLOOR, w)), 4)

    def save(self, path: str | Path) -> None:
        p = Path(path)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"idf": self.idf, "max_idf": self.max_idf, "default_idf": self.default_idf,
                                   "click": self.click}, ensure_ascii=False), encoding="utf-8")
        tmp.replace(p)

    @classmethod
    def load(cls, path: str | Path) -> "TermWeighter":
        o = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(o["idf"], o["max_idf"], o["default_idf"], o.get("click"))


def click_factors(impressions_path: str | Path, tokenize, title_tokens, min_impressions: int = 50) -> dict[str, float]:
    """Per query token: CTR of shown results whose title contains it over CTR of shown
    results that do not (impressions of queries containing the token), mapped to
    [0.7, 1.3]. `title_tokens(video_id)` gives a video's title tokens."""
    stats: dict[str, list[int]] = {}
    for r in iter_jsonl(impressions_path):
        if "clicked" not in r or "video_id" not in r:
            continue
        in_title = title_tokens(r["video_id"])
        for t in set(tokenize(r.get("query", ""))):
            s = stats.setdefault(t, [0, 0, 0, 0])  # imp_with, clk_with, imp_without, clk_without
            k = 0 if t in in_title else 2
            s[k] += 1
            s[k + 1] += int(bool(r["clicked"]))
    out = {}
    for t, (iw, cw, io, co) in stats.items():
        if iw + io < min_impressions:
            continue
        ratio = ((cw + 1) / (iw + 10)) / ((co + 1) / (io + 10))
        out[t] = round(min(1.3, max(0.7, 0.7 + 0.3 * math.log2(1 + ratio))), 4)
    return out
