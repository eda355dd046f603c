"""The video catalog contract (SPEC, Data contracts: docs.jsonl).

`read_catalog` validates every line with pydantic; malformed lines are reported with their
line number and counted, never silently dropped; unknown extra fields are kept.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Category = Literal["mv", "live", "cover", "dance", "tutorial", "reaction", "variety", "fan_edit", "lyric", "other"]
Language = Literal["zh", "en", "ja", "ko", "yue", "instrumental", "other"]


class Video(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    video_id: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=1000)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    artists: list[str] = Field(default_factory=list)
    songs: list[str] = Field(default_factory=list)
    uploader: str = ""
    category: Category = "other"
    language: Language = "other"
    duration_s: float = Field(default=0, ge=0)
    resolution: int = Field(default=0, ge=0)
    publish_time: datetime = Field(default_factory=lambda: datetime(1970, 1, 1, tzinfo=timezone.utc))
    play_count: int = Field(default=0, ge=0)
    like_count: int = Field(default=0, ge=0)
    comment_count: int = Field(default=0, ge=0)
    share_count: int = Field(default=0, ge=0)

    @field_validator("publish_time")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)

    @property
    def publish_ts(self) -> int:
        return int(self.publish_time.timestamp())


@dataclass
class CatalogError:
    line: int
    message: str


@dataclass
class CatalogReport:
    ok: int = 0
    errors: list[CatalogError] = field(default_factory=list)
    duplicates: list[CatalogError] = field(default_factory=list)

    @property
    def malformed(self) -> int:
        return len(self.errors)

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.ok} valid videos, {self.malformed} malformed lines, {len(self.duplicates)} duplicate ids (last one kept)"]
        for e in (self.errors + self.duplicates)[:limit]:
            lines.append(f"  line {e.line}: {e.message}")
        if self.malformed + len(self.duplicates) > limit:
            lines.append(f"  ... and {self.malformed + len(self.duplicates) - limit} more")
        return "\n".join(lines)


def _short(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(x) for x in e["loc"]) or "record"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def iter_catalog(path: str | Path, report: CatalogReport) -> Iterator[tuple[int, Video]]:
    """Yield (line number, video) for valid lines; record each bad line (number and reason) in `report`."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                report.errors.append(CatalogError(no, f"invalid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(obj, dict):
                report.errors.append(CatalogError(no, "a record must be a JSON object"))
                continue
            try:
                v = Video.model_validate(obj)
            except ValidationError as e:
                report.errors.append(CatalogError(no, _short(e)))
                continue
            report.ok += 1
            yield no, v


def read_catalog(path: str | Path) -> tuple[list[Video], CatalogReport]:
    report = CatalogReport()
    by_id: dict[str, Video] = {}
    first_line: dict[str, int] = {}
    for no, v in iter_catalog(path, report):
        if v.video_id in by_id:
            report.duplicates.append(CatalogError(no, f"video_id {v.video_id!r} already seen on line {first_line[v.video_id]}; this later record kept"))
        by_id[v.video_id] = v
        first_line.setdefault(v.video_id, no)
    return list(by_id.values()), report


__all__ = ["Video", "Category", "Language", "read_catalog", "iter_catalog", "CatalogReport", "CatalogError"]
