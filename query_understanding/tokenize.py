"""jieba tokenization with the business dictionary.

Used for catalog text at index time and for queries at search time (one tokenizer, so both
sides always agree). Entity names from the knowledge base (artists, aliases, songs, shows,
albums) are dictionary words, so `周杰伦` or `光年之外` never split into pieces.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import jieba

from .normalize import is_protected, register_protected_names

jieba.setLogLevel(logging.WARNING)

# Entity names get a frequency high enough to beat jieba's own splits of the same span.
ENTITY_FREQ = 50_000


@dataclass(frozen=True)
class DictEntry:
    word: str
    freq: int
    tag: str


def read_dictionary(path: str | Path) -> list[DictEntry]:
    """jieba user-dictionary format: `word freq tag` a line; words may contain spaces only
    if the line has exactly the trailing freq and tag (we never write such words)."""
    entries: list[DictEntry] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.rstrip("\n").rsplit(" ", 2)
        if len(parts) == 3 and parts[1].isdigit():
            entries.append(DictEntry(parts[0], int(parts[1]), parts[2]))
        elif line.strip():
            entries.append(DictEntry(line.strip(), ENTITY_FREQ, "x"))
    return entries


def _ascii_word(tok: str) -> bool:
    return tok.isascii() and tok.isalnum()


class Tokenizer:
    """A jieba tokenizer loaded with one business dictionary (thread-safe after load)."""

    def __init__(self, dictionary: str | Path | None = None):
        self.dictionary = Path(dictionary) if dictionary else None
        self._jieba: jieba.Tokenizer | None = None
        self._lock = threading.Lock()
        self.entries: list[DictEntry] = read_dictionary(self.dictionary) if self.dictionary else []
        self._memo: dict[str, tuple[str, ...]] = {}

    def _load(self) -> jieba.Tokenizer:
        with self._lock:
            if self._jieba is None:
                tk = jieba.Tokenizer()
                tk.initialize()
                register_protected_names(e.word for e in self.entries)
                for e in self.entries:
                    if " " not in e.word:
                        tk.add_word(e.word, e.freq, e.tag)
                self._jieba = tk
        return self._jieba

    def tokenize(self, normalized: str) -> list[str]:
        """Tokens of already-normalized text (see normalize.normalize)."""
        if not normalized:
            return []
        # Catalog fields repeat massively (artist names, song titles, tags, uploaders), and
        # queries follow a power law: memoize short strings.
        if len(normalized) <= 64:
            hit = self._memo.get(normalized)
            if hit is None:
                hit = self._memo[normalized] = tuple(self._tokenize(normalized))
                if len(self._memo) > 500_000:
                    self._memo.clear()
            return list(hit)
        return self._tokenize(normalized)

    def _tokenize(self, normalized: str) -> list[str]:
        tk = self._load()
        out: list[str] = []
        for chunk in normalized.split(" "):
            if not chunk:
                continue
            if is_protected(chunk):
                out.append(chunk)
                continue
            pieces = [t for t in tk.cut(chunk, HMM=True) if t.strip()]
            # jieba splits unknown Latin words on its own dictionary ("chou" → "ch", "ou");
            # a run of adjacent ASCII pieces is one word in the text, so glue it back.
            merged: list[str] = []
            for tok in pieces:
                if merged and _ascii_word(tok) and _ascii_word(merged[-1]):
                    merged[-1] += tok
                else:
                    merged.append(tok)
            out.extend(t for t in merged if any(c.isalnum() for c in t))
        return out


_cache: dict[str, Tokenizer] = {}
_cache_lock = threading.Lock()


def get_tokenizer(dictionary: str | Path | None) -> Tokenizer:
    """One loaded tokenizer per dictionary file per process (jieba loading costs ~1 s)."""
    key = str(Path(dictionary).resolve()) if dictionary else ""
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Tokenizer(dictionary)
        return _cache[key]


def clear_memos() -> None:
    with _cache_lock:
        for tk in _cache.values():
            tk._memo.clear()


__all__ = ["Tokenizer", "get_tokenizer", "clear_memos", "read_dictionary", "DictEntry", "ENTITY_FREQ"]
