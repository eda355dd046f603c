"""Query and catalog text normalization.

The same function runs on catalog text at index time and on queries at search time, so
both sides agree on width, case, script and punctuation. It must be idempotent:
normalize(normalize(x)) == normalize(x) (tested with hypothesis), because normalized text
is stored and sometimes normalized again (rewrites, logs).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Iterable

import opencc

MAX_QUERY_CHARS = 128  # longer input is cut; nobody types a 10k-character music query
_PRE_CUT = 4 * MAX_QUERY_CHARS

_t2s = opencc.OpenCC("t2s")

# Names whose punctuation is part of the name (G.E.M., S.H.E, AC/DC, P!nk). Extended at
# run time from the knowledge base via `register_protected_names`.
_DEFAULT_PROTECTED = ("g.e.m.", "s.h.e", "ac/dc", "p!nk", "t.a.t.u.", "b.o.y.s", "f.i.r.", "m.i.c.", "a-lin", "r&b", "k-pop", "j-pop", "c-pop", "hip-hop", "lo-fi", "x-japan")
_protected: set[str] = set(_DEFAULT_PROTECTED)
_protected_re: re.Pattern[str] | None = None


def _is_kept(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] in ("L", "N") or cat == "Mn" or cat == "Mc"


def register_protected_names(names: Iterable[str]) -> None:
    """Add names that contain symbols, so punctuation stripping leaves them whole."""
    global _protected_re
    changed = False
    for n in names:
        base = _basic(n).strip()
        if base and any(not _is_kept(c) and not c.isspace() for c in base) and " " not in base:
            if base not in _protected:
                _protected.add(base)
                changed = True
    if changed:
        _protected_re = None
        normalize.cache_clear()


def is_protected(token: str) -> bool:
    """A symbol-bearing name kept whole by normalization (tokenizers must not split it)."""
    return token in _protected


def _protected_pattern() -> re.Pattern[str]:
    global _protected_re
    if _protected_re is None:
        alts = sorted(_protected, key=len, reverse=True)
        # A protected name counts only as a whole word: "she" inside "s.h.e.x" must not match.
        _protected_re = re.compile(
            r"(?<![\w.])(" + "|".join(re.escape(a) for a in alts) + r")(?![\w])"
        )
    return _protected_re


def _basic(text: str) -> str:
    # NFKC folds full-width ASCII (ＨＥＢＥ), ideographic spaces and compatibility forms;
    # casefold after it, then NFKC again because casefold can produce non-NFKC sequences.
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFKC", text.casefold())
    return _t2s.convert(text)


def _strip_symbols(segment: str) -> str:
    return "".join(c if _is_kept(c) else " " for c in segment)


def _clean(text: str) -> str:
    text = _basic(text)
    pat = _protected_pattern()
    out: list[str] = []
    pos = 0
    for m in pat.finditer(text):
        out.append(_strip_symbols(text[pos : m.start()]))
        out.append(" " + m.group(1) + " ")
        pos = m.end()
    out.append(_strip_symbols(text[pos:]))
    return " ".join("".join(out).split())


@lru_cache(maxsize=65536)
def normalize(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """Width, case, traditional→simplified, punctuation/emoji/control chars → space,
    whitespace collapsed, symbol-bearing names protected, length capped."""
    if not text:
        return ""
    out = _clean(text[: max(_PRE_CUT, max_chars * 4)])
    if max_chars and len(out) > max_chars:
        out = _clean(out[:max_chars])
    return out


def normalize_doc_text(text: str) -> str:
    """Catalog text: same rules, but long descriptions are not cut to query length."""
    return normalize(text, max_chars=0) if text else ""


__all__ = ["normalize", "normalize_doc_text", "register_protected_names", "is_protected", "MAX_QUERY_CHARS"]
