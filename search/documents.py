"""Turning catalog videos into index documents (tokenized once, used by both engines) and
the per-video store that later stages read (original record + tokenized fields)."""
from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable

from index_config import IndexConfig
from query_understanding.normalize import normalize_doc_text
from query_understanding.tokenize import Tokenizer

from .catalog import Video


def _field_text(video: Video, source: str) -> list[str]:
    val = getattr(video, source, "")
    if isinstance(val, list):
        return [str(x) for x in val if str(x).strip()]
    return [str(val)] if str(val).strip() else []


def prepare_document(video: Video, tok: Tokenizer, cfg: IndexConfig) -> dict[str, Any]:
    """Index document: space-joined tokens per text field, whole normalized names for
    keyword fields, numbers for ranking functions."""
    doc: dict[str, Any] = {"video_id": video.video_id}
    for f in cfg.text_fields:
        toks: list[str] = []
        for part in _field_text(video, f.source):
            toks.extend(tok.tokenize(normalize_doc_text(part)))
        doc[f.name] = toks
    for f in cfg.keyword_fields:
        doc[f.name] = [n for n in (normalize_doc_text(p) for p in _field_text(video, f.source)) if n]
    doc.update(
        category=video.category, language=video.language, uploader_raw=normalize_doc_text(video.uploader),
        play_count=video.play_count, like_count=video.like_count, comment_count=video.comment_count,
        share_count=video.share_count, duration_s=float(video.duration_s), resolution=video.resolution,
        publish_ts=video.publish_ts, hot_weight=cfg.hot_weight(video.play_count),
    )
    return doc


def embedding_tokens(doc: dict[str, Any]) -> list[str]:
    """What the baseline embedder reads: title, entities and tags (descriptions are noisy)."""
    return doc["title"] + doc["artists"] + doc["songs"] + doc["tags"]


class DocStore:
    """SQLite store of original records and tokenized fields, keyed by video_id. Read-only
    at serving time; written once per index version inside one transaction."""

    CACHE_SIZE = 200_000  # parsed records; popular videos are fetched by almost every query

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, video_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Records by id (read-only: callers must not mutate them, they are shared)."""
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for vid in video_ids:
                d = self._cache.get(vid)
                if d is not None:
                    self._cache.move_to_end(vid)
                    out[vid] = d
        ids = [v for v in dict.fromkeys(video_ids) if v not in out]
        for i in range(0, len(ids), 900):  # SQLite's bound-variable limit
            chunk = ids[i : i + 900]
            q = f"SELECT video_id, record, fields FROM videos WHERE video_id IN ({','.join('?' * len(chunk))})"
            for vid, rec, fields in self._conn.execute(q, chunk):
                d = json.loads(rec)
                d["_fields"] = json.loads(fields)
                out[vid] = d
        if ids:
            with self._lock:
                for vid in ids:
                    if vid in out:
                        self._cache[vid] = out[vid]
                while len(self._cache) > self.CACHE_SIZE:
                    self._cache.popitem(last=False)
        return out

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0])

    def iter_ids(self) -> Iterable[str]:
        for (vid,) in self._conn.execute("SELECT video_id FROM videos ORDER BY rowid"):
            yield vid

    def close(self) -> None:
        self._conn.close()
