"""The single definition of the video index (fields, analyzers, boosts, recall knobs).

Both engines (tantivy+faiss embedded, Elasticsearch) are built from `load_index_config()`.
The index *version* is derived from the file's content, so editing it produces a new
index version and a rebuild, never a silent mismatch between engines.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("index.json")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    boost: float
    source: str


@dataclass(frozen=True)
class IndexConfig:
    name: str
    schema_version: int
    text_fields: tuple[FieldSpec, ...]
    keyword_fields: tuple[FieldSpec, ...]
    numeric_fields: tuple[str, ...]
    keyword_filters: tuple[str, ...]
    bm25: dict[str, float]
    recall: dict[str, Any]
    vectors: dict[str, Any]
    elasticsearch: dict[str, Any]
    digest: str
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def version(self) -> str:
        """`v{schema}-{hash}`: changes whenever the definition changes."""
        return f"v{self.schema_version}-{self.digest}"

    def hot_weight(self, play_count: float) -> float:
        """Encode the hotness factor so both engines compute it natively.

        Wanted factor f = 1 + w*log10(1+plays). tantivy's weight_by_field multiplies by
        log2(2+x) and ES's field_value_factor(ln2p) by ln(2+x) (a constant multiple of
        log2(2+x), so the order is the same); solving log2(2+x) = f gives x = 2**f - 2.
        """
        w = float(self.recall["hotness"]["weight"])
        f = 1.0 + w * math.log10(1.0 + max(0.0, float(play_count)))
        return 2.0 ** f - 2.0

    def freshness_factor(self, age_days: float) -> float:
        """ES gauss decay, reproduced for the embedded engine."""
        fr = self.recall["freshness"]
        w = float(fr["weight"])
        offset, scale, decay = float(fr["offset_days"]), float(fr["scale_days"]), float(fr["decay"])
        d = max(0.0, abs(age_days) - offset)
        sigma2 = -(scale ** 2) / (2.0 * math.log(decay))
        return (1.0 - w) + w * math.exp(-(d ** 2) / (2.0 * sigma2))


def _specs(section: dict[str, Any]) -> tuple[FieldSpec, ...]:
    return tuple(
        FieldSpec(name, float(v["boost"]), v["source"]) for name, v in section.items() if not name.startswith("_")
    )


def load_index_config(path: str | Path | None = None) -> IndexConfig:
    p = Path(path) if path else DEFAULT_PATH
    text = p.read_text(encoding="utf-8")
    raw = json.loads(text)
    digest = hashlib.sha1(json.dumps(raw, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:10]
    return IndexConfig(
        name=raw["name"],
        schema_version=int(raw["schema_version"]),
        text_fields=_specs(raw["text_fields"]),
        keyword_fields=_specs(raw["keyword_fields"]),
        numeric_fields=tuple(raw["numeric_fields"]),
        keyword_filters=tuple(raw["keyword_filters"]),
        bm25=raw["bm25"],
        recall=raw["recall"],
        vectors=raw["vectors"],
        elasticsearch=raw["elasticsearch"],
        digest=digest,
        raw=raw,
    )


__all__ = ["FieldSpec", "IndexConfig", "load_index_config", "DEFAULT_PATH"]
